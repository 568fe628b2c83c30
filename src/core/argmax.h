/* The largest of a row of logits as greedy sampling picks it: NaN counts
 * as -inf and +inf as the largest finite float (so a row of them still has
 * one answer), ties go to the lower index, a row of NaN and -inf gives 0.
 * One definition for the host sampler and the CPU kernel; the CUDA kernel
 * reduces in parallel to the same answer (cuda_ops.cu, k_argmax). */
#ifndef MNV_ARGMAX_H
#define MNV_ARGMAX_H

#include <float.h>
#include <math.h>
#include <stdint.h>

static inline float mnv__clean_logit(float l) { return isnan(l) ? -INFINITY : l == INFINITY ? FLT_MAX : l; }

static inline int32_t mnv__argmax_row(const float *x, int64_t n) {
    int32_t best = 0;
    float bl = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        const float l = mnv__clean_logit(x[i]);
        if (l > bl) {
            best = (int32_t)i;
            bl = l;
        }
    }
    return best;
}

#endif
