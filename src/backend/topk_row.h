/* The k largest of a row (ids, largest first; ties keep the lower index),
 * by insertion into a sorted list: k and n are small (experts). One
 * definition for the CPU kernel and the CUDA one (built for both sides). */
#ifndef MNV_TOPK_ROW_H
#define MNV_TOPK_ROW_H

#include <stdint.h>

#if defined(__CUDACC__)
#define MNV_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MNV_HOST_DEVICE inline
#endif

static MNV_HOST_DEVICE void mnv__topk_row(const float *x, int64_t n, int32_t k, int32_t *out) {
    int32_t cnt = 0;
    for (int32_t i = 0; i < n; i++) {
        int32_t p = cnt < k ? cnt : k;
        while (p > 0 && x[i] > x[out[p - 1]]) p--;
        if (p >= k) continue;
        int32_t last = cnt < k ? cnt : k - 1;
        for (int32_t j = last; j > p; j--) out[j] = out[j - 1];
        out[p] = i;
        if (cnt < k) cnt++;
    }
}

#endif
