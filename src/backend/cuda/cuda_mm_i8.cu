/* 8-bit affine products of MNV_CU_MM_I8_MIN_M or more rows of x with x
 * rounded to int8 (mnv_cu_matmul_args.mm_i8): the numerics of cuda_mmv_i8.cu
 * (the CPU's default: per weight group, dx = max|x| / 127, codes round(x /
 * dx) to nearest even),
 *
 *   y = sum_g dx_g * (s_g * sum_j xq_j q_j) + b_g * (dx_g * sum_j xq_j),
 *
 * for batched decode and prefill, where the weights must be read once per
 * many rows of x and the products run on tensor cores.
 *
 * A first kernel rounds x once into the scratch buffer: codes (mp, kp) and
 * (dx, dx * sum) (kp / G, mp), zero past x's rows and k, so that the tiles
 * below read them without bounds. Then a block of four warps takes 64
 * weight rows (16 a warp) by BM = 8 MT rows of x (MT n8 tiles; blocks of
 * one weight tile and successive x tiles are neighbours in the grid, so
 * the weights come from memory once and from L2 after). k advances 128
 * bytes a stage: the weights' and x's codes and x's steps copied by
 * cp.async into shared memory (rows of 128 bytes, their 16-byte pieces
 * swizzled by the row so that ldmatrix reads eight rows without bank
 * conflicts), the next stage on its way while this one is multiplied:
 * mma.sync m16n8k32 with unsigned A (the codes as stored) and signed B (x's
 * codes), a group's sums exact in int32, then scaled into f32 accumulators
 * group by group in k order. Up to 64 rows of x, where a product has few
 * weight tiles, k is split across blocks and a second kernel adds the
 * partial sums in split order: a (weight row, x row) is then summed in
 * another order than in a batch of more rows (as the 1-row and 2-8-row
 * int8 kernels sum in orders of their own: x rounded to int8 is not a
 * row-invariant mode), but in the same order on every device and whether
 * or not q, k and v share the launch. */
#include <string.h>

#include "backend/cuda/cuda_mmv.cuh"

#define MI_THREADS 128
#define MI_BN 64  /* weight rows a block: 16 a warp */
#define MI_KC 128 /* bytes of k a stage */
#define MI_SEGS 3

#define MI_STAGES 4
#define MI_SPLIT_MIN 4 /* stages of k a block takes at least when k is split */

typedef struct {
    mnv_cu_matmul_args seg[MI_SEGS];
    int64_t first[MI_SEGS + 1]; /* segment i owns grid y [first[i], first[i + 1]): (weight tile, k split) */
    int64_t split[MI_SEGS];     /* k splits of a segment's tiles (1: none) */
    int64_t cps[MI_SEGS];       /* stages of k a split */
    int64_t poff[MI_SEGS];      /* a split segment's partial sums in part: (split, mp, n) from poff */
    int n;
    const int8_t *xq;   /* x's codes (mp, kp) */
    const float2 *dxs;  /* (dx, dx * sum) (kp / G, mp) */
    float *part;
    int64_t mp, kp;
} mi_args;

/* 16-byte piece pc of row r of a stage's 128-byte rows */
static __device__ __forceinline__ int mi_at(int r, int pc) { return r * MI_KC + ((pc ^ (r & 7)) << 4); }

/* x (m, k) rounded into codes (mp, kp) and steps (kp / G, mp), a thread a
 * (row, group); zeros past m and k. */
template <int G>
static __global__ void k_mi_round(const float *x, int64_t ldx, int64_t m, int64_t k, int64_t mp, int64_t kp,
                                  int8_t *xq, float2 *dxs) {
    cu_grid_entry();
    const int64_t ngp = kp / G, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= mp * ngp) return;
    const int64_t r = i % mp, grp = i / mp;
    int8_t *q = xq + r * kp + grp * G;
    if (r < m && grp < k / G) {
        int sum;
        const float dx = cu_round_group<G>(x + r * ldx + grp * G, q, &sum);
        dxs[grp * mp + r] = make_float2(dx, __fmul_rn(dx, (float)sum));
    } else {
#pragma unroll
        for (int j = 0; j < G; j += 16) *(uint4 *)(q + j) = make_uint4(0, 0, 0, 0);
        dxs[grp * mp + r] = make_float2(0.0f, 0.0f);
    }
}

