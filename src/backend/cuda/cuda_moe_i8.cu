/* The mxfp4 decode experts with x rounded to int8 (mnv_cu_moe_args.x_i8):
 * the CPU's default numerics (cpu/qmatmul.h: dx = max|x| / 127 over each
 * group of 32, codes round(x / dx) to nearest even), so a session without
 * exact_quant computes what the CPU does, up to the order of the float
 * sums. Each group's sum is exact in int32:
 *
 *   y = sum_g 2^(e_g - 127) * (dx_g / 2) * sum_j xq_j * w2_j
 *
 * with w2 = 2 * e2m1 in [-12, 12]. The products run on the int8 tensor
 * cores, mma.sync m16n8k32: one instruction is a group of 16 weight rows,
 * and a code becomes its int8 by byte permutes (11 instructions a word of
 * eight), where the bf16 path (cuda_moe_mma.cu) spends four mma and about
 * twice the instructions a group: that kernel was bound by its instruction
 * rate, not by memory (bench/NOTES.md). */
#include "backend/cuda/cuda_mmv.cuh"
#include "backend/cuda/cuda_moe.cuh"

#define QI_THREADS 128

/* prmt.b32 as PTX defines it: the low 16 bits of s select, a nibble's bit
 * 3 replicating the sign (unused here: the selectors keep it clear).
 * __byte_perm masks each selector to its low three bits first, which
 * costs an instruction a call where the selector is not a constant. */
static __device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t s) {
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
    return r;
}

/* Eight mxfp4 codes (word w, code 0 the lowest nibble) as int8 2 * e2m1:
 * codes 0-3 in lo, 4-7 in hi, byte i the code i (of each half). A table
 * lookup of the magnitude among the positive and among the negative
 * values, then a permute picking either by the sign bit (selector bytes
 * 0-3, or 4-7 where the sign is set). */
static __device__ __forceinline__ void mx4_i8(uint32_t w, uint32_t *lo, uint32_t *hi) {
    const uint32_t P0 = 0x03020100u, P1 = 0x0C080604u; /* 0, 1, 2, 3, 4, 6, 8, 12 */
    const uint32_t N0 = 0xFDFEFF00u, N1 = 0xF4F8FAFCu; /* their negatives */
    const uint32_t m = w & 0x77777777u, mh = m >> 16;
    const uint32_t sel = ((w >> 1) & 0x44444444u) | 0x32103210u;
    *lo = prmt(prmt(P0, P1, m), prmt(N0, N1, m), sel);
    *hi = prmt(prmt(P0, P1, mh), prmt(N0, N1, mh), sel >> 16);
}

/* e8m0 in two instructions: e << 23, or 2^-127 (0x00400000, below every
 * e << 23 of e > 0) for e = 0. */
static __device__ __forceinline__ float e8m0_max(uint32_t e) { return __uint_as_float(max(e << 23, 0x00400000u)); }

static __device__ __forceinline__ void mma_s8(int *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* A group of 32 floats of x rounded to int8 codes at q; *dxh = dx / 2
 * (the weights' codes are doubled). */
static __device__ __forceinline__ void quant_group(const float *x, int8_t *q, float *dxh) {
    int sum;
    *dxh = 0.5f * cu_round_group<32>(x, q, &sum);
}

/* One (token, slot) a block row, DM_ROWS weight rows a block; each warp
 * takes every fourth quad (four groups in a row). Thread (g, q) loads the
 * 16 bytes of group q of the quad of rows g and g + 8 in one load, and the
 * quad's four mma take word i of each: their k slots of thread q are group
 * q's, so B's column q holds x's codes of group q at those slots (lane
 * (q, q) loads them, the other lanes zeros) and C's column q sums group q
 * alone, in int32 over the four. Lanes q = 0, 1 then hold groups 2q and
 * 2q + 1 of rows g and g + 8 and apply their scales. */
#define QI_ZERO 32 /* bytes of zeros after x's codes: the B rows of lanes off the diagonal */

template <int R> struct qi_step {
    uint4 w[R][2];       /* rows g, g + 8: group q of the quad */
    uint32_t s[R][2]; /* rows g, g + 8: the scales of groups 2q (low byte) and 2q + 1 */
};

/* The block's rows: for each weight the start of its row n0 of the
 * block's expert (the same for every thread) and a thread's byte offsets
 * from there of rows g and g + 8 (the last row repeated past n), so that
 * a load's address is the start plus 32-bit terms, not a 64-bit product
 * (mnv__cu_moe_dmma_i8_fits keeps the offsets in 32 bits). */
template <int R> struct qi_rows {
    const uint8_t *w[R], *s[R];
    uint32_t ow[R][2], os[R][2];
};
template <int R>
static __device__ __forceinline__ void qi_rows_of(const mnv_cu_moe_args &a, int64_t e, int64_t n0, int g,
                                                  qi_rows<R> *rw) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        const mnv_cu_weight &w = r ? a.w2 : a.w;
        rw->w[r] = (const uint8_t *)((const uint32_t *)w.w + e * w.we + n0 * w.ldw);
        rw->s[r] = (const uint8_t *)w.scales + e * w.se + n0 * w.lds;
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t i = min((int64_t)(g + 8 * h), a.n - 1 - n0);
#pragma unroll
        for (int r = 0; r < R; r++) {
            const mnv_cu_weight &w = r ? a.w2 : a.w;
            rw->ow[r][h] = (uint32_t)(i * w.ldw * 4);
            rw->os[r][h] = (uint32_t)(i * w.lds);
        }
    }
}

