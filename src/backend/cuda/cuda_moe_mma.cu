/* The experts' products of many rows (prefill, large batches) on tensor
 * cores: the (token, slot) rows grouped by expert into tiles of 64, each
 * tile's x rows gathered once as two bf16 terms (hi + lo, within 2^-16 of
 * the f32 row), and a block multiplying one tile by 64 or 128 of its
 * expert's weight rows with mma.sync m16n8k16 (bf16 in, f32 sums).
 *
 * Only weights whose values bf16 holds exactly take this path (mxfp4: an
 * E2M1 code times a power of two; bf16): the products then differ from
 * f32 ones only by the activations' 2^-16 and the order of the sums. */
#include "backend/cuda/cuda_mmv.cuh"
#include "backend/cuda/cuda_moe.cuh"

static int mma_layout(const mnv_cu_moe_args *a);

#define TM 64     /* rows of one expert per tile (TM_FEW when experts get few rows each) */
#define TM_FEW 16
#define BK 32     /* k per step (one mxfp4 group) */
#define LDS 40    /* shared row stride in bf16: 80 bytes, so the fragment loads hit 32 banks */
#define THREADS 128

/* hi[s] and lo[s] = the two bf16 terms of the x row of sorted row s. */
static __global__ void k_gather_split(const float *x, int32_t per_slot, int64_t kk, int64_t k, const int32_t *sorted,
                                      uint16_t *hi, uint16_t *lo) {
    cu_grid_entry();
    int64_t s = blockIdx.x;
    int64_t ts = sorted[s];
    const float *row = x + (per_slot ? ts : ts / kk) * k;
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
        cu_split_bf16(row[j], &hi[s * k + j], &lo[s * k + j]);
    }
}

static __device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Eight mxfp4 codes (one word, element 0 the lowest nibble) times 2^(s-127)
 * as bf16: exact, the value has at most two significant bits. */
