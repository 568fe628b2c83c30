/* 8-bit affine products of 2 to MNV_CU_I8_MAX_M rows of x with x rounded
 * to int8 (mnv_cu_matmul_args.x_i8): the CPU's default numerics
 * (cpu/qmatmul.h: per weight group, dx = max|x| / 127, codes round(x / dx)
 * to nearest even), so that
 *
 *   y = sum_g dx_g * (s_g * sum_j xq_j q_j) + b_g * (dx_g * sum_j xq_j)
 *
 * with each group's integer sum exact. The weights' codes are the bytes
 * as stored: mma.sync m16n8k32 with unsigned A (codes) and signed B (x),
 * one instruction for 16 weight rows by 32 codes by the 8 rows of x, where
 * the chunked kernel spends a permute, a subtraction and an FMA a code.
 *
 * A block stages its rows of x as codes in shared memory (a thread a
 * group; the first weights already on their way), then each warp takes
 * 16 weight rows: thread (g, q) loads the 16-byte quarter q of a group of
 * 64 of rows g and g + 8 (32 bytes of a group of 128, 8 of 32), two groups
 * a step (one of 128) with the next step's loads in flight; the group's k
 * steps take 8 bytes of each quarter, and B holds x's codes in the same
 * order (k is permuted alike on both sides within a group, whose scale is
 * one). Up to 16,384 weight rows the eight warps split each row's groups
 * (summed in a fixed order), above that each warp has 16 rows of its own. */
#include <string.h>

#include "backend/cuda/cuda_mmv.cuh"

#define AI_THREADS 256
#define AI_SEGS 3
#define AI_WIDE 16384 /* weight rows from which a warp takes its own rows */

typedef struct {
    mnv_cu_matmul_args seg[AI_SEGS];
    int64_t first[AI_SEGS + 1]; /* segment i owns blocks (k_mmv1_i8: tiles) [first[i], first[i + 1]) */
    int n;
} ai_segs;

/* Quarter q of a group of G codes, G / 4 bytes at p (global), as G / 16 words. */
template <int G> static __device__ __forceinline__ void ai_quarter(const uint8_t *p, uint32_t *w) {
    if (G == 32) {
        const uint2 v = __ldg((const uint2 *)p);
        w[0] = v.x, w[1] = v.y;
    } else {
#pragma unroll
        for (int u = 0; u < G / 64; u++) {
            const uint4 v = __ldg((const uint4 *)p + u);
            w[4 * u] = v.x, w[4 * u + 1] = v.y, w[4 * u + 2] = v.z, w[4 * u + 3] = v.w;
        }
    }
}

/* The same quarter of x's codes in shared memory (B's column of this
 * thread), each word and'ed with mask (0 for the columns past x's rows). */
template <int G> static __device__ __forceinline__ void ai_xquarter(const int8_t *p, uint32_t mask, uint32_t *b) {
    if (G == 32) {
        const uint2 v = *(const uint2 *)p;
        b[0] = v.x & mask, b[1] = v.y & mask;
    } else {
#pragma unroll
        for (int u = 0; u < G / 64; u++) {
            const uint4 v = *((const uint4 *)p + u);
            b[4 * u] = v.x & mask, b[4 * u + 1] = v.y & mask, b[4 * u + 2] = v.z & mask, b[4 * u + 3] = v.w & mask;
        }
    }
}

/* What thread (g, q) reads of GS groups: G / 4 bytes of each of rows g
 * and g + 8, and their scales and biases. */
template <int G, int GS> struct ai_step {
    uint32_t w[GS][2][G / 16];
    float s[GS][2], b[GS][2];
};

/* Groups grp, grp + 1, ... (GS of them; one past ng reads grp again, its
 * sums unused). */
template <int G, int GS>
static __device__ __forceinline__ void ai_load(const mnv_cu_weight &w, const uint8_t *const *rp,
                                               const uint8_t *const *sp, const uint8_t *const *bp, int64_t grp,
                                               int64_t ng, int q, ai_step<G, GS> *st) {
#pragma unroll
    for (int gi = 0; gi < GS; gi++) {
        const int64_t gg = grp + gi < ng ? grp + gi : grp;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            ai_quarter<G>(rp[h] + gg * G + (G / 4) * q, st->w[gi][h]);
            st->s[gi][h] = cu_load(sp[h], w.scale_type, gg);
            st->b[gi][h] = cu_load(bp[h], w.scale_type, gg);
        }
    }
}