/* PAIR (qi_pair): a row's two scales of a step in one 2-byte load; a pair
 * past the last group reads the last pair, where x's codes are zeros. */
template <int R, bool PAIR>
static __device__ __forceinline__ void qi_load(const qi_rows<R> &rw, int32_t quad, int32_t ng, int q,
                                               qi_step<R> *st) {
    const uint32_t gw = min(4 * quad + q, ng - 1), gs = 4 * quad + 2 * (q & 1);
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint8_t *sr = rw.s[r] + rw.os[r][h];
            st->w[r][h] = __ldg((const uint4 *)(rw.w[r] + (rw.ow[r][h] + 16u * gw)));
            st->s[r][h] = PAIR ? __ldg((const uint16_t *)(sr + min(gs, (uint32_t)ng - 2)))
                               : __ldg(sr + min(gs, (uint32_t)ng - 1)) |
                                     (uint32_t)__ldg(sr + min(gs + 1, (uint32_t)ng - 1)) << 8;
        }
}

template <int R>
static __device__ __forceinline__ void qi_quad(const qi_step<R> &st, const int8_t *xb, float2 d, float (*acc)[2]) {
    uint2 b[4];
#pragma unroll
    for (int i = 0; i < 4; i++) b[i] = *(const uint2 *)(xb + 8 * i);
#pragma unroll
    for (int r = 0; r < R; r++) {
        int c[4] = {0, 0, 0, 0};
        const uint32_t w0[4] = {st.w[r][0].x, st.w[r][0].y, st.w[r][0].z, st.w[r][0].w};
        const uint32_t w8[4] = {st.w[r][1].x, st.w[r][1].y, st.w[r][1].z, st.w[r][1].w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t am[4];
            mx4_i8(w0[i], &am[0], &am[2]);
            mx4_i8(w8[i], &am[1], &am[3]);
            mma_s8(c, am, b[i].x, b[i].y);
        }
        acc[r][0] = fmaf((float)c[0], e8m0_max(st.s[r][0] & 0xFFu) * d.x, acc[r][0]);
        acc[r][0] = fmaf((float)c[1], e8m0_max(st.s[r][0] >> 8) * d.y, acc[r][0]);
        acc[r][1] = fmaf((float)c[2], e8m0_max(st.s[r][1] & 0xFFu) * d.x, acc[r][1]);
        acc[r][1] = fmaf((float)c[3], e8m0_max(st.s[r][1] >> 8) * d.y, acc[r][1]);
    }
}

template <bool DUAL, bool PAIR>
static __global__ void __launch_bounds__(QI_THREADS, 6) k_moe_dmma_i8(mnv_cu_moe_args a) {
    cu_grid_entry();
    /* D steps of loads in flight a warp: gate and up take 80 registers with
     * two (three spill), down 76 with four (bench/NOTES.md) */
    constexpr int R = DUAL ? 2 : 1, W = QI_THREADS / 32, D = DUAL ? 2 : 4;
    extern __shared__ __align__(16) uint8_t qs[]; /* codes[K], QI_ZERO zeros, dxh[nq * 4] */
    __shared__ float red[QI_THREADS / 32][R][DM_ROWS][1];
    const int32_t ts = blockIdx.y, K = (int32_t)a.k, ng = K / 32, nq = (ng + 3) / 4;
    const int32_t e = a.ids[ts];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const float *x = a.x + (a.per_slot ? (int64_t)ts : (int64_t)ts / a.kk) * K;
    int8_t *xq = (int8_t *)qs;
    float *dxh = (float *)(qs + K + QI_ZERO);
    const int64_t n0 = (int64_t)blockIdx.x * DM_ROWS;
    qi_rows<R> rw; /* a thread reads whole groups of its rows */
    qi_rows_of<R>(a, e, n0, g, &rw);
    qi_step<R> st[D];
    int32_t quad = warp;
#pragma unroll
    for (int i = 0; i < D - 1; i++) /* on their way while x is rounded */
        if (quad + i * W < nq) qi_load<R, PAIR>(rw, quad + i * W, ng, q, &st[i]);
    /* x rounded two lanes a group, 16 groups a warp (a row of x is 16-byte aligned where x is: K % 32 == 0) */
    const bool al = ((uintptr_t)a.x & 15) == 0;
    for (int32_t g0 = warp * 16; g0 < 4 * nq; g0 += W * 16) {
        const int32_t grp = g0 + lane / 2;
        const float am = cu_round_lanes<32>(x + (int64_t)grp * 32, grp < ng, al, lane & 1, xq + grp * 32, NULL);
        if ((lane & 1) == 0 && grp < 4 * nq) dxh[grp] = grp < ng ? 0.5f * __fdiv_rn(am, 127.0f) : 0.0f;
    }
    if (tid < QI_ZERO / 4) ((uint32_t *)(qs + K))[tid] = 0;
    __syncthreads();
    float acc[R][2] = {};
    /* D quads an iteration, each loading the one D - 1 ahead (no register copies) */
    for (; quad < nq; quad += D * W) {
#pragma unroll
        for (int i = 0; i < D; i++) {
            const int32_t qi = quad + i * W, qn = qi + (D - 1) * W, grp = 4 * qi + q;
            if (qi >= nq) break;
            if (qn < nq) qi_load<R, PAIR>(rw, qn, ng, q, &st[(i + D - 1) % D]);
            const int8_t *xb = g == q && grp < ng ? xq + grp * 32 : (const int8_t *)qs + K;
            qi_quad<R>(st[i], xb, *(const float2 *)&dxh[4 * qi + 2 * (q & 1)], acc);
        }
    }
    /* lanes q = 0, 1 hold groups 0-1 and 2-3 of each quad */
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) acc[r][h] += __shfl_xor_sync(0xffffffffu, acc[r][h], 1);
    if (q == 0)