static __device__ __forceinline__ uint4 mx4_to_bf16(uint32_t w, uint32_t s) {
    float sc = e8m0(s);
    uint32_t h[8];
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = __float_as_uint(e2m1((w >> (4 * j)) & 15u) * sc) >> 16;
    return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

/* One tile (blockIdx.y) of T rows times BN weight rows (blockIdx.x); with
 * DUAL the block holds BN gate rows and the same BN up rows and writes
 * their SwiGLU. Warps: 2 x 2, each 32 tile rows by BN / 2 columns (T = 64),
 * or 1 x 4, each the 16 tile rows by BN / 4 columns (T = 16). */
template <int T> struct mma_shape {
    static constexpr int WM = T >= 32 ? T / 32 : 1, WN = 4 / WM; /* warps along rows, columns */
    static constexpr int MI = T / (16 * WM);                      /* 16-row mma tiles per warp */
};
template <int T, bool DUAL> static __host__ __device__ constexpr int mma_bn() { return (DUAL ? 4 : 8) * 8 * mma_shape<T>::WN; }

template <int F, bool DUAL, int TT>
static __global__ void __launch_bounds__(THREADS) k_moe_mma(mnv_cu_moe_args a, moe_groups gr, const uint16_t *xh,
                                                            const uint16_t *xl) {
    cu_grid_entry();
    constexpr int TM_ = TT, MI = mma_shape<TT>::MI, WM = mma_shape<TT>::WM;
    constexpr int NI = DUAL ? 4 : 8;        /* 8-column mma tiles per warp per weight */
    constexpr int BN = mma_bn<TT, DUAL>();  /* output columns per block */
    constexpr int WR = DUAL ? 2 * BN : BN;  /* weight rows in shared memory */
    constexpr int UA = 2 * TM_ * (BK / 8) / THREADS, UB = WR * (BK / 8) / THREADS; /* 16-byte units a thread moves */
    __shared__ __align__(16) uint16_t sa[2][TM_][LDS];
    __shared__ __align__(16) uint16_t sb[WR][LDS];
    const int32_t t = blockIdx.y;
    if (t >= *gr.n_tiles) return; /* the whole block */
    const int32_t e = gr.tile[3 * t], first = gr.tile[3 * t + 1], cnt = gr.tile[3 * t + 2];
    const int64_t n0 = (int64_t)blockIdx.x * BN, K = a.k;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const int wm = warp % WM, wn = warp / WM;

    /* what this thread loads: the A units (hi, lo) and the weight units */
    const uint4 *pa[UA];
    bool va[UA];
#pragma unroll
    for (int i = 0; i < UA; i++) {
        int u = tid + THREADS * i, which = u / (TM_ * 4), row = (u >> 2) % TM_, part = u & 3;
        va[i] = row < cnt;
        pa[i] = (const uint4 *)((which ? xl : xh) + (int64_t)(first + (va[i] ? row : 0)) * K + part * 8);
    }
    const uint8_t *pb[UB];
    const uint8_t *ps[UB];
#pragma unroll
    for (int i = 0; i < UB; i++) {
        int u = tid + THREADS * i, r = u >> 2, part = u & 3;
        const mnv_cu_weight &w = DUAL && r >= BN ? a.w2 : a.w;
        int64_t n = n0 + (DUAL && r >= BN ? r - BN : r);
        n = n < a.n ? n : a.n - 1;
        if (F == MMV_MX4) {
            pb[i] = (const uint8_t *)((const uint32_t *)w.w + e * w.we + n * w.ldw + part);
            ps[i] = (const uint8_t *)w.scales + e * w.se + n * w.lds;
        } else {
            pb[i] = (const uint8_t *)((const uint16_t *)w.w + e * w.we + n * w.ldw + part * 8);
            ps[i] = NULL;
        }
    }

    uint4 ra[UA], rb[UB];
    uint32_t rw[UB], rs[UB];
    auto load = [&](int64_t k0) {
#pragma unroll
        for (int i = 0; i < UA; i++) ra[i] = va[i] ? __ldg(pa[i] + k0 / 8) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int i = 0; i < UB; i++) {
            if (F == MMV_MX4) {
                rw[i] = __ldg((const uint32_t *)pb[i] + k0 / 8);
                rs[i] = __ldg(ps[i] + k0 / 32);
            } else {
                rb[i] = __ldg((const uint4 *)pb[i] + k0 / 8);
            }
        }
    };
    auto store = [&]() {
#pragma unroll
        for (int i = 0; i < UA; i++) {
            int u = tid + THREADS * i, which = u / (TM_ * 4), row = (u >> 2) % TM_, part = u & 3;
            *(uint4 *)&sa[which][row][part * 8] = ra[i];
        }
#pragma unroll
        for (int i = 0; i < UB; i++) {
            int u = tid + THREADS * i, r = u >> 2, part = u & 3;
            *(uint4 *)&sb[r][part * 8] = F == MMV_MX4 ? mx4_to_bf16(rw[i], rs[i]) : rb[i];
        }
    };

    float acc[MI][NI][4], acc2[MI][DUAL ? NI : 1][4];
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                acc[mi][ni][j] = 0.0f;
                if (DUAL) acc2[mi][DUAL ? ni : 0][j] = 0.0f;
            }

    load(0);
    store();
    __syncthreads();
    for (int64_t k0 = 0; k0 < K; k0 += BK) {
        if (k0 + BK < K) load(k0 + BK); /* the next step's loads in flight during this one's products */
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            uint32_t ah[MI][4], al[MI][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                int r = wm * (MI * 16) + mi * 16 + g;
                ah[mi][0] = *(const uint32_t *)&sa[0][r][ks + 2 * q];
                ah[mi][1] = *(const uint32_t *)&sa[0][r + 8][ks + 2 * q];
                ah[mi][2] = *(const uint32_t *)&sa[0][r][ks + 2 * q + 8];
                ah[mi][3] = *(const uint32_t *)&sa[0][r + 8][ks + 2 * q + 8];
                al[mi][0] = *(const uint32_t *)&sa[1][r][ks + 2 * q];
                al[mi][1] = *(const uint32_t *)&sa[1][r + 8][ks + 2 * q];
                al[mi][2] = *(const uint32_t *)&sa[1][r][ks + 2 * q + 8];
                al[mi][3] = *(const uint32_t *)&sa[1][r + 8][ks + 2 * q + 8];
            }
#pragma unroll
            for (int ni = 0; ni < NI; ni++) {
                int c = wn * (NI * 8) + ni * 8 + g;
                uint32_t b0 = *(const uint32_t *)&sb[c][ks + 2 * q], b1 = *(const uint32_t *)&sb[c][ks + 2 * q + 8];
#pragma unroll
                for (int mi = 0; mi < MI; mi++) {
                    mma_bf16(acc[mi][ni], ah[mi], b0, b1);
                    mma_bf16(acc[mi][ni], al[mi], b0, b1);
                }
                if (DUAL) {
                    uint32_t u0 = *(const uint32_t *)&sb[BN + c][ks + 2 * q];
                    uint32_t u1 = *(const uint32_t *)&sb[BN + c][ks + 2 * q + 8];
#pragma unroll
                    for (int mi = 0; mi < MI; mi++) {
                        mma_bf16(acc2[mi][DUAL ? ni : 0], ah[mi], u0, u1);
                        mma_bf16(acc2[mi][DUAL ? ni : 0], al[mi], u0, u1);
                    }
                }
            }
        }
        __syncthreads();
        if (k0 + BK < K) {
            store();
            __syncthreads();
        }
    }

    /* c[0], c[1]: row g, columns 2q, 2q + 1; c[2], c[3]: row g + 8 */
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = wm * (MI * 16) + mi * 16 + g + 8 * h;
            if (row >= cnt) continue;
            int64_t ts = gr.sorted[first + row];
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int64_t col = n0 + wn * (NI * 8) + ni * 8 + 2 * q + j;
                    if (col >= a.n) continue;
                    float v = acc[mi][ni][2 * h + j] + (a.bias ? a.bias[e * a.bs0 + col * a.bs1] : 0.0f);
                    if (DUAL) {
                        float u = acc2[mi][DUAL ? ni : 0][2 * h + j] +
                                  (a.bias2 ? a.bias2[e * a.b2s0 + col * a.b2s1] : 0.0f);
                        v = cu_swiglu(v, u, a.alpha, a.limit);
                    }
                    a.y[ts * a.n + col] = v;
                }
        }
}

