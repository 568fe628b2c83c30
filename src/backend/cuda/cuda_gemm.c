/* Large matrix products through cuBLAS (see cuda_kernels.h): the prefill
 * path. Row-major y (m, n) = x (m, k) W^T is, in cuBLAS's column-major
 * terms, y^T (n, m) = W^T' (n, k) x^T (k, m) with W read transposed. */
#include <stdbool.h>

#include <cublas_v2.h>

#include "backend/cuda/cuda_kernels.h"

#define DEQ_SLICE (64u << 20) /* bytes of dequantized f32 weights per slice */

static int64_t slice_rows(const mnv_cu_matmul_args *a) {
    int64_t r = (int64_t)(DEQ_SLICE / 4) / a->k;
    return r < 64 ? 64 : r > a->n ? a->n : r;
}

/* Packed weights, and f16 ones (whose range would not hold every f32
 * activation as two f16 terms), go through f32 slices. */
static bool via_f32_slices(const mnv_cu_matmul_args *a) { return a->w.mode != 0 || a->w.wtype == MNV_CU_F16; }

size_t mnv__cu_gemm_scratch(const mnv_cu_matmul_args *a) {
    if (a->m < MNV_CU_GEMM_MIN_ROWS) return 0;
    if (via_f32_slices(a)) return (size_t)slice_rows(a) * (size_t)a->k * 4;
    if (a->w.wtype == MNV_CU_F32) return 0;
    return 2 * (size_t)a->m * (size_t)a->k * 2;
}

static const char *blas_err(cublasStatus_t st, const char *what) {
    return st == CUBLAS_STATUS_SUCCESS ? NULL : what;
}

const char *mnv__cu_gemm(void *cublas, const mnv_cu_matmul_args *a, void *scratch, cudaStream_t s) {
    cublasHandle_t h = cublas;
    const float one = 1.0f, zero = 0.0f;
    int n = (int)a->n, m = (int)a->m, k = (int)a->k;
    if (cublasSetStream(h, s) != CUBLAS_STATUS_SUCCESS) return "cublasSetStream";
    if (via_f32_slices(a)) { /* dequantize (or widen) slices of rows, SGEMM each */
        int64_t rows = slice_rows(a);
        for (int64_t r0 = 0; r0 < a->n; r0 += rows) {
            int64_t nr = a->n - r0 < rows ? a->n - r0 : rows;
            if (mnv_cu_qget_rows(&a->w, a->k, NULL, r0, scratch, nr, s) != cudaSuccess) return "dequantizing weights";
            const char *e = blas_err(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, m, k, &one, scratch, k, a->x,
                                                 (int)a->ldx, &zero, a->y + r0, (int)a->ldy),
                                     "cublasSgemm (dequantized weights)");
            if (e) return e;
        }
        return NULL;
    }
    if (a->w.wtype == MNV_CU_F32)
        return blas_err(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, a->w.w, (int)a->w.ldw, a->x,
                                    (int)a->ldx, &zero, a->y, (int)a->ldy),
                        "cublasSgemm");
    cudaDataType_t t = CUDA_R_16BF;
    void *hi = scratch, *lo = (uint8_t *)scratch + (size_t)m * (size_t)k * 2;
    if (mnv_cu_split(a->x, a->ldx, a->m, a->k, a->w.wtype, hi, lo, s) != cudaSuccess) return "splitting activations";
    const void *parts[2] = {hi, lo};
    for (int i = 0; i < 2; i++) {
        const char *e = blas_err(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, a->w.w, t, (int)a->w.ldw,
                                              parts[i], t, k, i ? &one : &zero, a->y, CUDA_R_32F, (int)a->ldy,
                                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                 "cublasGemmEx");
        if (e) return e;
    }
    return NULL;
}
