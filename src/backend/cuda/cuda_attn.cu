/* Paged attention on CUDA, flash style. A query's keys are cut into chunks
 * of ATTN_CHUNK positions at fixed places (multiples of ATTN_CHUNK); a
 * chunk's partial result (its running max m, sum l and weighted values) is
 * computed by one block: each warp takes tiles of 32 keys, a lane a key's
 * score, then the tile's weights are applied to V with the lanes holding
 * slices of the head dimension; the block's warps are merged in order.
 * The chunks are merged in order with an online softmax, then the sink.
 * A block takes the query heads of a KV head together (8 or 4 of them
 * where the group divides so), reading each K and V row once for them.
 *
 * Two ways to run it give the same bits: split (decode), one block per
 * (query, head group, chunk) writing partials that the group's last block
 * (or a second kernel) merges, so that a long context is read by many
 * blocks at once; and sequential (long batches, where the partials would
 * not fit the scratch), one block per (query, head group) walking its
 * chunks. The arithmetic of a chunk and of the merges is
 * one and the same, so a query's result does not depend on which way its
 * step ran or on what it was batched with. */
#include "backend/cuda/cuda_common.cuh"

#define ATTN_WARPS 4
#define ATTN_THREADS (ATTN_WARPS * 32)
#define ATTN_CHUNK 256
#define ATTN_MAXD 256

/* Where position p of sequence s lies: its block and its token row there
 * (K and V share the tables and the block size; positions are int32). A
 * lane finds its key's once; the V loop takes its V row by shuffles. */
static __device__ __forceinline__ void kv_loc(const mnv_cu_attn_args &a, int64_t s, int64_t p, int32_t *blk,
                                              int32_t *row) {
    const int32_t B = (int32_t)a.kc.block_tokens, pi = (int32_t)p;
    *blk = a.tables ? a.tables[s * a.table_stride + pi / B] : (int32_t)s;
    *row = pi % B;
}

/* The row of KV head kvh at token row `row` of block blk in cache c. */
static __device__ __forceinline__ const uint8_t *kv_at(const mnv_cu_cache &c, const void *base, int32_t blk,
                                                       int32_t row, int64_t kvh) {
    return (const uint8_t *)base + (int64_t)blk * c.block_stride + ((int64_t)row * c.n_head_kv + kvh) * c.row_bytes;
}

static __device__ __forceinline__ float half_bits(uint32_t h, int32_t dt) {
    return dt == MNV_CU_BF16 ? __uint_as_float(h << 16) : __half2float(__ushort_as_half((unsigned short)h));
}

/* dot(q_g, a K row) for the GH queries at sq (D floats apart), each summed
 * in order d = 0, 1, ... (a query's sum does not depend on GH); 16 bytes a
 * load where a float row allows. */
template <int GH>
static __device__ __forceinline__ void kdot(const uint8_t *row, const mnv_cu_cache &c, const float *sq, int64_t D,
                                            float *dot) {
    const int32_t dt = c.dtype;
#pragma unroll
    for (int g = 0; g < GH; g++) dot[g] = 0.0f;
    if (c.kv >= MNV_CU_KV_Q8) {
        for (int64_t d = 0; d < D; d++) {
            const float v = cu_kv_at(row, c.kv, dt, c.group, c.scales_at, D, d);
#pragma unroll
            for (int g = 0; g < GH; g++) dot[g] = fmaf(sq[g * D + d], v, dot[g]);
        }
        return;
    }
    if (dt == MNV_CU_F32) {
        const float *p = (const float *)row;
        if (((uintptr_t)p & 15) == 0 && D % 4 == 0) {
            /* 64 values' loads at once (one round trip), then their products in order */
            for (int64_t d0 = 0; d0 < D; d0 += 64) {
                float4 v[16];
#pragma unroll
                for (int i = 0; i < 16; i++)
                    v[i] = d0 + 4 * i < D ? __ldg((const float4 *)(p + d0) + i) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
                for (int i = 0; i < 16; i++) {
                    if (d0 + 4 * i >= D) break;
#pragma unroll
                    for (int g = 0; g < GH; g++) {
                        const float *q = sq + g * D + d0 + 4 * i;
                        dot[g] = fmaf(q[0], v[i].x, dot[g]);
                        dot[g] = fmaf(q[1], v[i].y, dot[g]);
                        dot[g] = fmaf(q[2], v[i].z, dot[g]);
                        dot[g] = fmaf(q[3], v[i].w, dot[g]);
                    }
                }
            }
        } else {
            for (int64_t d = 0; d < D; d++) {
                const float v = p[d];
#pragma unroll
                for (int g = 0; g < GH; g++) dot[g] = fmaf(sq[g * D + d], v, dot[g]);
            }
        }
        return;
    }
    const uint16_t *p = (const uint16_t *)row;
    if (((uintptr_t)p & 15) == 0 && D % 8 == 0) {
        for (int64_t d0 = 0; d0 < D; d0 += 64) { /* as the f32 rows: 64 values' loads at once */
            uint4 v[8];
#pragma unroll
            for (int i = 0; i < 8; i++)
                v[i] = d0 + 8 * i < D ? __ldg((const uint4 *)(p + d0) + i) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                if (d0 + 8 * i >= D) break;
                const int64_t d = d0 + 8 * i;
                const uint32_t w[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const float lo = half_bits(w[c] & 0xffffu, dt), hi = half_bits(w[c] >> 16, dt);
#pragma unroll
                    for (int g = 0; g < GH; g++) {
                        dot[g] = fmaf(sq[g * D + d + 2 * c], lo, dot[g]);
                        dot[g] = fmaf(sq[g * D + d + 2 * c + 1], hi, dot[g]);
                    }
                }
            }
        }
    } else {
        for (int64_t d = 0; d < D; d++) {
            const float v = half_bits(p[d], dt);
#pragma unroll
            for (int g = 0; g < GH; g++) dot[g] = fmaf(sq[g * D + d], v, dot[g]);
        }
    }
}

