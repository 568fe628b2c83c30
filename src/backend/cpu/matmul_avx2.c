#if defined(__x86_64__)
#include "backend/cpu/matmul.h"
void mnv__matmul_avx2(const mnv_matmul_args *a, int ith, int nth) { mnv__matmul_scalar(a, ith, nth); }
#endif