/* Scales and biases of a stage's groups for rows g and g + 8 of a warp's 16 (0 past k). */
template <int NGC> struct mi_sb {
    float s[NGC][2], b[NGC][2];
};

template <int G, int MT> struct mi_cfg {
    static constexpr int BM = 8 * MT, NGC = MI_KC / G;
    static constexpr int WB = MI_BN * MI_KC, XB = BM * MI_KC, DB = NGC * BM * 8, SB = WB + XB + DB;
    static constexpr int STAGES = MI_STAGES;
};

template <int G, int MT> static __global__ void __launch_bounds__(MI_THREADS, 3) k_mm_i8(mi_args A) {
    cu_grid_entry();
    using C = mi_cfg<G, MT>;
    constexpr int BM = C::BM, NGC = C::NGC, S = C::STAGES, KS = G / 32;
    extern __shared__ __align__(16) uint8_t sh[];
    int si = 0;
    while (si + 1 < A.n && (int64_t)blockIdx.y >= A.first[si + 1]) si++;
    const mnv_cu_matmul_args &a = A.seg[si];
    const int64_t local = (int64_t)blockIdx.y - A.first[si], split = A.split[si];
    const int64_t n0 = local / split * MI_BN, m0 = (int64_t)blockIdx.x * BM, sp_i = local % split;
    const int64_t K = a.k, ng = K / G, mp = A.mp, c0 = sp_i * A.cps[si];
    const int64_t c1 = c0 + A.cps[si] < A.kp / MI_KC ? c0 + A.cps[si] : A.kp / MI_KC;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const size_t ses = a.w.scale_type == MNV_CU_F32 ? 4 : 2;

    /* this thread's pieces of a stage: weights (4), x (MT / 2), steps (one, below NGC * BM / 2) */
    const uint8_t *wsrc[4];
    for (int i = 0; i < 4; i++) {
        const int p = tid + MI_THREADS * i, r = p >> 3;
        const int64_t n = n0 + r < a.n ? n0 + r : a.n - 1;
        wsrc[i] = (const uint8_t *)((const uint32_t *)a.w.w + n * a.w.ldw) + (p & 7) * 16;
    }
    const int8_t *xsrc = A.xq + (m0 + (tid >> 3)) * A.kp + (tid & 7) * 16;
    auto load = [&](int64_t c, int st) {
        uint8_t *sw = sh + st * C::SB, *sx = sw + C::WB, *sd = sx + C::XB;
        const int64_t kb = c * MI_KC;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int p = tid + MI_THREADS * i;
            const bool in = kb + (p & 7) * 16 < K;
            cp16(sw + mi_at(p >> 3, p & 7), in ? (const void *)(wsrc[i] + kb) : (const void *)wsrc[i], in);
        }
#pragma unroll
        for (int i = 0; i < MT / 2; i++) {
            const int p = tid + MI_THREADS * i;
            cp16(sx + mi_at(p >> 3, p & 7), xsrc + (int64_t)(MI_THREADS / 8) * i * A.kp + kb, true);
        }
        if (tid < NGC * BM / 2) {
            const int gi = tid / (BM / 2), pc = tid % (BM / 2);
            cp16(sd + 16 * tid, A.dxs + (c * NGC + gi) * mp + m0 + 2 * pc, true);
        }
    };
    const uint8_t *sp[2], *bp[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int64_t n = n0 + 16 * warp + g + 8 * h;
        n = n < a.n ? n : a.n - 1;
        sp[h] = (const uint8_t *)a.w.scales + n * a.w.lds * ses;
        bp[h] = (const uint8_t *)a.w.biases + n * a.w.lds * ses;
    }
    auto load_sb = [&](int64_t c, mi_sb<NGC> *sb) {
#pragma unroll
        for (int gi = 0; gi < NGC; gi++) {
            const int64_t grp = c * NGC + gi;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                sb->s[gi][h] = grp < ng ? cu_load(sp[h], a.w.scale_type, grp) : 0.0f;
                sb->b[gi][h] = grp < ng ? cu_load(bp[h], a.w.scale_type, grp) : 0.0f;
            }
        }
    };