template <int G> static __global__ void __launch_bounds__(AI_THREADS) k_mmv_i8(ai_segs sg) {
    cu_grid_entry();
    constexpr int KS = G / 32, GS = G == 128 ? 1 : 2, NW = AI_THREADS / 32; /* k steps a group, groups a step */
    extern __shared__ __align__(16) uint8_t sh[]; /* codes (m, k), then (dx, dx * sum) (m, k / G) */
    __shared__ float red[NW][16][MNV_CU_I8_MAX_M];
    int si = 0;
    while (si + 1 < sg.n && (int64_t)blockIdx.x >= sg.first[si + 1]) si++;
    const mnv_cu_matmul_args &a = sg.seg[si];
    const int64_t K = a.k, ng = K / G;
    const int m = (int)a.m, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    /* warps splitting a row's groups, and this warp's first row */
    const bool wide = a.n > AI_WIDE;
    const int wk = wide ? 1 : NW, kw = wide ? 0 : warp;
    const int64_t bx = (int64_t)blockIdx.x - sg.first[si];
    const int64_t n0 = wide ? (bx * NW + warp) * 16 : bx * 16;
    const uint8_t *rp[2], *sp[2], *bp[2];
    const size_t ses = a.w.scale_type == MNV_CU_F32 ? 4 : 2;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int64_t n = n0 + g + 8 * h;
        n = n < a.n ? n : a.n - 1;
        rp[h] = (const uint8_t *)((const uint32_t *)a.w.w + n * a.w.ldw);
        sp[h] = (const uint8_t *)a.w.scales + n * a.w.lds * ses;
        bp[h] = (const uint8_t *)a.w.biases + n * a.w.lds * ses;
    }
    /* the first weights on their way while x is rounded */
    const int64_t gstep = (int64_t)GS * wk;
    ai_step<G, GS> cur, nxt;
    if (n0 < a.n && GS * kw < ng) ai_load<G, GS>(a.w, rp, sp, bp, GS * kw, ng, q, &cur);
    int8_t *xq = (int8_t *)sh;
    float2 *dxs = (float2 *)(sh + (((int64_t)m * K + 15) & ~(int64_t)15));
    for (int64_t i = tid; i < m * ng; i += AI_THREADS) {
        const int64_t r = i / ng, grp = i % ng;
        int sum;
        const float dx = cu_round_group<G>(a.x + r * a.ldx + grp * G, xq + r * K + grp * G, &sum);
        dxs[i] = make_float2(dx, __fmul_rn(dx, (float)sum));
    }
    __syncthreads();
    /* column g of B: x row g's codes, zero past the rows */
    const int8_t *xb = xq + (g < m ? g : 0) * K + (G / 4) * q;
    const uint32_t bmask = g < m ? 0xFFFFFFFFu : 0u;
    const int j0 = 2 * q < m ? 2 * q : 0, j1 = 2 * q + 1 < m ? 2 * q + 1 : 0;
    float acc[2][2] = {};
    for (int64_t g0 = GS * kw; n0 < a.n && g0 < ng; g0 += gstep) {
        if (g0 + gstep < ng) ai_load<G, GS>(a.w, rp, sp, bp, g0 + gstep, ng, q, &nxt);
#pragma unroll
        for (int gi = 0; gi < GS; gi++) {
            const int64_t grp = g0 + gi;
            if (grp >= ng) break;
            uint32_t bw[G / 16];
            ai_xquarter<G>(xb + grp * G, bmask, bw);
            int c[4] = {0, 0, 0, 0};
#pragma unroll
            for (int t = 0; t < KS; t++) {
                const uint32_t am[4] = {cur.w[gi][0][2 * t], cur.w[gi][1][2 * t], cur.w[gi][0][2 * t + 1],
                                        cur.w[gi][1][2 * t + 1]};
                mma_u8s8(c, am, bw[2 * t], bw[2 * t + 1]);
            }
            const float2 d0 = dxs[j0 * ng + grp], d1 = dxs[j1 * ng + grp];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                acc[h][0] = fmaf(cur.b[gi][h], d0.y, fmaf((float)c[2 * h], cur.s[gi][h] * d0.x, acc[h][0]));
                acc[h][1] = fmaf(cur.b[gi][h], d1.y, fmaf((float)c[2 * h + 1], cur.s[gi][h] * d1.x, acc[h][1]));
            }
        }
        cur = nxt;
    }
    /* lane (g, q) holds rows g, g + 8 by x rows 2q, 2q + 1 */
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int j = 0; j < 2; j++) red[warp][g + 8 * h][2 * q + j] = acc[h][j];
    __syncthreads();
    /* a thread an output: (row, x row) */
    for (int o = tid; o < (wide ? 16 * NW : 16) * MNV_CU_I8_MAX_M; o += AI_THREADS) {
        const int row = o / MNV_CU_I8_MAX_M, col = o % MNV_CU_I8_MAX_M;
        const int64_t n = n0 - (wide ? (int64_t)warp * 16 : 0) + row;
        if (col >= m || n >= a.n) continue;
        float v;
        if (wide) {
            v = red[row / 16][row % 16][col];
        } else {
            v = red[0][row][col];
            for (int w = 1; w < NW; w++) v += red[w][row][col];
        }
        if (a.bias) v = v + cu_load(a.bias, a.bias_type, n);
        if (a.res) v = a.res[col * a.ldr + n] + v;
        a.y[col * a.ldy + n] = v;
    }
}

