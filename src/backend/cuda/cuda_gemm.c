/* Large matrix products through cuBLAS (see cuda_kernels.h): the prefill
 * path. Row-major y (m, n) = x (m, k) W^T is, in cuBLAS's column-major
 * terms, y^T (n, m) = W^T' (n, k) x^T (k, m) with W read transposed. */
#include <stdbool.h>

#include <cublas_v2.h>

#include "backend/cuda/cuda_kernels.h"

#define DEQ_SLICE (64u << 20) /* bytes of dequantized weights (two bf16 terms) per slice */

static int64_t slice_rows(const mnv_cu_matmul_args *a) {
    int64_t r = (int64_t)(DEQ_SLICE / 4) / a->k;
    return r < 64 ? 64 : r > a->n ? a->n : r;
}

/* Packed weights, and f16 ones, are dequantized (widened) in slices of
 * rows, each value split into two bf16 terms as x is: W x = Whi xhi +
 * Whi xlo + Wlo xhi on tensor cores, within about 2^-15 of the f32
 * product (the dropped Wlo xlo term is below 2^-16 of it). */
static bool via_split_slices(const mnv_cu_matmul_args *a) { return a->w.mode != 0 || a->w.wtype == MNV_CU_F16; }

static size_t x_split_bytes(const mnv_cu_matmul_args *a) { return 2 * (size_t)a->m * (size_t)a->k * 2; }

size_t mnv__cu_gemm_scratch(const mnv_cu_matmul_args *a) {
    if (a->m < MNV_CU_GEMM_MIN_ROWS) return 0;
    if (via_split_slices(a)) return x_split_bytes(a) + (size_t)slice_rows(a) * (size_t)a->k * 4;
    if (a->w.wtype == MNV_CU_F32) return 0;
    return x_split_bytes(a);
}

static const char *blas_err(cublasStatus_t st, const char *what) {
    return st == CUBLAS_STATUS_SUCCESS ? NULL : what;
}

/* y (rows nr of the output from column r0) (+)= W x for bf16 W (nr, k) and x (m, k). */
static const char *gemm_bf16(cublasHandle_t h, const mnv_cu_matmul_args *a, const void *w, int64_t ldw, int64_t r0,
                             int64_t nr, const void *x, bool accumulate, const char *what) {
    const float one = 1.0f, zero = 0.0f;
    return blas_err(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)a->m, (int)a->k, &one, w, CUDA_R_16BF,
                                 (int)ldw, x, CUDA_R_16BF, (int)a->k, accumulate ? &one : &zero, a->y + r0, CUDA_R_32F,
                                 (int)a->ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    what);
}

const char *mnv__cu_gemm(void *cublas, const mnv_cu_matmul_args *a, void *scratch, cudaStream_t s) {
    cublasHandle_t h = cublas;
    const float one = 1.0f, zero = 0.0f;
    if (cublasSetStream(h, s) != CUBLAS_STATUS_SUCCESS) return "cublasSetStream";
    if (a->w.wtype == MNV_CU_F32 && a->w.mode == 0)
        return blas_err(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)a->n, (int)a->m, (int)a->k, &one, a->w.w,
                                    (int)a->w.ldw, a->x, (int)a->ldx, &zero, a->y, (int)a->ldy),
                        "cublasSgemm");
    uint8_t *xh = scratch, *xl = xh + (size_t)a->m * (size_t)a->k * 2;
    if (mnv_cu_split(a->x, a->ldx, a->m, a->k, MNV_CU_BF16, xh, xl, s) != cudaSuccess) return "splitting activations";
    if (!via_split_slices(a)) { /* bf16 weights: exact in bf16, two terms */
        const char *e = gemm_bf16(h, a, a->w.w, a->w.ldw, 0, a->n, xh, false, "cublasGemmEx");
        return e ? e : gemm_bf16(h, a, a->w.w, a->w.ldw, 0, a->n, xl, true, "cublasGemmEx");
    }
    int64_t rows = slice_rows(a);
    uint8_t *wh = xl + (size_t)a->m * (size_t)a->k * 2, *wl = wh + (size_t)rows * (size_t)a->k * 2;
    for (int64_t r0 = 0; r0 < a->n; r0 += rows) {
        int64_t nr = a->n - r0 < rows ? a->n - r0 : rows;
        if (mnv_cu_qget_rows_split(&a->w, a->k, r0, wh, wl, nr, s) != cudaSuccess) return "dequantizing weights";
        const char *what = "cublasGemmEx (dequantized weights)";
        const char *e = gemm_bf16(h, a, wh, a->k, r0, nr, xh, false, what);
        if (!e) e = gemm_bf16(h, a, wh, a->k, r0, nr, xl, true, what);
        if (!e) e = gemm_bf16(h, a, wl, a->k, r0, nr, xh, true, what);
        if (e) return e;
    }
    return NULL;
}