/* ---- few rows (decode): one (token, slot) per block row ----
 * A warp multiplies 16 expert rows by the slot's x on tensor cores, x the
 * B operand's first column (the other seven zero): the codes become bf16
 * by byte permutes (about 2.5 instructions a code, against 7 for the
 * scalar decode, which left the kernel bound by its instructions, not by
 * memory). Thread (g, q) holds word q of each 16-byte group chunk of rows g
 * and g + 8, so the k order inside a group is permuted alike in A and B;
 * a group's two mma steps go to a scratch sum that its scale then folds
 * in. The block's four warps take interleaved pairs of groups and add
 * their sums in order. */

/* Four bf16 pairs (codes 0-1, 2-3, 4-5, 6-7 of word w) of E2M1 values. */
static __device__ __forceinline__ void mx4_pairs(uint32_t w, uint32_t *p) {
    const uint32_t lo = w & 0x7777u, hi = (w >> 16) & 0x7777u;
    /* bf16 high and low bytes of 0, .5, 1, 1.5, 2, 3, 4, 6 */
    const uint32_t hl = __byte_perm(0x3F3F3F00u, 0x40404040u, lo), ll = __byte_perm(0xC0800000u, 0xC0804000u, lo);
    const uint32_t hh = __byte_perm(0x3F3F3F00u, 0x40404040u, hi), lh = __byte_perm(0xC0800000u, 0xC0804000u, hi);
    p[0] = __byte_perm(ll, hl, 0x5140) | ((w << 12) & 0x8000u) | ((w << 24) & 0x80000000u);
    p[1] = __byte_perm(ll, hl, 0x7362) | ((w << 4) & 0x8000u) | ((w << 16) & 0x80000000u);
    p[2] = __byte_perm(lh, hh, 0x5140) | ((w >> 4) & 0x8000u) | ((w << 8) & 0x80000000u);
    p[3] = __byte_perm(lh, hh, 0x7362) | ((w >> 12) & 0x8000u) | (w & 0x80000000u);
}