/* 16 bytes past the steps: the compiler reads two groups' steps with one
 * 16-byte load where the second group may be one past the last (its value
 * unused; compute-sanitizer saw it read past the end at m 5, k 1216) */
static size_t ai_smem(int64_t m, int64_t k, int64_t G) {
    return (((size_t)m * (size_t)k + 15) & ~(size_t)15) + (size_t)m * (size_t)(k / G) * 8 + 16;
}

/* Products of one x (q, k, v), 8-bit affine weights alike, m rows of x from
 * mlo to mhi, that these kernels take. */
static int ai_fits(const mnv_cu_matmul_args *a, int n, int64_t mlo, int64_t mhi) {
    if (n < 1 || n > AI_SEGS) return 0;
    const mnv_cu_weight &w = a[0].w;
    const int G = w.group_size;
    if (!a[0].x_i8 || a[0].m < mlo || a[0].m > mhi || (G != 32 && G != 64 && G != 128) || a[0].k % G ||
        a[0].k > INT32_MAX || ai_smem(a[0].m, a[0].k, G) > 40 * 1024)
        return 0;
    return mmv_a8_segs(a, n, G);
}

extern "C" int mnv__cu_mmv_i8_fits(const mnv_cu_matmul_args *a, int n) {
    return ai_fits(a, n, MNV_CU_I8_MIN_M, MNV_CU_I8_MAX_M);
}

extern "C" cudaError_t mnv__cu_mmv_i8(const mnv_cu_matmul_args *a, int n, cudaStream_t s) {
    if (!mnv__cu_mmv_i8_fits(a, n)) return cudaErrorInvalidValue;
    ai_segs sg;
    memset(&sg, 0, sizeof sg);
    sg.n = n;
    for (int i = 0; i < n; i++) {
        sg.seg[i] = a[i];
        const int64_t per_block = a[i].n > AI_WIDE ? 16 * (AI_THREADS / 32) : 16;
        sg.first[i + 1] = sg.first[i] + (a[i].n + per_block - 1) / per_block;
    }
    if (sg.first[n] > INT32_MAX) return cudaErrorInvalidValue;
    const int G = a[0].w.group_size;
    const size_t sm = ai_smem(a[0].m, a[0].k, G);
    const dim3 grid((unsigned)sg.first[n]);
    if (G == 32)
        cu_launch(k_mmv_i8<32>, grid, AI_THREADS, sm, s, sg);
    else if (G == 64)
        cu_launch(k_mmv_i8<64>, grid, AI_THREADS, sm, s, sg);
    else
        cu_launch(k_mmv_i8<128>, grid, AI_THREADS, sm, s, sg);
    CU_CHECK_LAUNCH();
}

/* ---- one row of x (decode at batch 1) ----
 * The same products with B's column 0 the only one used, organised for
 * one row: a block of NW warps rounds x once into shared memory (G / 16
 * lanes a group, 16 values each, where the kernel above spends one thread
 * a group), then takes tiles of 16 weight rows in turn (the grid an SM's
 * worth of blocks, 1,024 threads, a block's loads of a tile in flight at
 * once), each warp a share of the tile's groups (warp w: groups w, w + NW,
 * ...) loaded r1_cfg<G>::GR at once, summed across the warps in a fixed
 * order. 16 warps a block (two an SM) take a tile in one round of loads;
 * where the tiles would need two rounds of such blocks but one of 8-warp
 * blocks (four an SM), 8 warps a block (q, k and v of gpt-oss-20b: 320
 * tiles on 132 SMs, 15.1 -> 13.3 us on an H100). Column 0's lanes (q = 0)
 * load the scales, their neighbours (q = 1) the biases. On an H100 this
 * took batch-1 decode of gpt-oss-20b from ~325 to ~337 tok/s; the scales,
 * read as scattered 2-byte values, cost several us of each product
 * (bench/NOTES.md). */