#pragma unroll
        for (int r = 0; r < R; r++) {
            red[warp][r][g][0] = acc[r][0];
            red[warp][r][g + 8][0] = acc[r][1];
        }
    __syncthreads();
    if (tid < DM_ROWS) dm_out<DUAL, QI_THREADS / 32, 1>(a, red, e, &ts, 1, n0, tid, 0);
}

static bool mx4_g32(const mnv_cu_weight *w, int64_t k) {
    return mmv_layout(w, k) == MMV_MX4 && w->group_size == 32 && k % 32 == 0;
}

/* a row's scales two groups a 2-byte load */
static bool qi_pair(const mnv_cu_weight *w, int64_t k) {
    return k % 64 == 0 && ((uintptr_t)w->scales & 1) == 0 && w->lds % 2 == 0 && w->se % 2 == 0;
}

/* a row's groups in 16-byte loads */
static bool w16(const mnv_cu_weight *w) { return ((uintptr_t)w->w & 15) == 0 && w->ldw % 4 == 0 && w->we % 4 == 0; }
/* a block's rows' offsets in 32 bits (qi_rows) */
static bool qi_off32(const mnv_cu_weight *w) {
    return w->ldw <= INT32_MAX / (4 * DM_ROWS) && w->lds <= INT32_MAX / DM_ROWS;
}
static size_t dmma_i8_smem(int64_t k) { return (size_t)k + QI_ZERO + (size_t)((k / 32 + 3) / 4 * 4) * 4; }

extern "C" int mnv__cu_moe_dmma_i8_fits(const mnv_cu_moe_args *a) {
    const int64_t rows = a->T * a->kk;
    const int64_t below = a->gmma_min_rows > 0 ? a->gmma_min_rows : MNV_CU_MOE_GROUP_MIN;
    const size_t red = (size_t)(QI_THREADS / 32) * (a->dual ? 2 : 1) * DM_ROWS * 4;
    return a->x_i8 && a->mma_min_rows > 0 && rows < a->mma_min_rows && rows < below && rows <= 65535 &&
           mx4_g32(&a->w, a->k) && (!a->dual || mx4_g32(&a->w2, a->k)) && w16(&a->w) && (!a->dual || w16(&a->w2)) &&
           qi_off32(&a->w) && (!a->dual || qi_off32(&a->w2)) && a->k <= INT32_MAX / 2 &&
           dmma_i8_smem(a->k) + red <= 48 * 1024 && (a->n + DM_ROWS - 1) / DM_ROWS <= INT32_MAX;
}

extern "C" cudaError_t mnv__cu_moe_dmma_i8(const mnv_cu_moe_args *a, cudaStream_t s) {
    if (!mnv__cu_moe_dmma_i8_fits(a)) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((a->n + DM_ROWS - 1) / DM_ROWS), (unsigned)(a->T * a->kk));
    const size_t sm = dmma_i8_smem(a->k);
    const bool pair = qi_pair(&a->w, a->k) && (!a->dual || qi_pair(&a->w2, a->k));
    if (a->dual)
        cu_launch(pair ? k_moe_dmma_i8<true, true> : k_moe_dmma_i8<true, false>, grid, QI_THREADS, sm, s, *a);
    else
        cu_launch(pair ? k_moe_dmma_i8<false, true> : k_moe_dmma_i8<false, false>, grid, QI_THREADS, sm, s, *a);
    CU_CHECK_LAUNCH();
}

/* ---- batched decode: rows grouped by expert, up to eight a tile ----
 * As k_moe_gmma (cuda_moe_mma.cu), with B's eight columns the int8 codes
 * of the tile's x rows, which k_quant_rows rounds once for all blocks
 * beforehand. Lane (g, q) loads column g's codes and step; the steps of
 * the columns of its C fragment (2q, 2q + 1) come from the lanes that
 * loaded them. */
#define GQ_TILE 8

/* rows x rows of k floats: codes (rows, k) and half steps (rows, k / 32),
 * a thread a group. */