#pragma unroll
    for (int st = 0; st < S - 1; st++) {
        if (c0 + st < c1) load(c0 + st, st);
        cp_commit();
    }
    mi_sb<NGC> cur, nxt;
    load_sb(c0, &cur);
    float acc[MT][4] = {};
    /* ldmatrix rows: A's (this warp's weight rows), B's (x rows of an n8 tile pair) */
    const int ar = 16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1), apc = lane >> 4;
    const int br = 8 * (lane >> 4) + (lane & 7), bpc = (lane >> 3) & 1;
    for (int64_t c = c0; c < c1; c++) {
        cp_wait<S - 2>();
        __syncthreads();
        if (c + S - 1 < c1) load(c + S - 1, (int)((c + S - 1 - c0) % S));
        cp_commit();
        if (c + 1 < c1) load_sb(c + 1, &nxt);
        const uint8_t *sw = sh + ((c - c0) % S) * C::SB, *sx = sw + C::WB;
        const float2 *sd = (const float2 *)(sx + C::XB);
#pragma unroll
        for (int gi = 0; gi < NGC; gi++) {
            int cc[MT][4];
#pragma unroll
            for (int j = 0; j < MT; j++) cc[j][0] = cc[j][1] = cc[j][2] = cc[j][3] = 0;
#pragma unroll
            for (int t = 0; t < KS; t++) {
                const int ks = gi * KS + t;
                uint32_t am[4];
                ldsm4(sw + mi_at(ar, 2 * ks + apc), am);
#pragma unroll
                for (int j = 0; j < MT; j += 2) {
                    uint32_t b[4];
                    ldsm4(sx + mi_at(8 * j + br, 2 * ks + bpc), b);
                    mma_u8s8(cc[j], am, b[0], b[1]);
                    mma_u8s8(cc[j + 1], am, b[2], b[3]);
                }
            }
#pragma unroll
            for (int j = 0; j < MT; j++) {
                const float4 d = *(const float4 *)(sd + gi * BM + 8 * j + 2 * q); /* columns 2q, 2q + 1 */
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const float s = cur.s[gi][h], b = cur.b[gi][h];
                    acc[j][2 * h] = fmaf(b, d.y, fmaf((float)cc[j][2 * h], s * d.x, acc[j][2 * h]));
                    acc[j][2 * h + 1] = fmaf(b, d.w, fmaf((float)cc[j][2 * h + 1], s * d.z, acc[j][2 * h + 1]));
                }
            }
        }
        cur = nxt;
    }
    cp_wait<0>();
    /* lane (g, q): rows g, g + 8 of the warp's 16 by x rows 8j + 2q, 8j + 2q + 1 */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t n = n0 + 16 * warp + g + 8 * h;
        if (n >= a.n) continue;
        if (split > 1) { /* partial sums; k_mi_reduce adds them and ends the product */
            float *p = A.part + A.poff[si] + sp_i * mp * a.n;
#pragma unroll
            for (int j = 0; j < MT; j++)
#pragma unroll
                for (int u = 0; u < 2; u++) p[(m0 + 8 * j + 2 * q + u) * a.n + n] = acc[j][2 * h + u];
            continue;
        }
        const float bias = a.bias ? cu_load(a.bias, a.bias_type, n) : 0.0f;
#pragma unroll
        for (int j = 0; j < MT; j++)
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int64_t col = m0 + 8 * j + 2 * q + u;
                if (col >= a.m) continue;
                float v = acc[j][2 * h + u];
                if (a.bias) v = v + bias;
                if (a.res) v = a.res[col * a.ldr + n] + v;
                a.y[col * a.ldy + n] = v;
            }
    }
}