/* One group of one weight's 16 rows (words w0 of row g, w8 of row g + 8)
 * times B (b: x's hi and lo terms in the group's permuted k order): the
 * group's unscaled sums c, the m16n8 C fragment. */
static __device__ __forceinline__ void dm_group(uint32_t w0, uint32_t w8, const uint32_t (*b)[4], float *c) {
    uint32_t p0[4], p8[4];
    mx4_pairs(w0, p0);
    mx4_pairs(w8, p8);
    const uint32_t a0[4] = {p0[0], p8[0], p0[1], p8[1]}, a1[4] = {p0[2], p8[2], p0[3], p8[3]};
    c[0] = c[1] = c[2] = c[3] = 0.0f;
    mma_bf16(c, a0, b[0][0], b[0][1]);
    mma_bf16(c, a0, b[1][0], b[1][1]);
    mma_bf16(c, a1, b[0][2], b[0][3]);
    mma_bf16(c, a1, b[1][2], b[1][3]);
}

template <bool DUAL> static __global__ void __launch_bounds__(THREADS) k_moe_dmma(mnv_cu_moe_args a) {
    cu_grid_entry();
    constexpr int R = DUAL ? 2 : 1; /* weights: gate (and up) */
    extern __shared__ __align__(16) uint16_t xs[]; /* hi[k], lo[k] */
    __shared__ float red[THREADS / 32][R][DM_ROWS][1];
    const int64_t ts = blockIdx.y, K = a.k, ng = K / 32;
    const int32_t e = a.ids[ts];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const float *x = a.x + (a.per_slot ? ts : ts / a.kk) * K;
    uint16_t *xh = xs, *xl = xs + K;
    /* x's two terms, four 16-byte loads a thread in flight at once */
    for (int64_t j0 = tid; j0 < K / 4; j0 += 4 * THREADS) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int64_t j = j0 + u * THREADS;
            v[u] = j < K / 4 ? __ldg((const float4 *)x + j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int64_t j = j0 + u * THREADS;
            if (j >= K / 4) break;
            uint32_t hw[2], lw[2];
            cu_split_bf16x2(v[u].x, v[u].y, &hw[0], &lw[0]);
            cu_split_bf16x2(v[u].z, v[u].w, &hw[1], &lw[1]);
            *(uint2 *)&xh[4 * j] = make_uint2(hw[0], hw[1]);
            *(uint2 *)&xl[4 * j] = make_uint2(lw[0], lw[1]);
        }
    }
    __syncthreads();
    const int64_t n0 = (int64_t)blockIdx.x * DM_ROWS;
    dm_rows<R> rw;
    dm_rows_of<R>(a, e, n0, g, q, &rw);
    float acc[R][2] = {};
    constexpr int64_t GSTEP = 2 * (THREADS / 32);
    dm_step<R> cur, nxt;
    if (2 * warp < ng) dm_load<R>(rw, 2 * warp, ng, &cur);
    for (int64_t g0 = 2 * warp; g0 < ng; g0 += GSTEP) {
        if (g0 + GSTEP < ng) dm_load<R>(rw, g0 + GSTEP, ng, &nxt);
#pragma unroll
        for (int gi = 0; gi < 2; gi++) {
            const int64_t grp = g0 + gi;
            if (grp >= ng) break;
            uint32_t b[2][4] = {}; /* hi, lo: x at codes 0-1, 2-3, 4-5, 6-7 of word q (column 0 only) */
            if (g == 0) {
                const uint2 h0 = *(const uint2 *)&xh[grp * 32 + 8 * q], h1 = *(const uint2 *)&xh[grp * 32 + 8 * q + 4];
                const uint2 l0 = *(const uint2 *)&xl[grp * 32 + 8 * q], l1 = *(const uint2 *)&xl[grp * 32 + 8 * q + 4];
                b[0][0] = h0.x, b[0][1] = h0.y, b[0][2] = h1.x, b[0][3] = h1.y;
                b[1][0] = l0.x, b[1][1] = l0.y, b[1][2] = l1.x, b[1][3] = l1.y;
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                float t[4];
                dm_group(cur.w[gi][r][0], cur.w[gi][r][1], b, t);
                acc[r][0] = fmaf(t[0], e8m0(cur.s[gi][r][0]), acc[r][0]); /* row g, column 0 (q = 0) */
                acc[r][1] = fmaf(t[2], e8m0(cur.s[gi][r][1]), acc[r][1]); /* row g + 8 */
            }
        }
        cur = nxt;
    }
    if (q == 0)
