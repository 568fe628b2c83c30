/* The candidates a sampler needs from a row of logits, computed where the
 * logits are so that a sampled decode step brings back 2K + 1 floats a
 * row instead of the vocabulary: the K largest values (cleaned as
 * core/argmax.h does: NaN -> -inf, +inf -> the largest finite float) in
 * descending order, ties to the lower index; their indices (as floats,
 * exact below 2^24); and log sum_i w_i over the whole row, with w_i =
 * exp(x_i - max) as the sampler weighs candidates (every w_i = 1 when the
 * maximum is -inf), which tells the sampler how much probability lies
 * outside the K.
 *
 * Row layout (MNV_TOP_CANDS_ROW floats): [0, K) values, [K, 2K) indices,
 * [2K] log sum w. A row shorter than K pads with value -inf and index -1.
 *
 * One definition for the CPU kernel (below) and the tests; the CUDA kernel
 * (cuda_sample.cu) selects the same K in parallel. */
#ifndef MNV_TOPCANDS_H
#define MNV_TOPCANDS_H

#include <math.h>
#include <stdint.h>

#include "core/argmax.h"

#define MNV_TOP_CANDS 256
#define MNV_TOP_CANDS_ROW (2 * MNV_TOP_CANDS + 1)

/* a is better than b: larger, or equal and earlier */
static inline int mnv__cand_better(float av, int32_t ai, float bv, int32_t bi) {
    return av > bv || (av == bv && ai < bi);
}

/* Min-heap on "better" of (v, i): the root is the worst kept. */
static inline void mnv__cand_sift(float *v, int32_t *id, int32_t n, int32_t at) {
    for (;;) {
        int32_t l = 2 * at + 1, r = l + 1, w = at;
        if (l < n && mnv__cand_better(v[w], id[w], v[l], id[l])) w = l;
        if (r < n && mnv__cand_better(v[w], id[w], v[r], id[r])) w = r;
        if (w == at) return;
        float tv = v[at];
        int32_t ti = id[at];
        v[at] = v[w], id[at] = id[w];
        v[w] = tv, id[w] = ti;
        at = w;
    }
}

/* out: one row of MNV_TOP_CANDS_ROW floats for the n values of x.
 * vals and ids: scratch of MNV_TOP_CANDS each. */
static inline void mnv__top_cands_row(const float *x, int64_t n, float *out, float *vals, int32_t *ids) {
    const int32_t K = MNV_TOP_CANDS;
    int32_t m = 0;
    float mx = -INFINITY;
    /* scanned in increasing index, a value equal to the worst kept is never
     * better than it, so only a strictly larger one enters */
    for (int64_t i = 0; i < n; i++) {
        const float l = mnv__clean_logit(x[i]);
        if (l > mx) mx = l;
        if (m < K) {
            vals[m] = l, ids[m] = (int32_t)i;
            if (++m == K)
                for (int32_t j = K / 2 - 1; j >= 0; j--) mnv__cand_sift(vals, ids, K, j);
        } else if (l > vals[0]) {
            vals[0] = l, ids[0] = (int32_t)i;
            mnv__cand_sift(vals, ids, K, 0);
        }
    }
    if (m < K)
        for (int32_t j = m / 2 - 1; j >= 0; j--) mnv__cand_sift(vals, ids, m, j);
    /* pop the worst to the back: descending order */
    for (int32_t k = m - 1; k >= 0; k--) {
        out[k] = vals[0];
        out[K + k] = (float)ids[0];
        vals[0] = vals[k], ids[0] = ids[k];
        mnv__cand_sift(vals, ids, k, 0);
    }
    for (int32_t k = m; k < K; k++) out[k] = -INFINITY, out[K + k] = -1.0f;
    double s = 0.0;
    if (mx > -INFINITY)
        for (int64_t i = 0; i < n; i++) s += (double)expf(mnv__clean_logit(x[i]) - mx);
    out[2 * K] = (float)log(mx > -INFINITY ? s : (double)n);
}

#endif
