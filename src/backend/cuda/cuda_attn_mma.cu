/* Attention of long batches (prefill) on tensor cores, flash style: a
 * block takes 64 queries of one head and walks tiles of 64 keys, scores
 * and weighted values by mma.sync m16n8k16 with every operand split into
 * two bf16 terms (hi + lo; the three products hh, hl, lh summed in f32,
 * within about 2^-16 of f32 operands), the softmax kept online per query
 * row in registers in base 2 (scores and sink times log2 e, exp2: one
 * ex2.approx a score, within 2 ulp plus the rounding of x log2 e), the sink
 * folded in at the end as the other kernels do.
 *
 * The 64 queries may belong to several sequences (a batch of prefill
 * chunks): their keys are walked sequence by sequence, each query masking
 * out the keys that are not its own (another sequence, past its position,
 * before its window). Keys are read through the block tables from caches
 * of any KV type. A query's result does not depend on the other queries
 * of its tile, but its sums run in another order than the per-query
 * kernels': this path is for batches that are not asked to be
 * row-invariant. */
#include "backend/cuda/cuda_common.cuh"

#define AM_Q 64       /* queries per block */
#define AM_K 64       /* keys per tile */
#define AM_THREADS 128
#define AM_LOG2E 1.44269504088896340736f
static_assert(AM_THREADS == 2 * AM_K, "k_attn_mma: a thread a K or V row pointer of a tile");