/* The split segments' partial sums added in split order, then the bias
 * and residual as above: a thread an output, grid y the segment. */
static __global__ void k_mi_reduce(mi_args A) {
    cu_grid_entry();
    const int si = (int)blockIdx.y;
    const mnv_cu_matmul_args &a = A.seg[si];
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, split = A.split[si];
    if (split < 2 || i >= a.m * a.n) return;
    const int64_t col = i / a.n, n = i % a.n;
    const float *p = A.part + A.poff[si] + i;
    float v = p[0];
    for (int64_t s = 1; s < split; s++) v += p[s * A.mp * a.n];
    if (a.bias) v = v + cu_load(a.bias, a.bias_type, n);
    if (a.res) v = a.res[col * a.ldr + n] + v;
    a.y[col * a.ldy + n] = v;
}

static int mi_mt(int64_t m) { return m <= 16 ? 2 : m <= 32 ? 4 : 8; }
static int64_t mi_mp(int64_t m) {
    const int64_t bm = 8 * mi_mt(m);
    return (m + bm - 1) / bm * bm;
}
static int64_t mi_kp(int64_t k) { return (k + MI_KC - 1) / MI_KC * MI_KC; }

/* k is split where a product of one tile of x rows has fewer weight tiles
 * than MI_SPLIT_BLOCKS (two blocks for each of an H100's or H200's 132
 * SMs, which hold three of these blocks each): the segment's tiles take
 * MI_SPLIT_BLOCKS / tiles splits of at least MI_SPLIT_MIN stages each. A
 * constant, not the device's SM count, so that the sums' order depends on
 * the product's own shape alone: the same bits on every device, and for
 * fused and separate launches. */
#define MI_SPLIT_BLOCKS 264
static int64_t mi_blocks(void) { return MI_SPLIT_BLOCKS; }
#define MI_SPLIT_MAX 64

static int64_t mi_split(const mnv_cu_matmul_args *a) {
    const int64_t tiles = (a->n + MI_BN - 1) / MI_BN, nch = mi_kp(a->k) / MI_KC;
    if (mi_mp(a->m) > 8 * mi_mt(a->m) || tiles >= mi_blocks()) return 1;
    int64_t s = (mi_blocks() + tiles - 1) / tiles;
    if (s > nch / MI_SPLIT_MIN) s = nch / MI_SPLIT_MIN;
    if (s > MI_SPLIT_MAX) s = MI_SPLIT_MAX;
    return s < 2 ? 1 : s;
}

/* x's codes and steps, then room for the partial sums of up to MI_SEGS
 * split segments: splits x tiles is at most mi_blocks() + tiles, under
 * twice mi_blocks(). */
extern "C" size_t mnv__cu_mm_i8_scratch(const mnv_cu_matmul_args *a) {
    const int64_t mp = mi_mp(a->m), kp = mi_kp(a->k);
    size_t z = (size_t)(mp * kp) + (size_t)(kp / a->w.group_size * mp) * sizeof(float2);
    if (mp == 8 * mi_mt(a->m)) z += (size_t)MI_SEGS * (size_t)(2 * mi_blocks()) * MI_BN * (size_t)mp * 4;
    return z;
}

extern "C" int mnv__cu_mm_i8_fits(const mnv_cu_matmul_args *a, int n) {
    if (n < 1 || n > MI_SEGS) return 0;
    const mnv_cu_weight &w = a[0].w;
    const int G = w.group_size;
    if (!a[0].x_i8 || !a[0].mm_i8 || a[0].m < MNV_CU_MM_I8_MIN_M || a[0].m > (1 << 24) ||
        (G != 32 && G != 64 && G != 128) || a[0].k < G || a[0].k % G || a[0].k > (1 << 28) || ((uintptr_t)a[0].x & 15) ||
        a[0].ldx % 4)
        return 0;
    if (!mmv_a8_segs(a, n, G)) return 0;
    int64_t tiles = 0;
    for (int i = 0; i < n; i++) tiles += (a[i].n + MI_BN - 1) / MI_BN;
    return tiles <= 65535;
}

