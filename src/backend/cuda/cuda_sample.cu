/* Sampling candidates of logits rows (core/topcands.h) on the device: a
 * block per row finds the K-th largest value by a radix select on order-
 * preserving keys (four passes of 8 bits), keeps everything above it and
 * the lowest-indexed of the values equal to it, and ranks the K kept by
 * (value descending, index ascending). The first pass also sums the row's
 * exponentials (an online maximum per thread, merged across the block).
 * The histograms add each warp's lanes of one digit with one atomic. */
#include <cfloat>

#include "backend/cuda/cuda_common.cuh"
#include "core/topcands.h"

enum { TC_THREADS = 1024, TC_WARPS = TC_THREADS / 32 };

static __device__ __forceinline__ float tc_clean(float l) {
    return isnan(l) ? -INFINITY : (l == INFINITY ? FLT_MAX : l);
}

/* Larger floats give larger keys; -0 and +0 (equal values) one key. */
static __device__ __forceinline__ uint32_t tc_key(float l) {
    uint32_t u = __float_as_uint(l == 0.0f ? 0.0f : l);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __global__ void __launch_bounds__(TC_THREADS) k_top_cands(const float *x, int64_t n, float *out) {
    cu_grid_entry();
    constexpr int K = MNV_TOP_CANDS;
    const float *row = x + (int64_t)blockIdx.x * n;
    float *o = out + (int64_t)blockIdx.x * MNV_TOP_CANDS_ROW;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    __shared__ uint32_t hist[256];
    __shared__ float red_m[TC_WARPS], red_s[TC_WARPS];
    __shared__ uint32_t sel_digit, sel_want, wtot[TC_WARPS];
    __shared__ float cv[K];
    __shared__ int32_t ci[K];
    __shared__ int32_t n_above;
    const int32_t m = (int32_t)(n < K ? n : K);

    uint32_t prefix = 0, mask = 0, want = (uint32_t)m;
    float tm = -INFINITY, ts = 0.0f; /* this thread's maximum and sum of exp(l - tm) */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += TC_THREADS) hist[i] = 0;
        __syncthreads();
        /* whole warps step together, so that lanes of one digit add their
         * count once (logits share their top bytes: one bin would take
         * nearly every element's atomic otherwise) */
        for (int64_t t0 = 0; t0 < n; t0 += TC_THREADS) {
            const int64_t i = t0 + tid;
            const bool in = i < n;
            const float l = in ? tc_clean(row[i]) : -INFINITY;
            if (shift == 24 && l > -INFINITY) {
                if (l > tm) {
                    ts = ts * expf(tm - l) + 1.0f;
                    tm = l;
                } else {
                    ts += expf(l - tm);
                }
            }
            const uint32_t k = tc_key(l);
            const bool counted = in && (k & mask) == prefix;
            const uint32_t digit = (k >> shift) & 255u;
            const uint32_t peers = __match_any_sync(0xffffffffu, counted ? digit : 256u + (uint32_t)lane);
            if (counted && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], (uint32_t)__popc(peers));
        }
        __syncthreads();
        if (warp == 0) { /* the digit where the count from the top reaches want */
            uint32_t c[8], tot = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) tot += c[j] = hist[255 - (8 * lane + j)];
            uint32_t incl = tot; /* inclusive scan over lanes, from the top digit down */
            for (int d = 1; d < 32; d <<= 1) {
                uint32_t v = __shfl_up_sync(0xffffffffu, incl, d);
                if (lane >= d) incl += v;
            }
            uint32_t before = incl - tot;
            bool mine = before < want && want <= incl;
            if (mine) {
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (before + c[j] >= want) {
                        sel_digit = 255u - (uint32_t)(8 * lane + j);
                        sel_want = want - before;
                        break;
                    }
                    before += c[j];
                }
            }
        }
        __syncthreads();
        prefix |= sel_digit << shift;
        mask |= 255u << shift;
        want = sel_want;
        __syncthreads();
    }
    /* log sum exp(x - max) of the row */
    float bm = warp_max(tm);
    float bs = ts * (tm > -INFINITY ? expf(tm - bm) : 0.0f);
    bs = warp_sum(bs);
    if (lane == 0) red_m[warp] = bm, red_s[warp] = bs;
    if (tid == 0) n_above = 0;
    __syncthreads();
    if (tid == 0) {
        float M = -INFINITY, S = 0.0f;
        for (int w = 0; w < TC_WARPS; w++) M = fmaxf(M, red_m[w]);
        if (M > -INFINITY)
            for (int w = 0; w < TC_WARPS; w++) S += red_m[w] > -INFINITY ? red_s[w] * expf(red_m[w] - M) : 0.0f;
        o[2 * K] = logf(M > -INFINITY ? S : (float)n);
    }
    /* keep: key above the threshold, and the first `want` equal to it */
    const uint32_t thr = prefix;
    const int32_t above = m - (int32_t)want;
    uint32_t eq_base = 0;
    for (int64_t t0 = 0; t0 < n; t0 += TC_THREADS) {
        const int64_t i = t0 + tid;
        float l = -INFINITY;
        uint32_t k = 0;
        bool in = i < n;
        if (in) {
            l = tc_clean(row[i]);
            k = tc_key(l);
        }
        if (in && k > thr) {
            int32_t at = atomicAdd(&n_above, 1);
            cv[at] = l, ci[at] = (int32_t)i;
        }
        const bool eq = in && k == thr;
        const uint32_t bal = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) wtot[warp] = __popc(bal);
        __syncthreads();
        uint32_t off = eq_base, tot = 0;
        for (int w = 0; w < TC_WARPS; w++) {
            const uint32_t c = wtot[w];
            if (w < warp) off += c;
            tot += c;
        }
        off += __popc(bal & ((1u << lane) - 1u));
        if (eq && off < want) cv[above + off] = l, ci[above + off] = (int32_t)i;
        eq_base += tot;
        __syncthreads();
    }
    for (int j = tid; j < m; j += TC_THREADS) {
        const float v = cv[j];
        const int32_t id = ci[j];
        int32_t r = 0;
        for (int q = 0; q < m; q++) r += cv[q] > v || (cv[q] == v && ci[q] < id);
        o[r] = v;
        o[K + r] = (float)id;
    }
    for (int j = m + tid; j < K; j += TC_THREADS) o[j] = -INFINITY, o[K + j] = -1.0f;
}

extern "C" cudaError_t mnv_cu_top_cands(const float *x, int64_t n, float *out, int64_t rows, cudaStream_t s) {
    if (rows > 0x7fffffff || n < 1 || n > (1 << 24)) return cudaErrorInvalidValue;
    if (rows > 0) cu_launch(k_top_cands, (unsigned)rows, TC_THREADS, 0, s, x, n, out);
    CU_CHECK_LAUNCH();
}