#define R1_SM_THREADS 1024 /* a block's threads times the blocks an SM */

template <int G> struct r1_cfg {
    static constexpr int GR = G == 32 ? 4 : G == 64 ? 3 : 2; /* a warp's groups a round of loads */
};

/* The groups of x lanes l / (G / 16) of this warp round (16 values a lane):
 * codes into xq, (dx, dx * sum) into dxs, as cu_round_group computes them
 * (x is 16-byte aligned: mnv_cu_mmv_fast). */
template <int G>
static __device__ __forceinline__ void r1_round(const float *x, int64_t ng, int64_t grp, int sub, int8_t *xq,
                                                float2 *dxs) {
    int sum;
    const float am = cu_round_lanes<G>(x + grp * G, grp < ng, true, sub, xq + grp * G, &sum);
    if (grp < ng && sub == 0) {
        const float dx = __fdiv_rn(am, 127.0f);
        dxs[grp] = make_float2(dx, __fmul_rn(dx, (float)sum));
    }
}

/* One round: groups grp0, grp0 + 16, ... (GR of them, those past ng not
 * loaded) of rows g and g + 8: quarter q of each, and their scales (q = 0)
 * or biases (q = 1). */
template <int G> struct r1_step {
    uint32_t w[r1_cfg<G>::GR][2][G / 16];
    float sb[r1_cfg<G>::GR][2]; /* q = 0: the scales, q = 1: the biases */
};

template <int G, int NW>
static __device__ __forceinline__ void r1_load(const mnv_cu_weight &w, const uint8_t *const *rp, const int64_t *so,
                                               int64_t grp0, int64_t ng, int q, r1_step<G> *st) {
    constexpr int GR = r1_cfg<G>::GR;
#pragma unroll
    for (int i = 0; i < GR; i++) {
        const int64_t grp = grp0 + (int64_t)NW * i;
        if (grp >= ng) break;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            ai_quarter<G>(rp[h] + grp * G + (G / 4) * q, st->w[i][h]);
            if (q < 2) st->sb[i][h] = cu_load(q == 0 ? w.scales : w.biases, w.scale_type, so[h] + grp);
        }
    }
}