/* The lane's DPL values (dimensions lane * DPL + i) of the VU V rows vr[u]
 * (NULL: zeros), with the type's branch taken once a batch so that the
 * batch's loads go out together. */
template <int VU, int DPL>
static __device__ __forceinline__ void v_rows(const mnv_cu_cache &c, const uint8_t *const *vr, int64_t D,
                                              float (*v)[DPL]) {
    const int lane = threadIdx.x & 31;
    auto batch = [&](auto at) {
#pragma unroll
        for (int u = 0; u < VU; u++)
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                const int64_t d = lane * DPL + i;
                v[u][i] = vr[u] && d < D ? at(vr[u], d) : 0.0f;
            }
    };
    if (c.kv < MNV_CU_KV_Q8 && c.dtype == MNV_CU_F32)
        batch([](const uint8_t *r, int64_t d) { return __ldg((const float *)r + d); });
    else if (c.kv < MNV_CU_KV_Q8)
        batch([&](const uint8_t *r, int64_t d) { return half_bits(__ldg((const unsigned short *)r + d), c.dtype); });
    else
        batch([&](const uint8_t *r, int64_t d) { return cu_kv_at(r, c.kv, c.dtype, c.group, c.scales_at, D, d); });
}

/* A running softmax state: max, sum of weights, weighted values (the
 * lane's DPL dimensions, lane * DPL + i). */
template <int DPL> struct attn_state {
    float m, l, acc[DPL];
};

/* The empty state: no keys seen. */
template <int DPL> static __device__ __forceinline__ void state_clear(attn_state<DPL> &s) {
    s.m = -INFINITY;
    s.l = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; i++) s.acc[i] = 0.0f;
}

/* s := s merged with (m, l, acc): the same steps wherever states meet.
 * Each product rounded on its own (a sum of two products may be contracted
 * to an FMA over either one, and the kernels that merge must agree). */
template <int DPL>
static __device__ __forceinline__ void merge_into(attn_state<DPL> &s, float m, float l, const float *acc) {
    if (m == -INFINITY) return; /* nothing there */
    float mn = fmaxf(s.m, m);
    float a = s.m == -INFINITY ? 0.0f : expf(s.m - mn), b = expf(m - mn);
    s.l = __fadd_rn(__fmul_rn(s.l, a), __fmul_rn(l, b));
#pragma unroll
    for (int i = 0; i < DPL; i++) s.acc[i] = __fadd_rn(__fmul_rn(s.acc[i], a), __fmul_rn(acc[i], b));
    s.m = mn;
}

/* The first position query t at position p sees (its window's start). */
static __device__ __forceinline__ int64_t first_pos(const mnv_cu_attn_args &a, int64_t p) {
    return a.window > 0 ? (p - a.window + 1 > 0 ? p - a.window + 1 : 0) : 0;
}