#pragma unroll
        for (int r = 0; r < R; r++) {
            red[warp][r][g][0] = acc[r][0];
            red[warp][r][g + 8][0] = acc[r][1];
        }
    __syncthreads();
    const int32_t row_ts = (int32_t)ts;
    if (tid < DM_ROWS) dm_out<DUAL, THREADS / 32, 1>(a, red, e, &row_ts, 1, n0, tid, 0);
}

extern "C" int mnv__cu_moe_dmma_fits(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    /* x's two terms and the block's sums (static) within the 48 KB a launch gets without opting in */
    size_t red = (size_t)(THREADS / 32) * (a->dual ? 2 : 1) * DM_ROWS * 4;
    const int64_t below = a->gmma_min_rows > 0 ? a->gmma_min_rows : MNV_CU_MOE_GROUP_MIN;
    return a->mma_min_rows > 0 && rows < a->mma_min_rows && rows < below && rows <= 65535 && mma_layout(a) == MMV_MX4 &&
           ((uintptr_t)a->x & 15) == 0 &&
           (size_t)a->k * 4 + red <= 48 * 1024 && (a->n + DM_ROWS - 1) / DM_ROWS <= INT32_MAX;
}

extern "C" cudaError_t mnv__cu_moe_dmma(const mnv_cu_moe_args *a, cudaStream_t s) {
    if (!mnv__cu_moe_dmma_fits(a)) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((a->n + DM_ROWS - 1) / DM_ROWS), (unsigned)(a->T * a->kk));
    size_t sm = (size_t)a->k * 4;
    if (a->dual)
        cu_launch(k_moe_dmma<true>, grid, THREADS, sm, s, *a);
    else
        cu_launch(k_moe_dmma<false>, grid, THREADS, sm, s, *a);
    CU_CHECK_LAUNCH();
}

/* ---- batched decode: (token, slot) rows grouped by expert, up to eight a
 * tile ----
 * As the decode kernel, with B's eight columns the x rows of one tile: a
 * weight row read serves all of them (one expert's rows are read once per
 * tile, not once per slot). Thread (g, q) reads tile row g's x a group at
 * a time (through L1 and L2) and splits it into its bf16 terms itself;
 * past the tile's rows its column is zero. */