static __global__ void k_quant_rows(const float *x, int64_t rows, int64_t k, int8_t *xq, float *dxh) {
    cu_grid_entry();
    const int64_t ng = k / 32, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * ng) return;
    const int64_t r = i / ng, grp = i % ng;
    quant_group(x + r * k + grp * 32, xq + r * k + grp * 32, dxh + i);
}

template <bool DUAL>
static __global__ void __launch_bounds__(QI_THREADS) k_moe_gmma_i8(mnv_cu_moe_args a, moe_groups gr, const int8_t *xq,
                                                                 const float *dxh) {
    cu_grid_entry();
    constexpr int R = DUAL ? 2 : 1;
    __shared__ float red[QI_THREADS / 32][R][DM_ROWS][GQ_TILE];
    const int32_t t = blockIdx.y;
    if (t >= *gr.n_tiles) return; /* the whole block */
    const int32_t e = gr.tile[3 * t], first = gr.tile[3 * t + 1], cnt = gr.tile[3 * t + 2];
    const int64_t K = a.k, ng = K / 32;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const bool has = g < cnt;
    const int64_t tx = has ? gr.sorted[first + g] : 0, xr = a.per_slot ? tx : tx / a.kk;
    const int8_t *xc = xq + xr * K + 8 * q; /* column g's codes 8q.. of each group */
    const float *dc = dxh + xr * ng;
    const int64_t n0 = (int64_t)blockIdx.x * DM_ROWS;
    dm_rows<R> rw;
    dm_rows_of<R>(a, e, n0, g, q, &rw);
    float acc[R][2][2] = {}; /* weight row g (+ 8 h), tile rows 2q + j */
    constexpr int64_t GSTEP = 2 * (QI_THREADS / 32);
    dm_step<R> cur, nxt;
    uint2 bc[2], bn[2];
    float dc2[2], dn2[2];
    auto load_x = [&](int64_t g0, uint2 *b, float *d) {
#pragma unroll
        for (int gi = 0; gi < 2; gi++) {
            const int64_t grp = g0 + gi < ng ? g0 + gi : g0;
            b[gi] = has ? __ldg((const uint2 *)(xc + grp * 32)) : make_uint2(0u, 0u);
            d[gi] = has ? __ldg(dc + grp) : 0.0f;
        }
    };
    if (2 * warp < ng) {
        dm_load<R>(rw, 2 * warp, ng, &cur);
        load_x(2 * warp, bc, dc2);
    }
    for (int64_t g0 = 2 * warp; g0 < ng; g0 += GSTEP) {
        if (g0 + GSTEP < ng) {
            dm_load<R>(rw, g0 + GSTEP, ng, &nxt);
            load_x(g0 + GSTEP, bn, dn2);
        }
#pragma unroll
        for (int gi = 0; gi < 2; gi++) {
            const int64_t grp = g0 + gi;
            if (grp >= ng) break;
            /* the steps of columns 2q and 2q + 1, from lanes 8q and 8q + 4 */
            const float d0 = __shfl_sync(0xffffffffu, dc2[gi], 8 * q), d1 = __shfl_sync(0xffffffffu, dc2[gi], 8 * q + 4);
#pragma unroll
            for (int r = 0; r < R; r++) {
                uint32_t am[4];
                mx4_i8(cur.w[gi][r][0], &am[0], &am[2]);
                mx4_i8(cur.w[gi][r][1], &am[1], &am[3]);
                int c[4] = {0, 0, 0, 0};
                mma_s8(c, am, bc[gi].x, bc[gi].y);
                const float s0 = e8m0_max(cur.s[gi][r][0]), s8 = e8m0_max(cur.s[gi][r][1]);
                acc[r][0][0] = fmaf((float)c[0], s0 * d0, acc[r][0][0]);
                acc[r][0][1] = fmaf((float)c[1], s0 * d1, acc[r][0][1]);
                acc[r][1][0] = fmaf((float)c[2], s8 * d0, acc[r][1][0]);
                acc[r][1][1] = fmaf((float)c[3], s8 * d1, acc[r][1][1]);
            }
        }
        cur = nxt;
#pragma unroll
        for (int gi = 0; gi < 2; gi++) bc[gi] = bn[gi], dc2[gi] = dn2[gi];
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int j = 0; j < 2; j++) red[warp][r][g + 8 * h][2 * q + j] = acc[r][h][j];
    __syncthreads();
    /* QI_THREADS = DM_ROWS x GQ_TILE: a thread an output */
    dm_out<DUAL, QI_THREADS / 32, GQ_TILE>(a, red, e, gr.sorted + first, cnt, n0, tid / GQ_TILE, tid % GQ_TILE);
}
static_assert(QI_THREADS == DM_ROWS * GQ_TILE, "k_moe_gmma_i8: a thread per output of a block");

static int64_t x_rows(const mnv_cu_moe_args *a) { return a->per_slot ? a->T * a->kk : a->T; }