/* Positions [lo, hi] of query t in chunk c, or false when none. */
static __device__ __forceinline__ bool chunk_range(const mnv_cu_attn_args &a, int64_t t, int64_t c, int64_t *lo,
                                                   int64_t *hi) {
    const int64_t p = a.pos[t], first = first_pos(a, p);
    *lo = c * ATTN_CHUNK > first ? c * ATTN_CHUNK : first;
    *hi = (c + 1) * ATTN_CHUNK - 1 < p ? (c + 1) * ATTN_CHUNK - 1 : p;
    return *lo <= *hi;
}

/* The chunks [c0, c1] that hold positions of query t, below chunks; chunk 0
 * alone when none does (it then stands for the query, empty). */
static __device__ __forceinline__ void chunks_used(const mnv_cu_attn_args &a, int64_t t, int64_t chunks, int64_t *c0,
                                                   int64_t *c1) {
    const int64_t p = a.pos[t], first = first_pos(a, p);
    *c0 = 0;
    *c1 = 0;
    if (p < 0) return;
    *c0 = first / ATTN_CHUNK;
    *c1 = p / ATTN_CHUNK < chunks - 1 ? p / ATTN_CHUNK : chunks - 1;
    if (*c0 > *c1) *c0 = *c1 = 0;
}

/* A head group: the GH query heads h0 .. h0 + GH - 1 of one KV head, which
 * a block takes together so that each K and V row is read once for them.
 * Each head's arithmetic is the one it has alone (GH 1): a query's result
 * does not depend on GH. Shared memory: the queries (GH x 32 DPL floats)
 * and the warps' states to merge (GH x SHF). */
#define SHF(DPL) (2 * ATTN_WARPS + ATTN_WARPS * 32 * (DPL))

/* The partial states of query t, heads h0 .. h0 + GH - 1 over positions
 * [lo, hi] (one chunk), in warp 0's view: every thread returns, the states
 * are valid in warp 0. sq: the queries (D floats each) in shared memory;
 * sh: scratch of GH x ATTN_WARPS states. */
template <int DPL, int GH>
static __device__ void chunk_partial(const mnv_cu_attn_args &a, int64_t t, int64_t h0, int64_t lo, int64_t hi,
                                     const float *sq, float *sh, attn_state<DPL> *out) {
    const int64_t D = a.kc.head_dim, group = a.n_head / a.kc.n_head_kv, kvh = h0 / group, s = a.seq[t];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    attn_state<DPL> st[GH];
#pragma unroll
    for (int g = 0; g < GH; g++) state_clear<DPL>(st[g]);
    for (int64_t base = lo + 32 * wid; base <= hi; base += 32 * ATTN_WARPS) {
        const int64_t j = base + lane;
        int32_t blk = 0, row = 0;
        if (j <= hi) kv_loc(a, s, j, &blk, &row);
        /* the lane's key's V row (NULL past hi), which the V loop shuffles */
        const uint64_t vme = j <= hi ? (uint64_t)(uintptr_t)kv_at(a.vc, a.v, blk, row, kvh) : 0;
        float sc[GH], p[GH];
#pragma unroll
        for (int g = 0; g < GH; g++) sc[g] = -INFINITY;
        if (j <= hi) {
            kdot<GH>(kv_at(a.kc, a.k, blk, row, kvh), a.kc, sq, D, sc);
#pragma unroll
            for (int g = 0; g < GH; g++) sc[g] = sc[g] * a.scale;
        }
#pragma unroll
        for (int g = 0; g < GH; g++) {
            const float mt = warp_max(sc[g]), mn = fmaxf(st[g].m, mt);
            const float corr = st[g].m == -INFINITY ? 0.0f : expf(st[g].m - mn);
            p[g] = j <= hi ? expf(sc[g] - mn) : 0.0f;
            st[g].l = st[g].l * corr + warp_sum(p[g]);
#pragma unroll
            for (int i = 0; i < DPL; i++) st[g].acc[i] *= corr;
            st[g].m = mn;
        }
        /* V rows in batches of VU: the batch's loads first, then its
         * products in key order (each head's sum in the order of a plain
         * loop; only the loads move ahead) */
        constexpr int VU = DPL * GH <= 2 ? 16 : DPL * GH <= 8 ? 8 : 4;
        const int n = hi - base + 1 < 32 ? (int)(hi - base + 1) : 32;
        for (int j0 = 0; j0 < n; j0 += VU) {
            float v[VU][DPL];
            const uint8_t *vr[VU];
#pragma unroll
            for (int u = 0; u < VU; u++) { /* j0 + u < 32 (VU divides 32): lanes past n hold NULL */
                const uint32_t lo = __shfl_sync(0xffffffffu, (uint32_t)vme, j0 + u),
                               hi32 = __shfl_sync(0xffffffffu, (uint32_t)(vme >> 32), j0 + u);
                vr[u] = (const uint8_t *)(uintptr_t)((uint64_t)hi32 << 32 | lo);
            }
            v_rows<VU, DPL>(a.vc, vr, D, v);
#pragma unroll
            for (int u = 0; u < VU; u++) {
                /* n is the warp's: the shuffles stay whole; an if, not a
                 * break, so that the loop unrolls and v stays in registers */
                if (j0 + u < n) {
#pragma unroll
                    for (int g = 0; g < GH; g++) {
                        const float pj = __shfl_sync(0xffffffffu, p[g], j0 + u);
#pragma unroll
                        for (int i = 0; i < DPL; i++)
                            if (lane * DPL + i < D) st[g].acc[i] = fmaf(pj, v[u][i], st[g].acc[i]);
                    }
                }
            }
        }
    }
    /* the warps' states, merged in order by warp 0 */
#pragma unroll
    for (int g = 0; g < GH; g++) {
        float *sm = sh + g * SHF(DPL), *sl = sm + ATTN_WARPS, *sacc = sm + 2 * ATTN_WARPS;
        if (lane == 0) {
            sm[wid] = st[g].m;
            sl[wid] = st[g].l;
        }
#pragma unroll
        for (int i = 0; i < DPL; i++) sacc[wid * 32 * DPL + lane * DPL + i] = st[g].acc[i];
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < GH; g++) {
        attn_state<DPL> &r = out[g];
        state_clear<DPL>(r);
        const float *sm = sh + g * SHF(DPL), *sl = sm + ATTN_WARPS, *sacc = sm + 2 * ATTN_WARPS;
        if (wid == 0)
            for (int w = 0; w < ATTN_WARPS; w++) merge_into<DPL>(r, sm[w], sl[w], sacc + w * 32 * DPL + lane * DPL);
    }
    __syncthreads(); /* sh is reused by the next chunk */
}