static __device__ __forceinline__ void am_mma(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ const uint8_t *am_row(const mnv_cu_attn_args &a, const mnv_cu_cache &c,
                                                        const void *base, int64_t s, int64_t p, int64_t kvh) {
    int64_t B = c.block_tokens;
    int64_t blk = a.tables ? a.tables[s * a.table_stride + p / B] : s;
    return (const uint8_t *)base + blk * c.block_stride + ((p % B) * c.n_head_kv + kvh) * c.row_bytes;
}

/* A tile's K and V rows as they lie ([key][d], split), from caches of
 * any KV type: two values a thread a step. */
template <int D>
static __device__ __forceinline__ void am_load_any(const mnv_cu_attn_args &a, const uint8_t *const *krow, uint16_t *kh,
                                                   uint16_t *kl, uint16_t *vh, uint16_t *vl, int tid) {
    constexpr int QS = D + 8;
#pragma unroll 4
    for (int e = tid; e < AM_K * D / 2; e += AM_THREADS) {
        const int j = e / (D / 2), d = 2 * (e % (D / 2));
        const uint8_t *kr = krow[j], *vr = krow[AM_K + j];
        float k0 = 0.0f, k1 = 0.0f, v0 = 0.0f, v1 = 0.0f;
        if (kr) {
            k0 = cu_kv_at(kr, a.kc.kv, a.kc.dtype, a.kc.group, a.kc.scales_at, D, d);
            k1 = cu_kv_at(kr, a.kc.kv, a.kc.dtype, a.kc.group, a.kc.scales_at, D, d + 1);
            v0 = cu_kv_at(vr, a.vc.kv, a.vc.dtype, a.vc.group, a.vc.scales_at, D, d);
            v1 = cu_kv_at(vr, a.vc.kv, a.vc.dtype, a.vc.group, a.vc.scales_at, D, d + 1);
        }
        cu_split_bf16x2(k0, k1, (uint32_t *)&kh[j * QS + d], (uint32_t *)&kl[j * QS + d]);
        cu_split_bf16x2(v0, v1, (uint32_t *)&vh[j * QS + d], (uint32_t *)&vl[j * QS + d]);
    }
}

/* The same from f32 caches whose rows lie 16 bytes aligned: four values
 * of K and four of V a thread a step, a load each (the same values, so
 * the same bits). */
template <int D>
static __device__ __forceinline__ void am_load_f32(const uint8_t *const *krow, uint16_t *kh, uint16_t *kl,
                                                   uint16_t *vh, uint16_t *vl, int tid) {
    constexpr int QS = D + 8;
#pragma unroll 4
    for (int e = tid; e < AM_K * D / 4; e += AM_THREADS) {
        const int j = e / (D / 4), d = 4 * (e % (D / 4));
        const uint8_t *kr = krow[j], *vr = krow[AM_K + j];
        const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        const float4 k = kr ? __ldg((const float4 *)(kr + 4 * d)) : z, v = kr ? __ldg((const float4 *)(vr + 4 * d)) : z;
        uint2 h, l;
        cu_split_bf16x2(k.x, k.y, &h.x, &l.x);
        cu_split_bf16x2(k.z, k.w, &h.y, &l.y);
        *(uint2 *)&kh[j * QS + d] = h;
        *(uint2 *)&kl[j * QS + d] = l;
        cu_split_bf16x2(v.x, v.y, &h.x, &l.x);
        cu_split_bf16x2(v.z, v.w, &h.y, &l.y);
        *(uint2 *)&vh[j * QS + d] = h;
        *(uint2 *)&vl[j * QS + d] = l;
    }
}

template <int D> static __global__ void __launch_bounds__(AM_THREADS) k_attn_mma(mnv_cu_attn_args a) {
    cu_grid_entry();
    constexpr int QS = D + 8; /* shared row stride (bf16) of Q, K and V: ldmatrix rows hit 32 banks */
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *qh = smem, *ql = qh + AM_Q * QS, *kh = ql + AM_Q * QS, *kl = kh + AM_K * QS;
    uint16_t *vh = kl + AM_K * QS, *vl = vh + AM_K * QS;
    __shared__ const uint8_t *krow[2 * AM_K]; /* a tile's K rows, then its V rows (NULL: masked) */
    __shared__ int32_t rseq[AM_Q];
    __shared__ int64_t rlo[AM_Q], rhi[AM_Q];
    __shared__ int32_t useq[AM_Q];
    __shared__ int64_t ulo[AM_Q], uhi[AM_Q];
    __shared__ int32_t n_u;

    /* the last query tiles (the most keys) are handed out first, every head's together */
    const int64_t t0 = (int64_t)(gridDim.y - 1 - blockIdx.y) * AM_Q, h = blockIdx.x;
    const int64_t group = a.n_head / a.kc.n_head_kv, kvh = h / group;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const float scale2 = a.scale * AM_LOG2E; /* scores in base 2: exp(x) = 2^(x log2 e) */
    /* f32 caches with rows 16 bytes aligned: the tiles are loaded four values a load */
    const bool f32kv = a.kc.kv < MNV_CU_KV_Q8 && a.kc.dtype == MNV_CU_F32 && a.vc.kv < MNV_CU_KV_Q8 &&
                       a.vc.dtype == MNV_CU_F32 &&
                       (((uintptr_t)a.k | (uintptr_t)a.v | (uintptr_t)a.kc.block_stride | (uintptr_t)a.kc.row_bytes |
                         (uintptr_t)a.vc.block_stride | (uintptr_t)a.vc.row_bytes) & 15) == 0;

    /* the queries (split), and each one's sequence and key range */
    for (int e = tid; e < AM_Q * D; e += AM_THREADS) {
        int r = e / D, d = e % D;
        int64_t t = t0 + r;
        float v = t < a.T ? a.q[(t * a.n_head + h) * D + d] : 0.0f;
        cu_split_bf16(v, &qh[r * QS + d], &ql[r * QS + d]);
    }
    if (tid < AM_Q) {
        int64_t t = t0 + tid;
        if (t < a.T) {
            int64_t p = a.pos[t];
            rseq[tid] = a.seq[t];
            rlo[tid] = a.window > 0 ? (p - a.window + 1 > 0 ? p - a.window + 1 : 0) : 0;
            rhi[tid] = p;
        } else {
            rseq[tid] = -1;
            rlo[tid] = 1;
            rhi[tid] = 0; /* no keys */
        }
    }
    __syncthreads();
    if (tid == 0) { /* the distinct sequences and the union of their queries' ranges */
        int32_t n = 0;
        for (int r = 0; r < AM_Q; r++) {
            if (rseq[r] < 0) continue;
            int u = 0;
            while (u < n && useq[u] != rseq[r]) u++;
            if (u == n) {
                useq[n] = rseq[r];
                ulo[n] = rlo[r];
                uhi[n] = rhi[r];
                n++;
            } else {
                ulo[u] = rlo[r] < ulo[u] ? rlo[r] : ulo[u];
                uhi[u] = rhi[r] > uhi[u] ? rhi[r] : uhi[u];
            }
        }
        n_u = n;
    }
    __syncthreads();

    /* this thread's two query rows: g and g + 8 of the warp's 16 */
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    const int32_t s0 = rseq[r0], s1 = rseq[r1];
    const int64_t lo0 = rlo[r0], hi0 = rhi[r0], lo1 = rlo[r1], hi1 = rhi[r1];
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;

    for (int32_t u = 0; u < n_u; u++) {
        const int32_t sq = useq[u];
        const int64_t klo = ulo[u], khi = uhi[u];
        for (int64_t kb = klo / AM_K * AM_K; kb <= khi; kb += AM_K) {
            __syncthreads(); /* the previous tile's reads are done */
            {
                const int j = tid % AM_K;
                const bool isv = tid >= AM_K;
                const int64_t p = kb + j;
                krow[tid] = p >= klo && p <= khi ? am_row(a, isv ? a.vc : a.kc, isv ? a.v : a.k, sq, p, kvh) : nullptr;
            }
            __syncthreads();
            if (f32kv)
                am_load_f32<D>(krow, kh, kl, vh, vl, tid);
            else
                am_load_any<D>(a, krow, kh, kl, vh, vl, tid);
            __syncthreads();

            /* scores: this warp's 16 queries by the tile's 64 keys; ldmatrix
             * rows: lane l gives row l % 8 (+ 8 for l & 8) of its matrix */
            float sc[AM_K / 8][4];
#pragma unroll
            for (int ni = 0; ni < AM_K / 8; ni++) sc[ni][0] = sc[ni][1] = sc[ni][2] = sc[ni][3] = 0.0f;
            const int lr = lane & 7, lm = lane >> 3;
#pragma unroll
            for (int ks = 0; ks < D; ks += 16) {
                /* A: rows 0-7 / 8-15 of the warp's queries by columns ks / ks + 8 */
                uint32_t ah[4], al[4];
                const int qa = (warp * 16 + lr + 8 * (lm & 1)) * QS + ks + 8 * (lm >> 1);
                ldsm4(&qh[qa], ah);
                ldsm4(&ql[qa], al);
#pragma unroll
                for (int ni = 0; ni < AM_K / 8; ni++) {
                    /* B: keys ni * 8.. by columns ks, ks + 8, of hi then lo */
                    uint32_t b[4];
                    const int ka = (ni * 8 + lr) * QS + ks + 8 * (lm & 1);
                    ldsm4(lm < 2 ? &kh[ka] : &kl[ka], b);
                    am_mma(sc[ni], ah, b[0], b[1]);
                    am_mma(sc[ni], ah, b[2], b[3]);
                    am_mma(sc[ni], al, b[0], b[1]);
                }
            }

            /* mask, scale (to base 2), the rows' online softmax; the keys
             * kb + j of the tile a row sees: j in [jlo, jhi] (none where the
             * row is another sequence's) */
            int jlo[2], jhi[2];
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                const int64_t lo = (hr ? lo1 : lo0) - kb, hi = (hr ? hi1 : hi0) - kb;
                jlo[hr] = (int)(lo < 0 ? 0 : lo > AM_K ? AM_K : lo);
                jhi[hr] = (hr ? s1 : s0) != sq ? -1 : (int)(hi < -1 ? -1 : hi > AM_K - 1 ? AM_K - 1 : hi);
            }
            float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int ni = 0; ni < AM_K / 8; ni++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int hr = c >> 1, j = ni * 8 + 2 * q + (c & 1);
                    sc[ni][c] = j >= jlo[hr] && j <= jhi[hr] ? sc[ni][c] * scale2 : -INFINITY;
                    mt[hr] = fmaxf(mt[hr], sc[ni][c]);
                }
            float corr[2], ms[2];
#pragma unroll
            for (int hr = 0; hr < 2; hr++) {
                mt[hr] = fmaxf(mt[hr], __shfl_xor_sync(0xffffffffu, mt[hr], 1));
                mt[hr] = fmaxf(mt[hr], __shfl_xor_sync(0xffffffffu, mt[hr], 2));
                const float mn = fmaxf(m[hr], mt[hr]);
                ms[hr] = mn == -INFINITY ? 0.0f : mn; /* no key yet: every score is -inf, 2^-inf = 0 */
                corr[hr] = exp2f(m[hr] - ms[hr]);     /* 0 while m is -inf */
                m[hr] = mn;
                l[hr] *= corr[hr];
            }
#pragma unroll
            for (int ni = 0; ni < AM_K / 8; ni++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    const int hr = c >> 1;
                    const float p = exp2f(sc[ni][c] - ms[hr]);
                    sc[ni][c] = p;
                    l[hr] += p;
                }
#pragma unroll
            for (int i = 0; i < D / 8; i++) {
                o[i][0] *= corr[0];
                o[i][1] *= corr[0];
                o[i][2] *= corr[1];
                o[i][3] *= corr[1];
            }

            /* o += p V: the score fragments are the A operand as they lie */
#pragma unroll
            for (int kk = 0; kk < AM_K / 16; kk++) {
                uint32_t ph[4], pl[4];
                cu_split_bf16x2(sc[2 * kk][0], sc[2 * kk][1], &ph[0], &pl[0]);
                cu_split_bf16x2(sc[2 * kk][2], sc[2 * kk][3], &ph[1], &pl[1]);
                cu_split_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1], &ph[2], &pl[2]);
                cu_split_bf16x2(sc[2 * kk + 1][2], sc[2 * kk + 1][3], &ph[3], &pl[3]);
#pragma unroll
                for (int nd = 0; nd < D / 8; nd++) {
                    /* B transposed: keys kk * 16.. and + 8 by columns nd * 8.., of hi then lo */
                    uint32_t b[4];
                    const int va = (kk * 16 + lr + 8 * (lm & 1)) * QS + nd * 8;
                    ldsm4t(lm < 2 ? &vh[va] : &vl[va], b);
                    am_mma(o[nd], ph, b[0], b[1]);
                    am_mma(o[nd], ph, b[2], b[3]);
                    am_mma(o[nd], pl, b[0], b[1]);
                }
            }
        }
    }

    /* the row sums over the quad, the sink, the output */
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 1);
        l[hr] += __shfl_xor_sync(0xffffffffu, l[hr], 2);
    }
    const float sink = a.sinks ? a.sinks[h] * AM_LOG2E : -INFINITY; /* in base 2, as m */
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const int64_t t = t0 + (hr ? r1 : r0);
        if (t >= a.T) continue;
        float M = fmaxf(m[hr], sink);
        float f = m[hr] == -INFINITY ? 0.0f : exp2f(m[hr] - M);
        float L = l[hr] * f + (sink > -INFINITY ? exp2f(sink - M) : 0.0f);
        float inv = L > 0.0f ? 1.0f / L : 0.0f;
        float *out = a.out + (t * a.n_head + h) * D;