extern "C" int mnv__cu_moe_gmma_i8_fits(const mnv_cu_moe_args *a) {
    const int64_t rows = a->T * a->kk;
    return a->x_i8 && a->gmma_min_rows > 0 && rows >= a->gmma_min_rows && a->mma_min_rows > 0 &&
           rows < a->mma_min_rows && mx4_g32(&a->w, a->k) && (!a->dual || mx4_g32(&a->w2, a->k)) &&
           moe_max_tiles(rows, a->E, GQ_TILE) <= 65535 && a->E <= 4096 &&
           (a->n + DM_ROWS - 1) / DM_ROWS <= INT32_MAX && rows <= INT32_MAX &&
           (x_rows(a) * (a->k / 32) + QI_THREADS - 1) / QI_THREADS <= INT32_MAX;
}

/* sorted, tiles and their count, then x's codes and half steps */
static size_t gq_groups_bytes(const mnv_cu_moe_args *a) {
    const int64_t rows = a->T * a->kk;
    return ((size_t)(rows + 3 * moe_max_tiles(rows, a->E, GQ_TILE) + 1) * 4 + 15) & ~(size_t)15;
}

extern "C" size_t mnv__cu_moe_gmma_i8_scratch(const mnv_cu_moe_args *a) {
    const size_t codes = ((size_t)x_rows(a) * (size_t)a->k + 15) & ~(size_t)15;
    return gq_groups_bytes(a) + codes + (size_t)x_rows(a) * (size_t)(a->k / 32) * 4;
}

/* From MNV_CU_MOE_TILE_MIN_I8 rows, where its 16-byte loads are aligned
 * and its grid fits, the decode batch takes the tile kernel below in tiles
 * of 16 rows of an expert. */
#define GQ_TILE_ROWS 16
static bool me_gq_fits(const mnv_cu_moe_args *a);
static cudaError_t me_gq(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s);

extern "C" cudaError_t mnv__cu_moe_gmma_i8(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    if (!mnv__cu_moe_gmma_i8_fits(a)) return cudaErrorInvalidValue;
    if (me_gq_fits(a)) return me_gq(a, scratch, s);
    const int64_t rows = a->T * a->kk, max_tiles = moe_max_tiles(rows, a->E, GQ_TILE), xr = x_rows(a);
    int32_t *base = (int32_t *)scratch;
    moe_groups gr = {base, base + rows, base + rows + 3 * max_tiles};
    int8_t *xq = (int8_t *)scratch + gq_groups_bytes(a);
    float *dxh = (float *)(xq + ((xr * a->k + 15) & ~(int64_t)15));
    cu_launch(k_moe_group, 1, 1024, (size_t)(3 * a->E) * 4, s, a->ids, (int32_t)rows, (int32_t)a->E, GQ_TILE, gr);
    cu_launch(k_quant_rows, (unsigned)((xr * (a->k / 32) + QI_THREADS - 1) / QI_THREADS), QI_THREADS, 0, s, a->x, xr,
              a->k, xq, dxh);
    dim3 grid((unsigned)((a->n + DM_ROWS - 1) / DM_ROWS), (unsigned)max_tiles);
    if (a->dual)
        cu_launch(k_moe_gmma_i8<true>, grid, QI_THREADS, 0, s, *a, gr, xq, dxh);
    else
        cu_launch(k_moe_gmma_i8<false>, grid, QI_THREADS, 0, s, *a, gr, xq, dxh);
    CU_CHECK_LAUNCH();
}

/* ---- prefill: tiles of up to 64 rows of an expert ----
 * From mma_min_rows rows with x_i8 (where the bf16 tile kernel of
 * cuda_moe_mma.cu runs otherwise): rows grouped by expert into tiles of up
 * to 64 (x rounded once by k_quant_rows), a block a tile by 64 weight rows
 * (with DUAL: 32 of the gate and the same 32 of up, warps 0-1 and 2-3),
 * k in stages of 256 codes (8 groups) copied by cp.async into shared
 * memory two deep: weights as 128-byte rows, x's codes as 256-byte
 * rows, both with their 16-byte pieces swizzled by the row, and x's half
 * steps. Each group is one mma per 8 rows of the tile with A the weights'
 * codes as int8 (word q of the group for thread q, as the kernels above)
 * and B x's codes in the same order, its int32 sum scaled as k_moe_gmma_i8
 * scales it. */
#define ME_THREADS 128
#define ME_BN 64           /* weight rows a block */
#define ME_TILE 64         /* rows of an expert a tile (prefill) */
#define ME_KC 256          /* codes a stage */
#define ME_NG (ME_KC / 32) /* groups a stage */
#define ME_STAGES 2 /* three blocks an SM at tiles of 64 (three stages leave room for two: ~9% slower) */
#define ME_SPAD 4 /* bytes between rows of the shared scales past their groups */
#define ME_WB (ME_BN * ME_KC / 2)
/* a stage's bytes: weights, x's codes, x's half steps */
template <int TILE> struct me_cfg {
    static constexpr int XB = TILE * ME_KC, DB = ME_NG * TILE * 4, SB = ME_WB + XB + DB;
    static constexpr int XP = TILE * (ME_KC / 16), DP = ME_NG * TILE; /* x pieces, steps */
};