/* The final output from the merged state and the sink (warp 0). */
template <int DPL>
static __device__ void finish(const mnv_cu_attn_args &a, int64_t t, int64_t h, const attn_state<DPL> &s) {
    const int lane = threadIdx.x & 31;
    const int64_t D = a.kc.head_dim;
    float sink = a.sinks ? a.sinks[h] : -INFINITY, M = fmaxf(s.m, sink);
    float f = s.m == -INFINITY ? 0.0f : expf(s.m - M);
    float L = s.l * f + (sink > -INFINITY ? expf(sink - M) : 0.0f);
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    float *out = a.out + (t * a.n_head + h) * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int64_t d = lane * DPL + i;
        if (d < D) out[d] = s.acc[i] * f * inv;
    }
}

/* The GH queries of heads h0.. of query t into sq, D floats apart. */
template <int GH> static __device__ void load_q(const mnv_cu_attn_args &a, int64_t t, int64_t h0, float *sq) {
    const int64_t D = a.kc.head_dim;
    const float *q = a.q + (t * a.n_head + h0) * D; /* the group's heads are adjacent */
    for (int64_t d = threadIdx.x; d < GH * D; d += blockDim.x) sq[d] = q[d];
    __syncthreads();
}

/* Sequential: one block per (query, head group), its chunks in order. */
template <int DPL, int GH> static __global__ void __launch_bounds__(ATTN_THREADS, 1) k_attn_seq(mnv_cu_attn_args a) {
    cu_grid_entry();
    __shared__ float sq[GH * 32 * DPL], sh[GH * SHF(DPL)];
    const int64_t hg = a.n_head / GH, t = blockIdx.x / hg, h0 = blockIdx.x % hg * GH;
    load_q<GH>(a, t, h0, sq);
    attn_state<DPL> s[GH], p[GH];
#pragma unroll
    for (int g = 0; g < GH; g++) state_clear<DPL>(s[g]);
    for (int64_t c = 0; c * ATTN_CHUNK <= a.pos[t]; c++) {
        int64_t lo, hi;
        if (!chunk_range(a, t, c, &lo, &hi)) continue;
        chunk_partial<DPL, GH>(a, t, h0, lo, hi, sq, sh, p);
#pragma unroll
        for (int g = 0; g < GH; g++) merge_into<DPL>(s[g], p[g].m, p[g].l, p[g].acc);
    }
    if (threadIdx.x < 32)
#pragma unroll
        for (int g = 0; g < GH; g++) finish<DPL>(a, t, h0 + g, s[g]);
}

