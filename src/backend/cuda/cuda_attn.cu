/* Paged attention on CUDA: one block per (token, query head). Each warp
 * walks a share of the token's key positions with an online softmax (its
 * lanes hold slices of the head dimension), then the warps' partial results
 * are merged with the sink logit, as cpu/ops.c's attend_one computes it. */
#include "backend/cuda/cuda_common.cuh"

#define ATTN_WARPS 4
#define ATTN_MAXC 8 /* head_dim <= 32 * ATTN_MAXC */

/* Element offset of position p of sequence s (KV head 0) in cache c. */
static __device__ __forceinline__ int64_t row_offset(const mnv_cu_attn_args &a, const mnv_cu_cache &c, int64_t s,
                                                     int64_t p) {
    int64_t B = c.block_tokens;
    int64_t blk = a.tables ? a.tables[s * a.table_stride + p / B] : s;
    return blk * c.block_stride + (p % B) * c.n_head_kv * c.head_dim;
}

static __global__ void __launch_bounds__(ATTN_WARPS * 32) k_attention(mnv_cu_attn_args a) {
    __shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS], sacc[ATTN_WARPS][32 * ATTN_MAXC];
    const int64_t H = a.n_head, D = a.kc.head_dim, group = H / a.kc.n_head_kv;
    const int64_t t = blockIdx.x / H, h = blockIdx.x % H, kvh = h / group;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int nc = (int)((D + 31) / 32);
    const float *q = a.q + (t * H + h) * D;
    float qv[ATTN_MAXC], acc[ATTN_MAXC];
#pragma unroll
    for (int c = 0; c < ATTN_MAXC; c++) {
        int64_t d = lane + 32 * c;
        qv[c] = c < nc && d < D ? q[d] : 0.0f;
        acc[c] = 0.0f;
    }
    const int64_t s = a.seq[t], p = a.pos[t];
    const int64_t lo = a.window > 0 ? (p - a.window + 1 > 0 ? p - a.window + 1 : 0) : 0;
    float m = -INFINITY, l = 0.0f;
    for (int64_t j = lo + wid; j <= p; j += ATTN_WARPS) {
        int64_t koff = row_offset(a, a.kc, s, j) + kvh * D, voff = row_offset(a, a.vc, s, j) + kvh * D;
        float dot = 0.0f;
#pragma unroll
        for (int c = 0; c < ATTN_MAXC; c++) {
            int64_t d = lane + 32 * c;
            if (c < nc && d < D) dot += qv[c] * cu_load(a.k, a.kc.dtype, koff + d);
        }
        float sc = warp_sum(dot) * a.scale;
        float mn = fmaxf(m, sc);
        float corr = expf(m - mn), w = expf(sc - mn); /* m = -inf at first: corr 0 */
        l = l * corr + w;
#pragma unroll
        for (int c = 0; c < ATTN_MAXC; c++) {
            int64_t d = lane + 32 * c;
            float v = c < nc && d < D ? cu_load(a.v, a.vc.dtype, voff + d) : 0.0f;
            acc[c] = acc[c] * corr + w * v;
        }
        m = mn;
    }
    if (lane == 0) {
        sm[wid] = m;
        sl[wid] = l;
    }
#pragma unroll
    for (int c = 0; c < ATTN_MAXC; c++) sacc[wid][lane + 32 * c] = acc[c];
    __syncthreads();
    float sink = a.sinks ? a.sinks[h] : -INFINITY;
    float M = sink;
    for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = a.sinks && sink > -INFINITY ? expf(sink - M) : 0.0f;
    float f[ATTN_WARPS];
    for (int w = 0; w < ATTN_WARPS; w++) {
        f[w] = sl[w] > 0.0f ? expf(sm[w] - M) : 0.0f;
        L += sl[w] * f[w];
    }
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    float *out = a.out + (t * H + h) * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) v += sacc[w][d] * f[w];
        out[d] = v * inv;
    }
}

extern "C" cudaError_t mnv_cu_attention(const mnv_cu_attn_args *a, cudaStream_t s) {
    if (a->kc.head_dim > 32 * ATTN_MAXC || a->vc.head_dim != a->kc.head_dim) return cudaErrorInvalidValue;
    int64_t blocks = a->T * a->n_head;
    if (blocks > 0) k_attention<<<(unsigned)blocks, ATTN_WARPS * 32, 0, s>>>(*a);
    CU_CHECK_LAUNCH();
}