#pragma unroll
        for (int nd = 0; nd < D / 8; nd++) {
            out[nd * 8 + 2 * q] = o[nd][2 * hr] * f * inv;
            out[nd * 8 + 2 * q + 1] = o[nd][2 * hr + 1] * f * inv;
        }
    }
}

template <int D> static size_t am_smem(void) {
    return (size_t)(2 * AM_Q * (D + 8) + 4 * AM_K * (D + 8)) * 2;
}

template <int D> static cudaError_t am_go(const mnv_cu_attn_args *a, cudaStream_t s) {
    size_t sm = am_smem<D>(); /* over the default 48 KB: asked for on each launch (the current device's) */
    cudaError_t e = cudaFuncSetAttribute(k_attn_mma<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)a->n_head, (unsigned)((a->T + AM_Q - 1) / AM_Q));
    cu_launch(k_attn_mma<D>, grid, AM_THREADS, sm, s, *a);
    CU_CHECK_LAUNCH();
}

/* Whether the current device gives a block the kernel's shared memory
 * (static and dynamic): head size 128 needs ~108 KB, more than some cards
 * allow (99 KB on sm_86/89/120); those keep the per-query kernels. */
static bool smem_fits(int64_t D) {
    cudaFuncAttributes fa;
    cudaError_t e = D == 64 ? cudaFuncGetAttributes(&fa, k_attn_mma<64>) : cudaFuncGetAttributes(&fa, k_attn_mma<128>);
    return e == cudaSuccess && fa.sharedSizeBytes + (D == 64 ? am_smem<64>() : am_smem<128>()) <= cu_smem_optin();
}

/* The query tiles are the grid's y (at most 65,535: 4,194,240 queries);
 * a longer batch keeps the per-query kernels. */
extern "C" int mnv__cu_attention_mma_fits(const mnv_cu_attn_args *a) {
    int64_t D = a->kc.head_dim;
    return a->mma_min_rows > 0 && a->T >= a->mma_min_rows && (D == 64 || D == 128) && a->vc.head_dim == D &&
           (a->T + AM_Q - 1) / AM_Q <= 65535 && smem_fits(D);
}

extern "C" cudaError_t mnv__cu_attention_mma(const mnv_cu_attn_args *a, cudaStream_t s) {
    if (!mnv__cu_attention_mma_fits(a)) return cudaErrorInvalidValue;
    return a->kc.head_dim == 64 ? am_go<64>(a, s) : am_go<128>(a, s);
}