/* weight blocks of a product: 64 rows, or 32 of gate and up each */
static int64_t me_nb(const mnv_cu_moe_args *a) {
    return a->dual ? (a->n + ME_BN / 2 - 1) / (ME_BN / 2) : (a->n + ME_BN - 1) / ME_BN;
}

/* Row r of a block's 64 (DUAL: 32 of the gate, then the same 32 of up)
 * as its weight and its row n (the last row repeated past a.n). */
template <bool DUAL>
static __device__ __forceinline__ const mnv_cu_weight &me_row(const mnv_cu_moe_args &a, int64_t n0, int r, int64_t *n) {
    const bool up = DUAL && r >= ME_BN / 2;
    const int64_t i = n0 + (up ? r - ME_BN / 2 : r);
    *n = i < a.n ? i : a.n - 1;
    return up ? a.w2 : a.w;
}

template <bool DUAL, int TILE>
static __global__ void __launch_bounds__(ME_THREADS, TILE >= 64 ? 3 : 4) k_moe_mm_i8(mnv_cu_moe_args a, moe_groups gr, const int8_t *xq,
                                                                  const float *dxh) {
    cu_grid_entry();
    static_assert(TILE % 8 == 0 && TILE <= 64, "k_moe_mm_i8: tiles of 8, 16, ... 64 rows");
    using C = me_cfg<TILE>;
    constexpr int XI = (C::XP + ME_THREADS - 1) / ME_THREADS, DI = (C::DP + ME_THREADS - 1) / ME_THREADS;
    extern __shared__ __align__(16) int32_t me_sh[];
    uint8_t *sh = (uint8_t *)me_sh;
    const int32_t t = blockIdx.x;
    if (t >= *gr.n_tiles) return; /* the whole block */
    const int32_t e = gr.tile[3 * t], first = gr.tile[3 * t + 1], cnt = gr.tile[3 * t + 2];
    const int64_t K = a.k, ng = K / 32, nst = (K + ME_KC - 1) / ME_KC;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    /* output rows of the block: 64, or 32 of gate and up each */
    const int64_t n0 = (int64_t)blockIdx.y * (DUAL ? ME_BN / 2 : ME_BN);
    /* this thread's weight pieces: 4 (rows p >> 3, piece p & 7) */
    const uint8_t *wsrc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int p = tid + ME_THREADS * i;
        int64_t n;
        const mnv_cu_weight &w = me_row<DUAL>(a, n0, p >> 3, &n);
        wsrc[i] = (const uint8_t *)((const uint32_t *)w.w + e * w.we + n * w.ldw) + (p & 7) * 16;
    }
    /* x pieces: XI (tile row p >> 4, piece p & 15); the rows' x row, -1
     * past the tile's rows (and past the pieces) */
    int64_t xrow[XI];
#pragma unroll
    for (int i = 0; i < XI; i++) {
        const int p = tid + ME_THREADS * i, r = p >> 4;
        const bool in = p < C::XP && r < cnt;
        const int32_t tx = in ? gr.sorted[first + r] : 0;
        xrow[i] = in ? (a.per_slot ? tx : tx / (int32_t)a.kk) : -1;
    }
    /* steps: DI (group p / TILE of the stage, tile row p % TILE) */
    int64_t drow[DI];
#pragma unroll
    for (int i = 0; i < DI; i++) {
        const int p = tid + ME_THREADS * i, r = p % TILE;
        const bool in = p < C::DP && r < cnt;
        const int32_t tx = in ? gr.sorted[first + r] : 0;
        drow[i] = in ? (a.per_slot ? tx : tx / (int32_t)a.kk) : -1;
    }
    auto load = [&](int64_t c, int st) {
        uint8_t *sw = sh + st * C::SB, *sx = sw + ME_WB;
        float *sd = (float *)(sx + C::XB);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int p = tid + ME_THREADS * i, r = p >> 3, pc = p & 7;
            const bool in = c * (ME_KC / 2) + pc * 16 < K / 2;
            cp16(sw + r * (ME_KC / 2) + ((pc ^ (r & 7)) << 4), in ? wsrc[i] + c * (ME_KC / 2) : wsrc[i], in);
        }
#pragma unroll
        for (int i = 0; i < XI; i++) {
            const int p = tid + ME_THREADS * i, r = p >> 4, pc = p & 15;
            if (C::XP % ME_THREADS && p >= C::XP) break;
            const bool in = xrow[i] >= 0 && c * ME_KC + pc * 16 < K;
            const int8_t *src = in ? xq + xrow[i] * K + c * ME_KC + pc * 16 : xq;
            cp16(sx + r * ME_KC + ((pc ^ (r & 7)) << 4), src, in);
        }
#pragma unroll
        for (int i = 0; i < DI; i++) {
            const int p = tid + ME_THREADS * i, gi = p / TILE, r = p % TILE;
            if (C::DP % ME_THREADS && p >= C::DP) break;
            const bool in = drow[i] >= 0 && c * ME_NG + gi < ng;
            cp4(sd + gi * TILE + r, in ? dxh + drow[i] * ng + c * ME_NG + gi : dxh, in);
        }
    };