extern "C" int mnv__cu_mm_i8_ready(const mnv_cu_matmul_args *a, int n) {
    return mnv__cu_mm_i8_fits(a, n) && a[0].scratch && ((uintptr_t)a[0].scratch & 15) == 0 &&
           a[0].scratch_size >= mnv__cu_mm_i8_scratch(&a[0]);
}

template <int G, int MT> static cudaError_t mi_go(const mi_args &A, cudaStream_t s) {
    using C = mi_cfg<G, MT>;
    const dim3 grid((unsigned)(A.mp / C::BM), (unsigned)A.first[A.n]);
    const size_t smem = (size_t)C::STAGES * C::SB;
    if (smem > 48 * 1024) {
        const cudaError_t e = cudaFuncSetAttribute(k_mm_i8<G, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    cudaError_t e = cu_launch(k_mm_i8<G, MT>, grid, MI_THREADS, smem, s, A);
    if (e != cudaSuccess) return e;
    int64_t most = 0;
    for (int i = 0; i < A.n; i++)
        if (A.split[i] > 1 && A.seg[i].m * A.seg[i].n > most) most = A.seg[i].m * A.seg[i].n;
    if (most > 0) e = cu_launch(k_mi_reduce, dim3((unsigned)((most + 255) / 256), (unsigned)A.n), 256, 0, s, A);
    return e;
}

template <int G> static cudaError_t mi_launch(const mnv_cu_matmul_args *a, const mi_args &A, cudaStream_t s) {
    const int64_t ngp = A.kp / G, threads = A.mp * ngp;
    const cudaError_t e = cu_launch(k_mi_round<G>, (unsigned)((threads + 255) / 256), 256, 0, s, a[0].x, a[0].ldx,
                                    a[0].m, a[0].k, A.mp, A.kp, (int8_t *)A.xq, (float2 *)A.dxs);
    if (e != cudaSuccess) return e;
    const int mt = mi_mt(a[0].m);
    return mt == 2 ? mi_go<G, 2>(A, s) : mt == 4 ? mi_go<G, 4>(A, s) : mi_go<G, 8>(A, s);
}

extern "C" cudaError_t mnv__cu_mm_i8(const mnv_cu_matmul_args *a, int n, cudaStream_t s) {
    if (!mnv__cu_mm_i8_ready(a, n)) return cudaErrorInvalidValue;
    mi_args A;
    memset(&A, 0, sizeof A);
    A.n = n;
    A.mp = mi_mp(a[0].m);
    A.kp = mi_kp(a[0].k);
    A.xq = (const int8_t *)a[0].scratch;
    A.dxs = (const float2 *)((const uint8_t *)a[0].scratch + A.mp * A.kp);
    A.part = (float *)((uint8_t *)a[0].scratch + A.mp * A.kp + A.kp / a[0].w.group_size * A.mp * 8);
    const int64_t nch = A.kp / MI_KC;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        A.seg[i] = a[i];
        A.split[i] = mi_split(&a[i]);
        A.cps[i] = (nch + A.split[i] - 1) / A.split[i];
        A.split[i] = (nch + A.cps[i] - 1) / A.cps[i]; /* no split left empty */
        A.poff[i] = off;
        if (A.split[i] > 1) off += A.split[i] * A.mp * a[i].n;
        A.first[i + 1] = A.first[i] + (a[i].n + MI_BN - 1) / MI_BN * A.split[i];
    }
    if (A.first[n] > 65535 || (size_t)(A.mp * A.kp + A.kp / a[0].w.group_size * A.mp * 8 + off * 4) > a[0].scratch_size)
        return cudaErrorInvalidValue;
    const int G = a[0].w.group_size;
    return G == 32 ? mi_launch<32>(a, A, s) : G == 64 ? mi_launch<64>(a, A, s) : mi_launch<128>(a, A, s);
}