template <int G, int NW>
static __global__ void __launch_bounds__(NW * 32, R1_SM_THREADS / (NW * 32)) k_mmv1_i8(ai_segs sg) {
    constexpr int KS = G / 32, GR = r1_cfg<G>::GR;
    extern __shared__ __align__(16) uint8_t sh[]; /* codes (k), then (dx, dx * sum) (k / G) */
    __shared__ float red[NW][16];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const int64_t K = sg.seg[0].k, ng = K / G, total = sg.first[sg.n];
    int8_t *xq = (int8_t *)sh;
    float2 *dxs = (float2 *)(sh + ((K + 15) & ~(int64_t)15));
    const uint8_t *rp[2];
    int64_t so[2];
    int si = 0;
    auto rows_of = [&](int64_t t) {
        while (si + 1 < sg.n && t >= sg.first[si + 1]) si++;
        const mnv_cu_matmul_args &a = sg.seg[si];
        const int64_t n0 = (t - sg.first[si]) * 16;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int64_t n = n0 + g + 8 * h;
            n = n < a.n ? n : a.n - 1;
            rp[h] = (const uint8_t *)((const uint32_t *)a.w.w + n * a.w.ldw);
            so[h] = n * a.w.lds;
        }
    };
    /* the first tile's weights on their way while x is rounded */
    int64_t t = blockIdx.x;
    r1_step<G> st;
    if (t < total) {
        rows_of(t);
        r1_load<G, NW>(sg.seg[si].w, rp, so, warp, ng, q, &st);
    }
    cu_grid_entry();
    {
        constexpr int L = G / 16, PW = 32 / L; /* lanes a group, groups a warp */
        for (int64_t g0 = (int64_t)warp * PW; g0 < ng; g0 += (int64_t)NW * PW)
            r1_round<G>(sg.seg[0].x, ng, g0 + lane / L, lane % L, xq, dxs);
    }
    __syncthreads();
    const int8_t *xb = xq + (G / 4) * q;
    const uint32_t bmask = g == 0 ? 0xFFFFFFFFu : 0u; /* column 0: x */
    for (bool first = true; t < total; t += gridDim.x, first = false) {
        if (!first) rows_of(t);
        const mnv_cu_matmul_args &a = sg.seg[si];
        float acc[2] = {0.0f, 0.0f};
        for (int64_t grp0 = warp; grp0 < ng; grp0 += (int64_t)NW * GR) {
            if (!first || grp0 != warp) r1_load<G, NW>(a.w, rp, so, grp0, ng, q, &st);
#pragma unroll
            for (int i = 0; i < GR; i++) {
                const int64_t grp = grp0 + (int64_t)NW * i;
                if (grp >= ng) break;
                uint32_t bw[G / 16];
                ai_xquarter<G>(xb + grp * G, bmask, bw);
                int c[4] = {0, 0, 0, 0};
#pragma unroll
                for (int k = 0; k < KS; k++) {
                    const uint32_t am[4] = {st.w[i][0][2 * k], st.w[i][1][2 * k], st.w[i][0][2 * k + 1],
                                            st.w[i][1][2 * k + 1]};
                    mma_u8s8(c, am, bw[2 * k], bw[2 * k + 1]);
                }
                const float b0 = __shfl_down_sync(0xffffffffu, st.sb[i][0], 1),
                            b1 = __shfl_down_sync(0xffffffffu, st.sb[i][1], 1);
                if (q == 0) {
                    const float2 d = dxs[grp];
                    acc[0] = fmaf(b0, d.y, fmaf((float)c[0], st.sb[i][0] * d.x, acc[0]));
                    acc[1] = fmaf(b1, d.y, fmaf((float)c[2], st.sb[i][1] * d.x, acc[1]));
                }
            }
        }
        if (q == 0) red[warp][g] = acc[0], red[warp][g + 8] = acc[1];
        __syncthreads();
        if (tid < 16) {
            const int64_t n = (t - sg.first[si]) * 16 + tid;
            float v = red[0][tid];
            for (int w = 1; w < NW; w++) v += red[w][tid];
            if (n < a.n) {
                if (a.bias) v = v + cu_load(a.bias, a.bias_type, n);
                if (a.res) v = a.res[n] + v;
                a.y[n] = v;
            }
        }
        __syncthreads();
    }
}

template <int NW> static void r1_go(int G, dim3 grid, size_t sm, cudaStream_t s, const ai_segs &sg) {
    if (G == 32)
        cu_launch(k_mmv1_i8<32, NW>, grid, NW * 32, sm, s, sg);
    else if (G == 64)
        cu_launch(k_mmv1_i8<64, NW>, grid, NW * 32, sm, s, sg);
    else
        cu_launch(k_mmv1_i8<128, NW>, grid, NW * 32, sm, s, sg);
}

extern "C" int mnv__cu_mmv1_i8_fits(const mnv_cu_matmul_args *a, int n) { return ai_fits(a, n, 1, 1); }

extern "C" cudaError_t mnv__cu_mmv1_i8(const mnv_cu_matmul_args *a, int n, cudaStream_t s) {
    if (!mnv__cu_mmv1_i8_fits(a, n)) return cudaErrorInvalidValue;
    ai_segs sg;
    memset(&sg, 0, sizeof sg);
    sg.n = n;
    for (int i = 0; i < n; i++) {
        sg.seg[i] = a[i];
        sg.first[i + 1] = sg.first[i] + (a[i].n + 15) / 16;
    }
    int dev = 0, sms = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (e != cudaSuccess) return e;
    /* the 16-warp blocks the device holds at once; 8-warp blocks where they
     * take the tiles in one round instead of two */
    const int64_t tiles = sg.first[n], held16 = R1_SM_THREADS / (16 * 32) * (int64_t)sms;
    const bool narrow = tiles > held16 && tiles <= 2 * held16;
    const int64_t cap = narrow ? 2 * held16 : held16;
    const dim3 grid((unsigned)(tiles < cap ? tiles : cap));
    const int G = a[0].w.group_size;
    const size_t sm = ai_smem(1, a[0].k, G);
    if (narrow)
        r1_go<8>(G, grid, sm, s, sg);
    else
        r1_go<16>(G, grid, sm, s, sg);
    CU_CHECK_LAUNCH();
}