#pragma unroll
    for (int st = 0; st < ME_STAGES - 1; st++) {
        if (st < nst) load(st, st);
        cp_commit();
    }
    /* the block's weight scales, whole rows of nst * ME_NG bytes (zero
     * past ng; rows ME_SPAD bytes apart beyond that, so that a warp's rows
     * do not share a bank) after the stages, while the first stages are
     * on their way: a warp takes every fourth row, its lanes 32 groups at
     * a time */
    const int32_t ngp = (int32_t)nst * ME_NG, ngs = ngp + ME_SPAD;
    static_assert(ME_THREADS == 128, "k_moe_mm_i8: four warps take the scale rows");
    uint8_t *ssc = sh + ME_STAGES * C::SB;
    for (int32_t g0 = 0; g0 < ngp; g0 += 32) {
        uint8_t v[ME_BN / 4];
#pragma unroll
        for (int i = 0; i < ME_BN / 4; i++) {
            int64_t n;
            const mnv_cu_weight &w = me_row<DUAL>(a, n0, warp + 4 * i, &n);
            v[i] = g0 + lane < ng ? __ldg((const uint8_t *)w.scales + e * w.se + n * w.lds + g0 + lane) : 0;
        }
#pragma unroll
        for (int i = 0; i < ME_BN / 4; i++)
            if (g0 + lane < ngp) ssc[(warp + 4 * i) * ngs + g0 + lane] = v[i];
    }
    float acc[TILE / 8][4] = {};
    const int wr0 = 16 * warp + g, wr1 = wr0 + 8;
    for (int64_t c = 0; c < nst; c++) {
        cp_wait<ME_STAGES - 2>();
        __syncthreads();
        if (c + ME_STAGES - 1 < nst) load(c + ME_STAGES - 1, (int)((c + ME_STAGES - 1) % ME_STAGES));
        cp_commit();
        const uint8_t *sw = sh + (c % ME_STAGES) * C::SB, *sx = sw + ME_WB;
        const float *sd = (const float *)(sx + C::XB);
#pragma unroll
        for (int i = 0; i < ME_NG; i++) {
            const uint32_t w0 = *(const uint32_t *)(sw + wr0 * (ME_KC / 2) + ((i ^ (wr0 & 7)) << 4) + 4 * q);
            const uint32_t w8 = *(const uint32_t *)(sw + wr1 * (ME_KC / 2) + ((i ^ (wr1 & 7)) << 4) + 4 * q);
            uint32_t am[4];
            mx4_i8(w0, &am[0], &am[2]);
            mx4_i8(w8, &am[1], &am[3]);
            /* x codes 8q.. of group i: piece 2i + q / 2, half q % 2 */
            const int xp = 2 * i + (q >> 1), xh = 8 * (q & 1);
            const int32_t grp = (int32_t)c * ME_NG + i; /* past ng: 2^-127 times the zeros of the stage */
            const float s0 = e8m0_max(ssc[wr0 * ngs + grp]), s1 = e8m0_max(ssc[wr1 * ngs + grp]);
#pragma unroll
            for (int j = 0; j < TILE / 8; j++) {
                const int xr = 8 * j + g;
                const uint2 b = *(const uint2 *)(sx + xr * ME_KC + ((xp ^ (xr & 7)) << 4) + xh);
                int cc[4] = {0, 0, 0, 0};
                mma_s8(cc, am, b.x, b.y);
                const float2 d = *(const float2 *)(sd + i * TILE + 8 * j + 2 * q);
                acc[j][0] = fmaf((float)cc[0], s0 * d.x, acc[j][0]);
                acc[j][1] = fmaf((float)cc[1], s0 * d.y, acc[j][1]);
                acc[j][2] = fmaf((float)cc[2], s1 * d.x, acc[j][2]);
                acc[j][3] = fmaf((float)cc[3], s1 * d.y, acc[j][3]);
            }
        }
    }
    cp_wait<0>();
    __syncthreads();
    /* lane (g, q): weight rows wr0, wr1 by tile rows 8j + 2q, 8j + 2q + 1 */
    float *up = (float *)sh; /* DUAL: up's sums (32 rows x TILE tile rows) */
    static_assert(ME_BN / 2 * TILE * 4 <= ME_STAGES * C::SB, "k_moe_mm_i8: up's sums fit the stages");
    if (DUAL && warp >= 2) {
#pragma unroll
        for (int j = 0; j < TILE / 8; j++)
#pragma unroll
            for (int u = 0; u < 4; u++)
                up[((u < 2 ? wr0 : wr1) - ME_BN / 2) * TILE + 8 * j + 2 * q + (u & 1)] = acc[j][u];
    }
    if (DUAL) __syncthreads();
    if (DUAL && warp >= 2) return;