/* The chunks' partials of (query t, head h) merged in order, then the
 * output (one warp). ld: read around L1 (written by other blocks of the
 * same launch). */
template <int DPL, bool LD>
static __device__ void merge_parts(const mnv_cu_attn_args &a, const float *part, int64_t chunks, int64_t t,
                                   int64_t h) {
    const int64_t stride = 2 + 32 * DPL, pair = t * a.n_head + h;
    const int lane = threadIdx.x & 31;
    attn_state<DPL> s;
    state_clear<DPL>(s);
    int64_t c0, c1, lo, hi;
    chunks_used(a, t, chunks, &c0, &c1);
    for (int64_t c = c0; c <= c1; c++) {
        if (!chunk_range(a, t, c, &lo, &hi)) continue; /* nothing written there */
        const float *pp = part + (pair * chunks + c) * stride;
        float m = LD ? __ldcg(pp) : pp[0];
        if (m == -INFINITY) continue;
        float acc[DPL];
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] = LD ? __ldcg(pp + 2 + lane * DPL + i) : pp[2 + lane * DPL + i];
        merge_into<DPL>(s, m, LD ? __ldcg(pp + 1) : pp[1], acc);
    }
    finish<DPL>(a, t, h, s);
}

/* Split: one block per (query, head group, chunk); part holds, per (query,
 * head, chunk), m, l and 32 * DPL values (lane-major, as the lanes hold
 * them). A block whose chunk holds no position of its query returns at
 * once (a short context leaves most of the grid so). With a.count, a query
 * whose positions lie in one chunk is finished by that chunk's block; else the last
 * block of a (query, head group) to finish among its used chunks merges the
 * partials (the same arithmetic as k_attn_merge) and zeroes its count.
 * The bound's minimum of one block lets ptxas take the registers the code
 * needs: without it, it aims at its own target (64 for <2, 1>) and spills
 * (bench/NOTES.md). */
template <int DPL, int GH>
static __global__ void __launch_bounds__(ATTN_THREADS, 1) k_attn_split(mnv_cu_attn_args a, float *part) {
    cu_grid_entry();
    __shared__ float sq[GH * 32 * DPL], sh[GH * SHF(DPL)];
    __shared__ int last;
    const int64_t hg = a.n_head / GH, t = blockIdx.x / hg, h0 = blockIdx.x % hg * GH, c = blockIdx.y;
    const int64_t stride = 2 + 32 * DPL, chunks = gridDim.y;
    int64_t lo, hi, c0, c1;
    chunks_used(a, t, chunks, &c0, &c1);
    if (c < c0 || c > c1) return; /* no positions: neither written, counted nor merged */
    const bool some = chunk_range(a, t, c, &lo, &hi);
    attn_state<DPL> p[GH];
    if (some) {
        load_q<GH>(a, t, h0, sq);
        chunk_partial<DPL, GH>(a, t, h0, lo, hi, sq, sh, p);
    }
    if (a.count && c0 == c1) {
        /* the query's one chunk: its state is the result (merged into the
         * empty state it would change no bit), so nothing is written,
         * counted or read back */
        if (threadIdx.x < 32)
#pragma unroll
            for (int g = 0; g < GH; g++) {
                if (!some) state_clear<DPL>(p[g]);
                finish<DPL>(a, t, h0 + g, p[g]);
            }
        return;
    }
    if (!some) {
        if (threadIdx.x < GH) part[((t * a.n_head + h0 + threadIdx.x) * chunks + c) * stride] = -INFINITY;
    } else {
        if (threadIdx.x < 32) {
            const int lane = threadIdx.x;
#pragma unroll
            for (int g = 0; g < GH; g++) {
                float *pp = part + ((t * a.n_head + h0 + g) * chunks + c) * stride;
                if (lane == 0) {
                    pp[0] = p[g].m;
                    pp[1] = p[g].l;
                }
#pragma unroll
                for (int i = 0; i < DPL; i++) pp[2 + lane * DPL + i] = p[g].acc[i];
            }
        }
    }
    if (!a.count) return;
    /* warp 0 wrote the partials (or threads below GH their empty marks,
     * all in warp 0): its stores, then the count */
    if (threadIdx.x < 32) {
        __syncwarp();
        if (threadIdx.x == 0) {
            __threadfence();
            last = atomicAdd(&a.count[blockIdx.x], 1) == (int)(c1 - c0);
            if (last) a.count[blockIdx.x] = 0;
        }
        __syncwarp();
        if (last) {
            __threadfence();
            for (int g = 0; g < GH; g++) merge_parts<DPL, true>(a, part, chunks, t, h0 + g);
        }
    }
}