#define GM_TILE 8
template <bool DUAL> static __global__ void __launch_bounds__(THREADS) k_moe_gmma(mnv_cu_moe_args a, moe_groups gr) {
    cu_grid_entry();
    constexpr int R = DUAL ? 2 : 1;
    __shared__ float red[THREADS / 32][R][DM_ROWS][GM_TILE];
    const int32_t t = blockIdx.y;
    if (t >= *gr.n_tiles) return; /* the whole block */
    const int32_t e = gr.tile[3 * t], first = gr.tile[3 * t + 1], cnt = gr.tile[3 * t + 2];
    const int64_t K = a.k, ng = K / 32;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const bool has = g < cnt;
    const int64_t tx = has ? gr.sorted[first + g] : 0;
    const float *x = a.x + (a.per_slot ? tx : tx / a.kk) * K + 8 * q;
    const int64_t n0 = (int64_t)blockIdx.x * DM_ROWS;
    dm_rows<R> rw;
    dm_rows_of<R>(a, e, n0, g, q, &rw);
    float acc[R][2][2] = {}; /* weight row g (+ 8 h), tile rows 2q + j */
    constexpr int64_t GSTEP = 2 * (THREADS / 32);
    dm_step<R> cur, nxt;
    float4 xc[2][2], xn[2][2]; /* x of the step multiplied and of the next, as the weights */
    auto load_x = [&](int64_t g0, float4(*xv)[2]) {
#pragma unroll
        for (int gi = 0; gi < 2; gi++) {
            const int64_t grp = g0 + gi < ng ? g0 + gi : g0;
            xv[gi][0] = has ? __ldg((const float4 *)(x + grp * 32)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            xv[gi][1] = has ? __ldg((const float4 *)(x + grp * 32 + 4)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    };
    if (2 * warp < ng) {
        dm_load<R>(rw, 2 * warp, ng, &cur);
        load_x(2 * warp, xc);
    }
    for (int64_t g0 = 2 * warp; g0 < ng; g0 += GSTEP) {
        if (g0 + GSTEP < ng) {
            dm_load<R>(rw, g0 + GSTEP, ng, &nxt);
            load_x(g0 + GSTEP, xn);
        }
#pragma unroll
        for (int gi = 0; gi < 2; gi++) {
            const int64_t grp = g0 + gi;
            if (grp >= ng) break;
            uint32_t b[2][4] = {}; /* hi, lo: x at codes 0-1, 2-3, 4-5, 6-7 of word q */
            if (has) {
                const float4 v0 = xc[gi][0], v1 = xc[gi][1];
                const float v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
                for (int i = 0; i < 4; i++) cu_split_bf16x2(v[2 * i], v[2 * i + 1], &b[0][i], &b[1][i]);
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                float c[4];
                dm_group(cur.w[gi][r][0], cur.w[gi][r][1], b, c);
                const float s0 = e8m0(cur.s[gi][r][0]), s8 = e8m0(cur.s[gi][r][1]);
                acc[r][0][0] = fmaf(c[0], s0, acc[r][0][0]);
                acc[r][0][1] = fmaf(c[1], s0, acc[r][0][1]);
                acc[r][1][0] = fmaf(c[2], s8, acc[r][1][0]);
                acc[r][1][1] = fmaf(c[3], s8, acc[r][1][1]);
            }
        }
        cur = nxt;
#pragma unroll
        for (int gi = 0; gi < 2; gi++) xc[gi][0] = xn[gi][0], xc[gi][1] = xn[gi][1];
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int j = 0; j < 2; j++) red[warp][r][g + 8 * h][2 * q + j] = acc[r][h][j];
    __syncthreads();
    /* THREADS = DM_ROWS x GM_TILE: a thread an output */
    dm_out<DUAL, THREADS / 32, GM_TILE>(a, red, e, gr.sorted + first, cnt, n0, tid / GM_TILE, tid % GM_TILE);
}
static_assert(THREADS == DM_ROWS * GM_TILE, "k_moe_gmma: a thread per output of a block");

extern "C" int mnv__cu_moe_gmma_fits(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    return a->gmma_min_rows > 0 && rows >= a->gmma_min_rows && a->mma_min_rows > 0 && rows < a->mma_min_rows &&
           mma_layout(a) == MMV_MX4 && ((uintptr_t)a->x & 15) == 0 && moe_max_tiles(rows, a->E, GM_TILE) <= 65535 &&
           a->E <= 4096 && (a->n + DM_ROWS - 1) / DM_ROWS <= INT32_MAX && rows <= INT32_MAX;
}

extern "C" size_t mnv__cu_moe_gmma_scratch(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    return (size_t)(rows + 3 * moe_max_tiles(rows, a->E, GM_TILE) + 1) * 4;
}

extern "C" cudaError_t mnv__cu_moe_gmma(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    if (!mnv__cu_moe_gmma_fits(a)) return cudaErrorInvalidValue;
    int64_t rows = a->T * a->kk, max_tiles = moe_max_tiles(rows, a->E, GM_TILE);
    int32_t *base = (int32_t *)scratch;
    moe_groups gr = {base, base + rows, base + rows + 3 * max_tiles};
    cu_launch(k_moe_group, 1, 1024, (size_t)(3 * a->E) * 4, s, a->ids, (int32_t)rows, (int32_t)a->E, GM_TILE, gr);
    dim3 grid((unsigned)((a->n + DM_ROWS - 1) / DM_ROWS), (unsigned)max_tiles);
    if (a->dual)
        cu_launch(k_moe_gmma<true>, grid, THREADS, 0, s, *a, gr);
    else
        cu_launch(k_moe_gmma<false>, grid, THREADS, 0, s, *a, gr);
    CU_CHECK_LAUNCH();
}

static int mma_layout(const mnv_cu_moe_args *a) {
    int f = mmv_layout(&a->w, a->k);
    if (a->k % BK || (f != MMV_MX4 && f != MMV_BF16) || (f == MMV_MX4 && a->w.group_size != 32)) return MMV_NONE;
    if (a->dual && (mmv_layout(&a->w2, a->k) != f || a->w2.group_size != a->w.group_size)) return MMV_NONE;
    return f;
}

/* Rows of a tile: mma_tile (16 or 64), 64 by default, or with mma_tile -1
 * 16 when the experts get fewer than 32 rows each on average (batched
 * decode: a tile's empty rows cost products all the same). */
static int mma_tile(const mnv_cu_moe_args *a) {
    if (a->mma_tile == TM || a->mma_tile == TM_FEW) return a->mma_tile;
    if (a->mma_tile >= 0) return TM;
    return a->T * a->kk < 32 * a->E ? TM_FEW : TM;
}

extern "C" int mnv__cu_moe_mma_fits(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    return a->mma_min_rows > 0 && rows >= a->mma_min_rows && mma_layout(a) != MMV_NONE &&
           moe_max_tiles(rows, a->E, mma_tile(a)) <= 65535 && a->E <= 4096 && a->n <= 65535LL * 64;
}

/* sorted, tiles and their count (rounded up to 16 bytes; as many as the
 * smaller tiles can make), then hi and lo */
static size_t groups_bytes(int64_t rows, int64_t E) {
    return ((size_t)(rows + 3 * moe_max_tiles(rows, E, TM_FEW) + 1) * 4 + 15) & ~(size_t)15;
}

extern "C" size_t mnv__cu_moe_mma_scratch(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    return groups_bytes(rows, a->E) + 2 * (size_t)rows * (size_t)a->k * 2;
}

template <int TT>
static cudaError_t mma_go(const mnv_cu_moe_args *a, int f, moe_groups gr, const uint16_t *hi, const uint16_t *lo,
                          int64_t max_tiles, cudaStream_t s) {
    const int bn = a->dual ? mma_bn<TT, true>() : mma_bn<TT, false>();
    dim3 grid((unsigned)((a->n + bn - 1) / bn), (unsigned)max_tiles);
    if (f == MMV_MX4)
        a->dual ? cu_launch(k_moe_mma<MMV_MX4, true, TT>, grid, THREADS, 0, s, *a, gr, hi, lo)
                : cu_launch(k_moe_mma<MMV_MX4, false, TT>, grid, THREADS, 0, s, *a, gr, hi, lo);
    else
        a->dual ? cu_launch(k_moe_mma<MMV_BF16, true, TT>, grid, THREADS, 0, s, *a, gr, hi, lo)
                : cu_launch(k_moe_mma<MMV_BF16, false, TT>, grid, THREADS, 0, s, *a, gr, hi, lo);
    CU_CHECK_LAUNCH();
}

extern "C" cudaError_t mnv__cu_moe_mma(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    const int tm = mma_tile(a);
    int64_t rows = a->T * a->kk, max_tiles = moe_max_tiles(rows, a->E, tm);
    int f = mma_layout(a);
    if (f == MMV_NONE || max_tiles > 65535 || rows > INT32_MAX) return cudaErrorInvalidValue;
    int32_t *base = (int32_t *)scratch;
    moe_groups gr = {base, base + rows, base + rows + 3 * max_tiles};
    uint16_t *hi = (uint16_t *)((uint8_t *)scratch + groups_bytes(rows, a->E)), *lo = hi + rows * a->k;
    cu_launch(k_moe_group, 1, 1024, (size_t)(3 * a->E) * 4, s, a->ids, (int32_t)rows, (int32_t)a->E, tm, gr);
    cu_launch(k_gather_split, (unsigned)rows, 256, 0, s, a->x, a->per_slot, a->kk, a->k, gr.sorted, hi, lo);
    if (tm == TM) return mma_go<TM>(a, f, gr, hi, lo, max_tiles, s);
    return mma_go<TM_FEW>(a, f, gr, hi, lo, max_tiles, s);
}