#pragma unroll
    for (int j = 0; j < TILE / 8; j++)
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int wr = u < 2 ? wr0 : wr1, col = 8 * j + 2 * q + (u & 1);
            const int64_t n = n0 + wr;
            if (col >= cnt || n >= a.n) continue;
            float v = acc[j][u];
            v = v + (a.bias ? a.bias[e * a.bs0 + n * a.bs1] : 0.0f);
            if (DUAL)
                v = cu_swiglu(v, up[wr * TILE + col] + (a.bias2 ? a.bias2[e * a.b2s0 + n * a.b2s1] : 0.0f), a.alpha,
                              a.limit);
            a.y[(int64_t)gr.sorted[first + col] * a.n + n] = v;
        }
}

/* shared memory of a block: the stages, then its weight rows' scales */
template <int TILE> static size_t me_smem(int64_t k) {
    return (size_t)ME_STAGES * me_cfg<TILE>::SB + (size_t)ME_BN * (size_t)((k + ME_KC - 1) / ME_KC * ME_NG + ME_SPAD);
}

static size_t me_groups_bytes(const mnv_cu_moe_args *a) {
    const int64_t rows = a->T * a->kk;
    return ((size_t)(rows + 3 * moe_max_tiles(rows, a->E, ME_TILE) + 1) * 4 + 15) & ~(size_t)15;
}

extern "C" int mnv__cu_moe_mm_i8_fits(const mnv_cu_moe_args *a) {
    const int64_t rows = a->T * a->kk;
    const int64_t nb = me_nb(a);
    return a->x_i8 && a->mma_min_rows > 0 && rows >= a->mma_min_rows && mx4_g32(&a->w, a->k) &&
           (!a->dual || mx4_g32(&a->w2, a->k)) && w16(&a->w) && (!a->dual || w16(&a->w2)) && a->E <= 4096 &&
           moe_max_tiles(rows, a->E, ME_TILE) <= INT32_MAX && nb <= 65535 && rows <= INT32_MAX &&
           me_smem<ME_TILE>(a->k) <= cu_smem_optin() &&
           (x_rows(a) * (a->k / 32) + QI_THREADS - 1) / QI_THREADS <= INT32_MAX;
}

extern "C" size_t mnv__cu_moe_mm_i8_scratch(const mnv_cu_moe_args *a) {
    const size_t codes = ((size_t)x_rows(a) * (size_t)a->k + 15) & ~(size_t)15;
    return me_groups_bytes(a) + codes + (size_t)x_rows(a) * (size_t)(a->k / 32) * 4;
}

/* The tile kernel over the scratch laid out as groups (groups_bytes of
 * them), x's codes, x's half steps. */
template <int TILE>
static cudaError_t me_run(const mnv_cu_moe_args *a, void *scratch, size_t groups_bytes, cudaStream_t s) {
    const int64_t rows = a->T * a->kk, max_tiles = moe_max_tiles(rows, a->E, TILE), xr = x_rows(a);
    int32_t *base = (int32_t *)scratch;
    moe_groups gr = {base, base + rows, base + rows + 3 * max_tiles};
    int8_t *xq = (int8_t *)scratch + groups_bytes;
    float *dxh = (float *)(xq + ((xr * a->k + 15) & ~(int64_t)15));
    cudaError_t err =
        cu_launch(k_moe_group, 1, 1024, (size_t)(3 * a->E) * 4, s, a->ids, (int32_t)rows, (int32_t)a->E, TILE, gr);
    if (err == cudaSuccess)
        err = cu_launch(k_quant_rows, (unsigned)((xr * (a->k / 32) + QI_THREADS - 1) / QI_THREADS), QI_THREADS, 0, s,
                        a->x, xr, a->k, xq, dxh);
    if (err != cudaSuccess) return err;
    const size_t smem = me_smem<TILE>(a->k);
    const dim3 grid((unsigned)max_tiles, (unsigned)me_nb(a));
    if (a->dual) {
        err = cudaFuncSetAttribute(k_moe_mm_i8<true, TILE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err == cudaSuccess) err = cu_launch(k_moe_mm_i8<true, TILE>, grid, ME_THREADS, smem, s, *a, gr, xq, dxh);
    } else {
        err = cudaFuncSetAttribute(k_moe_mm_i8<false, TILE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (err == cudaSuccess) err = cu_launch(k_moe_mm_i8<false, TILE>, grid, ME_THREADS, smem, s, *a, gr, xq, dxh);
    }
    return err;
}

extern "C" cudaError_t mnv__cu_moe_mm_i8(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    if (!mnv__cu_moe_mm_i8_fits(a)) return cudaErrorInvalidValue;
    return me_run<ME_TILE>(a, scratch, me_groups_bytes(a), s);
}

static bool me_gq_fits(const mnv_cu_moe_args *a) {
    return a->T * a->kk >= MNV_CU_MOE_TILE_MIN_I8 && w16(&a->w) && (!a->dual || w16(&a->w2)) &&
           me_nb(a) <= 65535 && me_smem<GQ_TILE_ROWS>(a->k) <= cu_smem_optin();
}

static_assert(GQ_TILE_ROWS >= GQ_TILE, "me_gq: the groups (counted in tiles of GQ_TILE) fit the scratch");
static cudaError_t me_gq(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    return me_run<GQ_TILE_ROWS>(a, scratch, gq_groups_bytes(a), s);
}