template <int DPL> static __global__ void k_attn_merge(mnv_cu_attn_args a, const float *part, int64_t chunks) {
    cu_grid_entry();
    merge_parts<DPL, false>(a, part, chunks, blockIdx.x / a.n_head, blockIdx.x % a.n_head);
}

/* Chunks a query of this step may span: the block tables' width (or the
 * cache's rows) bounds every position. */
static int64_t max_chunks(const mnv_cu_attn_args *a) {
    int64_t cap = a->tables ? a->table_stride * a->kc.block_tokens : a->kc.block_tokens;
    return (cap + ATTN_CHUNK - 1) / ATTN_CHUNK;
}

extern "C" size_t mnv_cu_attention_scratch(const mnv_cu_attn_args *a) {
    int64_t D = a->kc.head_dim, dpl = D <= 64 ? 2 : D <= 128 ? 4 : 8; /* as mnv_cu_attention dispatches */
    size_t bytes = (size_t)(a->T * a->n_head) * (size_t)max_chunks(a) * (size_t)(2 + 32 * dpl) * 4;
    return a->T > 0 && max_chunks(a) > 1 && bytes <= MNV_CU_ATTN_SPLIT_MAX ? bytes : 0;
}

template <int DPL, int GH>
static cudaError_t attn_go(const mnv_cu_attn_args *a, void *scratch, size_t scratch_size, cudaStream_t s) {
    int64_t blocks = a->T * (a->n_head / GH), chunks = max_chunks(a);
    size_t need = mnv_cu_attention_scratch(a);
    if (need > 0 && scratch && scratch_size >= need && chunks <= 65535) {
        mnv_cu_attn_args b = *a;
        if (blocks > MNV_CU_ATTN_COUNT) b.count = NULL;
        cu_launch(k_attn_split<DPL, GH>, dim3((unsigned)blocks, (unsigned)chunks), ATTN_THREADS, 0, s, b,
                  (float *)scratch);
        if (!b.count)
            cu_launch(k_attn_merge<DPL>, (unsigned)(a->T * a->n_head), 32, 0, s, b, (const float *)scratch, chunks);
    } else {
        cu_launch(k_attn_seq<DPL, GH>, (unsigned)blocks, ATTN_THREADS, 0, s, *a);
    }
    CU_CHECK_LAUNCH();
}

/* Heads a block: the KV group's heads together where they divide into 8
 * (4 with 8 values a lane, for registers) or 4 and the step keeps
 * MNV_CU_ATTN_GROUP_BLOCKS (query, head group) blocks at least, else one
 * (a head's result is the same either way). */
template <int DPL>
static cudaError_t attn_heads(const mnv_cu_attn_args *a, void *scratch, size_t scratch_size, cudaStream_t s) {
    const int64_t group = a->n_head / a->kc.n_head_kv, pairs = a->T * a->n_head;
    if constexpr (DPL <= 4)
        if (group % 8 == 0 && pairs / 8 >= MNV_CU_ATTN_GROUP_BLOCKS) return attn_go<DPL, 8>(a, scratch, scratch_size, s);
    if (group % 4 == 0 && pairs / 4 >= MNV_CU_ATTN_GROUP_BLOCKS) return attn_go<DPL, 4>(a, scratch, scratch_size, s);
    return attn_go<DPL, 1>(a, scratch, scratch_size, s);
}

extern "C" cudaError_t mnv_cu_attention(const mnv_cu_attn_args *a, void *scratch, size_t scratch_size, cudaStream_t s) {
    int64_t D = a->kc.head_dim;
    if (D > ATTN_MAXD || a->vc.head_dim != D || a->vc.block_tokens != a->kc.block_tokens || a->kc.block_tokens < 1 ||
        a->kc.block_tokens > INT32_MAX)
        return cudaErrorInvalidValue;
    if (a->T * a->n_head <= 0) return cudaSuccess;
    if (mnv__cu_attention_mma_fits(a)) return mnv__cu_attention_mma(a, s);
    if (D <= 64) return attn_heads<2>(a, scratch, scratch_size, s);
    if (D <= 128) return attn_heads<4>(a, scratch, scratch_size, s);
    return attn_heads<8>(a, scratch, scratch_size, s);
}
