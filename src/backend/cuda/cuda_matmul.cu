/* Matrix products on CUDA: float and MLX-quantized weights, plain and per
 * expert. Weights whose rows read in 16-byte chunks (cuda_mmv.cuh: f32,
 * bf16, f16, affine 8 and 4 bits, mxfp4) take the chunked kernels, with
 * the fused epilogues; the rest take the element-wise ones below, where one
 * warp computes one weight row's dot products with up to PLAIN_MR rows of x.
 * cuda_gemm.c sends large products to cuBLAS. */
#include <string.h>

#include "backend/cuda/cuda_mmv.cuh"
#include "backend/cuda/cuda_moe.cuh"

#define PLAIN_MR 4 /* rows of x per warp in plain products */
#define MOE_MR 8  /* (token, slot) rows of one expert per warp in grouped expert products */
#define WARPS 8

/* acc[r] += dot(x_r, row) for the lane's share of the row; the caller sums
 * over the warp. xs: R row pointers (rows >= nr are not read). */
template <int R>
static __device__ __forceinline__ void dot_row(const mnv_cu_weight &w, int64_t e, int64_t n, const float *const *xs,
                                               int nr, int64_t K, float *acc) {
    const int lane = threadIdx.x & 31;
    if (w.mode == CU_QNONE) {
        const int64_t base = e * w.we + n * w.ldw;
        const int es = w.wtype == MNV_CU_F32 ? 4 : 2, per = 16 / es; /* elements in 16 bytes */
        const uint8_t *p = (const uint8_t *)w.w + base * es;
        if (((uintptr_t)p & 15) == 0 && K % per == 0) { /* 16 bytes a lane */
            for (int64_t qi = lane; qi < K / per; qi += 32) {
                uint4 v4 = __ldg((const uint4 *)p + qi);
                float v[8] = {0};
                if (w.wtype == MNV_CU_F32) {
                    v[0] = __uint_as_float(v4.x), v[1] = __uint_as_float(v4.y);
                    v[2] = __uint_as_float(v4.z), v[3] = __uint_as_float(v4.w);
                } else {
                    const uint32_t wd[4] = {v4.x, v4.y, v4.z, v4.w};
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        uint16_t lo = (uint16_t)(wd[c] & 0xffff), hi = (uint16_t)(wd[c] >> 16);
                        if (w.wtype == MNV_CU_BF16) {
                            v[2 * c] = bf16_bits_to_f32(lo), v[2 * c + 1] = bf16_bits_to_f32(hi);
                        } else {
                            v[2 * c] = __half2float(__ushort_as_half(lo));
                            v[2 * c + 1] = __half2float(__ushort_as_half(hi));
                        }
                    }
                }
                int64_t j0 = qi * per;
#pragma unroll
                for (int c = 0; c < 8; c++)
#pragma unroll
                    for (int r = 0; r < R; r++)
                        if (c < per && r < nr) acc[r] += v[c] * xs[r][j0 + c];
            }
            return;
        }
        for (int64_t j = lane; j < K; j += 32) {
            float v = cu_load(w.w, w.wtype, base + j);
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < nr) acc[r] += v * xs[r][j];
        }
        return;
    }
    const uint32_t *row = (const uint32_t *)w.w + e * w.we + n * w.ldw;
    const int64_t so = e * w.se + n * w.lds;
    const size_t ses = w.mode == CU_QAFFINE ? (w.scale_type == MNV_CU_F32 ? 4 : 2) : 1;
    const void *sc = (const uint8_t *)w.scales + so * ses;
    const void *bi = w.biases ? (const uint8_t *)w.biases + so * ses : NULL;
    const int64_t gw = (int64_t)w.group_size * w.bits / 32; /* words per group */
    if ((w.bits == 4 || w.bits == 8) && gw % 4 == 0 && K % (128 / w.bits) == 0 && ((uintptr_t)row & 15) == 0) {
        /* 16 bytes a lane (4 words of one group): decode reads at bandwidth */
        const int epw = 32 / w.bits;
        const uint32_t mask = (1u << w.bits) - 1u;
        const int64_t quads = K / (4 * epw);
        const uint4 *row4 = (const uint4 *)row;
        for (int64_t qi = lane; qi < quads; qi += 32) {
            uint4 v4 = __ldg(row4 + qi);
            const uint32_t wd[4] = {v4.x, v4.y, v4.z, v4.w};
            int64_t j0 = qi * 4 * epw;
            cu_group g = cu_group_of(&w, sc, bi, j0 / w.group_size);
#pragma unroll
            for (int c = 0; c < 4; c++)
#pragma unroll
                for (int q = 0; q < 8; q++) {
                    if (q >= epw) break;
                    float v = cu_code(w.mode, (wd[c] >> (q * w.bits)) & mask) * g.scale + g.bias;
                    int64_t j = j0 + c * epw + q;
#pragma unroll
                    for (int r = 0; r < R; r++)
                        if (r < nr) acc[r] += v * xs[r][j];
                }
        }
        return;
    }
    if (32 % w.bits == 0 && K % (32 / w.bits) == 0) { /* 2, 4, 8 bits: a word holds whole elements of one group */
        const int epw = 32 / w.bits;
        const uint32_t mask = (1u << w.bits) - 1u;
        const int64_t words = K / epw;
        for (int64_t wi = lane; wi < words; wi += 32) {
            uint32_t word = row[wi];
            int64_t j0 = wi * epw;
            cu_group g = cu_group_of(&w, sc, bi, j0 / w.group_size);
            for (int q = 0; q < epw; q++) {
                float v = cu_code(w.mode, (word >> (q * w.bits)) & mask) * g.scale + g.bias;
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (r < nr) acc[r] += v * xs[r][j0 + q];
            }
        }
        return;
    }
    for (int64_t j = lane; j < K; j += 32) { /* 3, 5, 6 bits: elements may straddle words */
        cu_group g = cu_group_of(&w, sc, bi, j / w.group_size);
        float v = cu_code(w.mode, cu_unpack(row, w.bits, j)) * g.scale + g.bias;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (r < nr) acc[r] += v * xs[r][j];
    }
}


/* ---- the chunked kernels (cuda_mmv.cuh) ----
 * A block of MMV_THREADS threads is cut into row groups of wk warps; a
 * group computes RW weight rows against MX rows of x, its wk warps taking
 * interleaved chunks of the rows (wk grows with k, never with the number
 * of rows of x), then summing through shared memory in a fixed order. */
#define MMV_THREADS 128
#define MMV_WARPS (MMV_THREADS / 32)

/* Warps per row group: from the rows and chunks of the weight alone (never
 * the rows of x, which would change the order of a row's sums): enough
 * warps in flight to cover the device, each with two chunks or more. Up to
 * 64 rows (a router), one warp a group. */
static int mmv_wk(int64_t n, int64_t nchunks) {
    if (n <= 64) return 1;
    int wk = 1;
    while (wk < 4 && (n + 3) / 4 * wk < 4096 && nchunks >= 96 * wk) wk *= 2;
    return wk;
}

/* The sums of the block's groups: red[warp][r * MX + c] on return, for the
 * group's first warp to read (after the barrier). */
template <int RW, int MX>
static __device__ __forceinline__ float mmv_reduce(float (*acc)[MX], float (*red)[RW * MX], int wk, int *pair) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
        for (int c = 0; c < MX; c++) {
            float v = warp_sum(acc[r][c]);
            if (lane == 0) red[warp][r * MX + c] = v;
        }
    __syncthreads();
    *pair = -1;
    if (warp % wk != 0 || lane >= RW * MX) return 0.0f;
    float v = red[warp][lane];
    for (int i = 1; i < wk; i++) v += red[warp + i][lane];
    *pair = lane;
    return v;
}

/* Up to MMV_SEGS products of one x (each its own weight, rows, output and
 * epilogue) in one launch: segment i owns blocks [first[i], first[i + 1]). */
#define MMV_SEGS 3
typedef struct {
    mnv_cu_matmul_args seg[MMV_SEGS];
    int64_t first[MMV_SEGS + 1];
    int wk[MMV_SEGS]; /* each its own, as when run alone */
    int n;
    int prefetch; /* the first rows of x's blocks send their weights to L2 before the entry */
} mmv_segs;

template <int F, int RW, int MX> static __global__ void __launch_bounds__(MMV_THREADS) k_mmv(mmv_segs sg) {
    constexpr int E = mmv_fmt<F>::epc;
    __shared__ float red[MMV_WARPS][RW * MX];
    int si = 0;
    while (si + 1 < sg.n && (int64_t)blockIdx.x >= sg.first[si + 1]) si++;
    const mnv_cu_matmul_args &a = sg.seg[si];
    const int wk = sg.wk[si];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t bx = (int64_t)blockIdx.x - sg.first[si];
    const int64_t n0 = (bx * (MMV_WARPS / wk) + warp / wk) * RW, m0 = (int64_t)blockIdx.y * MX;
    mmv_row rows[RW];
    const float *xs[MX];
#pragma unroll
    for (int r = 0; r < RW; r++) rows[r] = mmv_row_of(a.w, 0, n0 + r < a.n ? n0 + r : a.n - 1);
    const int64_t t0 = (warp % wk) * 32 + lane, step = 32 * wk, nchunks = a.k / E;
    if (sg.prefetch && blockIdx.y == 0 && n0 < a.n) /* the weights on their way before the wait */
        for (int64_t qi = t0, i = 0; qi < nchunks && i < 16; qi += step, i++)
#pragma unroll
            for (int r = 0; r < RW; r++) cu_prefetch_l2(rows[r].q + qi);
    cu_grid_entry();
#pragma unroll
    for (int c = 0; c < MX; c++) xs[c] = a.x + (m0 + c < a.m ? m0 + c : a.m - 1) * a.ldx;
    float acc[RW][MX];
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
        for (int c = 0; c < MX; c++) acc[r][c] = 0.0f;
    if (n0 < a.n) mmv_accum<F, RW, MX>(a.w, rows, xs, nchunks, t0, step, acc);
    int pair;
    float v = mmv_reduce<RW, MX>(acc, red, wk, &pair);
    if (pair < 0) return;
    int64_t n = n0 + pair / MX, m = m0 + pair % MX;
    if (n >= a.n || m >= a.m) return;
    if (a.bias) v = v + cu_load(a.bias, a.bias_type, n);
    if (a.res) v = a.res[m * a.ldr + n] + v;
    a.y[m * a.ldy + n] = v;
}

template <int F, int RW, int MX> static cudaError_t mmv_go(mmv_segs *sg, cudaStream_t s) {
    int64_t gy = (sg->seg[0].m + MX - 1) / MX;
    sg->first[0] = 0;
    for (int i = 0; i < sg->n; i++) {
        sg->wk[i] = mmv_wk(sg->seg[i].n, sg->seg[i].k / mmv_fmt<F>::epc);
        int64_t per_block = (int64_t)(MMV_WARPS / sg->wk[i]) * RW;
        sg->first[i + 1] = sg->first[i] + (sg->seg[i].n + per_block - 1) / per_block;
    }
    if (gy > 65535 || sg->first[sg->n] > INT32_MAX) return cudaErrorInvalidValue;
    sg->prefetch = mnv__cu_pdl;
    cu_launch(k_mmv<F, RW, MX>, dim3((unsigned)sg->first[sg->n], (unsigned)gy), MMV_THREADS, 0, s, *sg);
    CU_CHECK_LAUNCH();
}

template <int F> static cudaError_t mmv_rows(mmv_segs *sg, cudaStream_t s) {
    int64_t m = sg->seg[0].m;
    if (m == 1) return mmv_go<F, 4, 1>(sg, s);
    if (m == 2) return mmv_go<F, 4, 2>(sg, s);
    if (m <= 4) return mmv_go<F, 2, 4>(sg, s);
    return mmv_go<F, 2, 8>(sg, s);
}

/* Products of one x, m and k, their weights of one layout. */
static cudaError_t mmv_launch(const mnv_cu_matmul_args *a, int n, cudaStream_t s) {
    if (n < 1 || n > MMV_SEGS) return cudaErrorInvalidValue;
    if (mnv__cu_mm_i8_ready(a, n)) return mnv__cu_mm_i8(a, n, s);
    if (mnv__cu_mmv_i8_fits(a, n)) return mnv__cu_mmv_i8(a, n, s);
    if (mnv__cu_mmv1_i8_fits(a, n)) return mnv__cu_mmv1_i8(a, n, s);
    mmv_segs sg;
    memset(&sg, 0, sizeof sg);
    sg.n = n;
    int f = mmv_layout(&a[0].w, a[0].k);
    for (int i = 0; i < n; i++) {
        if (mmv_layout(&a[i].w, a[i].k) != f || a[i].x != a[0].x || a[i].ldx != a[0].ldx || a[i].m != a[0].m ||
            a[i].k != a[0].k || a[i].w.mode != a[0].w.mode || a[i].w.scale_type != a[0].w.scale_type ||
            a[i].w.group_size != a[0].w.group_size || a[i].n <= 0)
            return cudaErrorInvalidValue;
        sg.seg[i] = a[i];
    }
    switch (f) {
    case MMV_F32: return mmv_rows<MMV_F32>(&sg, s);
    case MMV_BF16: return mmv_rows<MMV_BF16>(&sg, s);
    case MMV_F16: return mmv_rows<MMV_F16>(&sg, s);
    case MMV_A8: return mmv_rows<MMV_A8>(&sg, s);
    case MMV_A4: return mmv_rows<MMV_A4>(&sg, s);
    case MMV_MX4: return mmv_rows<MMV_MX4>(&sg, s);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t mnv_cu_matmul_shared(const mnv_cu_matmul_args *a, int n, cudaStream_t s) {
    for (int i = 0; i < n; i++)
        if (!mnv_cu_mmv_fast(&a[i].w, a[i].k, a[i].x, a[i].ldx)) return cudaErrorInvalidValue;
    return a[0].m <= 0 ? cudaSuccess : mmv_launch(a, n, s);
}

extern "C" int mnv_cu_mmv_fast(const mnv_cu_weight *w, int64_t k, const float *x, int64_t ldx) {
    return mmv_layout(w, k) != MMV_NONE && ((uintptr_t)x & 15) == 0 && ldx % 4 == 0;
}

/* The top kk of a row's n logits (lg, shared) and their softmax, by one
 * warp: each lane ranks its logit (larger first, ties to the lower index,
 * the order mnv__topk_row gives; one thread inserting 32 logits in turn
 * took 5 us). A row with a NaN takes mnv__topk_row itself: there the order
 * depends on the visiting order. */
static __device__ void router_pick(const float *lg, int32_t *ids, int n, int kk, int32_t *out_ids, float *out_w) {
    const int lane = threadIdx.x & 31;
    const float mine = lane < n ? lg[lane] : -INFINITY;
    if (__any_sync(0xffffffffu, lane < n && isnan(mine))) {
        if (lane == 0) mnv__topk_row(lg, n, kk, ids);
    } else {
        int rank = 0;
        for (int j = 0; j < n; j++) {
            const float o = __shfl_sync(0xffffffffu, mine, j);
            rank += o > mine || (o == mine && j < lane);
        }
        if (lane < n && rank < kk) ids[rank] = lane;
    }
    __syncwarp();
    if (lane != 0) return;
    cu_gather_softmax_row(lg, ids, kk, out_w);
    for (int32_t j = 0; j < kk; j++) out_ids[j] = ids[j];
}

/* The router, one block a row of x: warp r sums row r as the chunked
 * product does for up to 64 rows (one warp a group, lanes on interleaved
 * chunks), so the logits match the product's bits; then warp 0 picks. */
template <int F> static __global__ void __launch_bounds__(MNV_CU_ROUTER_MAX * 32) k_router(mnv_cu_router_args a) {
    cu_grid_entry();
    constexpr int E = mmv_fmt<F>::epc;
    __shared__ float lg[MNV_CU_ROUTER_MAX];
    __shared__ int32_t ids[MNV_CU_ROUTER_MAX];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t t = blockIdx.x;
    mmv_row row = mmv_row_of(a.mm.w, 0, warp);
    const float *xs[1] = {a.mm.x + t * a.mm.ldx};
    float acc[1][1] = {{0.0f}};
    mmv_accum<F, 1, 1>(a.mm.w, &row, xs, a.mm.k / E, lane, 32, acc);
    float v = warp_sum(acc[0][0]);
    if (a.mm.bias) v = v + cu_load(a.mm.bias, a.mm.bias_type, warp);
    if (lane == 0) lg[warp] = v;
    __syncthreads();
    if (warp == 0) router_pick(lg, ids, a.mm.n, a.kk, a.ids + t * a.kk, a.w + t * a.kk);
}

/* A lane's share of one row's product as mmv_accum<F, 1, 1> computes it
 * with step 32 (the same chunks, the same operations in the same order),
 * with up to RS_BATCH chunks' weights, x and scales asked for before the
 * first is used: mmv_accum waits on x and the scales once a chunk, six
 * round trips to L2 in a row of a gpt-oss router. */
#define RS_BATCH 6
template <int F>
static __device__ __forceinline__ float router_accum(const mnv_cu_weight &w, const mmv_row &row, const float *x,
                                                     int64_t nchunks, int lane) {
    constexpr int E = mmv_fmt<F>::epc;
    constexpr bool grouped = F == MMV_A8 || F == MMV_A4 || F == MMV_MX4;
    constexpr bool affine = F == MMV_A8 || F == MMV_A4;
    float acc = 0.0f;
    for (int64_t base = lane; base < nchunks; base += 32 * RS_BATCH) {
        uint4 q[RS_BATCH];
        float4 xv[RS_BATCH][E / 4];
        float sc[RS_BATCH], bi[RS_BATCH];
#pragma unroll
        for (int u = 0; u < RS_BATCH; u++) {
            const int64_t qi = base + 32 * u;
            if (qi >= nchunks) break;
            q[u] = __ldg(row.q + qi);
#pragma unroll
            for (int j4 = 0; j4 < E / 4; j4++) xv[u][j4] = __ldg((const float4 *)x + qi * (E / 4) + j4);
            if (grouped) mmv_group<F>(w, row.sc, row.bi, qi * E, &sc[u], &bi[u]);
        }
#pragma unroll
        for (int u = 0; u < RS_BATCH; u++) {
            if (base + 32 * u >= nchunks) break;
            float part = 0.0f, sx = 0.0f;
#pragma unroll
            for (int j4 = 0; j4 < E / 4; j4++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float v = mmv_code<F>(q[u], 4 * j4 + e);
                    const float xe = e == 0 ? xv[u][j4].x : e == 1 ? xv[u][j4].y : e == 2 ? xv[u][j4].z : xv[u][j4].w;
                    if (affine) sx += xe;
                    if (grouped)
                        part = fmaf(v, xe, part);
                    else
                        acc = fmaf(v, xe, acc);
                }
            if (grouped) {
                acc = fmaf(sc[u], part, acc);
                if (affine) acc = fmaf(bi[u], sx, acc);
            }
        }
    }
    return acc;
}

/* The router at a few rows of x: block (r, t) is one warp summing logit r
 * of row t as k_router's warp r does (the same bits) on an SM of its own,
 * where k_router's 32 warps share one SM's L1 (13 us a gpt-oss layer on an
 * H100, mostly waiting on it). The row's weights are asked into L2 before
 * the entry. Each block stores its logit and counts itself done; the last
 * of row t picks, then zeroes the count for the next launch. */
template <int F> static __global__ void __launch_bounds__(32) k_router_split(mnv_cu_router_args a) {
    constexpr int E = mmv_fmt<F>::epc;
    __shared__ float lg[MNV_CU_ROUTER_MAX];
    __shared__ int32_t ids[MNV_CU_ROUTER_MAX];
    const int lane = threadIdx.x, r = blockIdx.x, n = a.mm.n;
    const int64_t t = blockIdx.y, nchunks = a.mm.k / E;
    float *slg = (float *)a.state + t * MNV_CU_ROUTER_MAX;
    unsigned *done = (unsigned *)((float *)a.state + MNV_CU_ROUTER_SPLIT * MNV_CU_ROUTER_MAX) + t;
    mmv_row row = mmv_row_of(a.mm.w, 0, r);
    for (int64_t off = (int64_t)lane * 128; off < nchunks * 16; off += 32 * 128)
        cu_prefetch_l2((const uint8_t *)row.q + off);
    cu_grid_entry();
    float v = warp_sum(router_accum<F>(a.mm.w, row, a.mm.x + t * a.mm.ldx, nchunks, lane));
    if (a.mm.bias) v = v + cu_load(a.mm.bias, a.mm.bias_type, r);
    unsigned before = 0;
    if (lane == 0) {
        slg[r] = v;
        __threadfence();
        before = atomicAdd(done, 1u);
    }
    if (__shfl_sync(0xffffffffu, before, 0) != (unsigned)n - 1) return;
    __threadfence();
    __syncwarp(); /* lanes 1-31 after lane 0's count (a shuffle orders no memory) */
    if (lane < n) lg[lane] = __ldcg(slg + lane);
    __syncwarp();
    router_pick(lg, ids, n, a.kk, a.ids + t * a.kk, a.w + t * a.kk);
    if (lane == 0) *done = 0;
}

template <int F> static cudaError_t router_go(const mnv_cu_router_args *a, cudaStream_t s) {
    if (a->state && a->mm.m <= MNV_CU_ROUTER_SPLIT)
        cu_launch(k_router_split<F>, dim3((unsigned)a->mm.n, (unsigned)a->mm.m), 32, 0, s, *a);
    else
        cu_launch(k_router<F>, dim3((unsigned)a->mm.m), dim3((unsigned)(32 * a->mm.n)), 0, s, *a);
    CU_CHECK_LAUNCH();
}

extern "C" cudaError_t mnv_cu_router(const mnv_cu_router_args *a, cudaStream_t s) {
    if (a->mm.n < 1 || a->mm.n > MNV_CU_ROUTER_MAX || a->kk < 1 || a->kk > a->mm.n ||
        !mnv_cu_mmv_fast(&a->mm.w, a->mm.k, a->mm.x, a->mm.ldx) || a->mm.m > INT32_MAX)
        return cudaErrorInvalidValue;
    if (a->mm.m <= 0) return cudaSuccess;
    switch (mmv_layout(&a->mm.w, a->mm.k)) {
    case MMV_F32: return router_go<MMV_F32>(a, s);
    case MMV_BF16: return router_go<MMV_BF16>(a, s);
    case MMV_F16: return router_go<MMV_F16>(a, s);
    case MMV_A8: return router_go<MMV_A8>(a, s);
    case MMV_A4: return router_go<MMV_A4>(a, s);
    case MMV_MX4: return router_go<MMV_MX4>(a, s);
    default: return cudaErrorInvalidValue;
    }
}

static __global__ void __launch_bounds__(WARPS * 32) k_matmul(mnv_cu_matmul_args a) {
    cu_grid_entry();
    int64_t n = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    int64_t m0 = (int64_t)blockIdx.y * PLAIN_MR;
    if (n >= a.n) return;
    int nr = (int)(a.m - m0 < PLAIN_MR ? a.m - m0 : PLAIN_MR);
    const float *xs[PLAIN_MR];
    for (int r = 0; r < PLAIN_MR; r++) xs[r] = a.x + (m0 + (r < nr ? r : 0)) * a.ldx;
    float acc[PLAIN_MR] = {0};
    dot_row<PLAIN_MR>(a.w, 0, n, xs, nr, a.k, acc);
    for (int r = 0; r < nr; r++) {
        float v = warp_sum(acc[r]);
        if ((threadIdx.x & 31) == 0) a.y[(m0 + r) * a.ldy + n] = v;
    }
}

extern "C" cudaError_t mnv_cu_matmul(const mnv_cu_matmul_args *a, cudaStream_t s) {
    if (a->m <= 0 || a->n <= 0) return cudaSuccess;
    if (mnv_cu_mmv_fast(&a->w, a->k, a->x, a->ldx)) return mmv_launch(a, 1, s);
    if (a->bias || a->res) return cudaErrorInvalidValue; /* epilogues are the chunked path's */
    int64_t gy = (a->m + PLAIN_MR - 1) / PLAIN_MR;
    if (gy > 65535) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((a->n + WARPS - 1) / WARPS), (unsigned)gy);
    cu_launch(k_matmul, grid, WARPS * 32, 0, s, *a);
    CU_CHECK_LAUNCH();
}

static __global__ void k_qget_rows(mnv_cu_weight w, int64_t k, const int32_t *ids, int64_t r0, float *y,
                                   int64_t rows) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * k) return;
    y[i] = cu_weight_at(&w, 0, ids ? ids[i / k] : r0 + i / k, i % k);
}

extern "C" cudaError_t mnv_cu_qget_rows(const mnv_cu_weight *w, int64_t k, const int32_t *ids, int64_t r0, float *y,
                                        int64_t rows, cudaStream_t s) {
    if (rows * k > 0) cu_launch(k_qget_rows, (unsigned)((rows * k + 255) / 256), 256, 0, s, *w, k, ids, r0, y, rows);
    CU_CHECK_LAUNCH();
}

static __global__ void k_qget_rows_split(mnv_cu_weight w, int64_t k, int64_t r0, uint16_t *hi, uint16_t *lo,
                                         int64_t rows) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * k) return;
    cu_split_bf16(cu_weight_at(&w, 0, r0 + i / k, i % k), &hi[i], &lo[i]);
}

/* The same for weights read in 16-byte chunks: a thread per chunk. */
template <int F>
static __global__ void k_chunks_split(mnv_cu_weight w, int64_t k, int64_t r0, uint16_t *hi, uint16_t *lo, int64_t rows) {
    cu_grid_entry();
    constexpr int E = mmv_fmt<F>::epc;
    constexpr bool grouped = F == MMV_A8 || F == MMV_A4 || F == MMV_MX4;
    const int64_t nc = k / E, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * nc) return;
    const int64_t r = i / nc, qi = i % nc;
    mmv_row row = mmv_row_of(w, 0, r0 + r);
    uint4 q = __ldg(row.q + qi);
    float sc = 1.0f, b = 0.0f;
    if (grouped) mmv_group<F>(w, row.sc, row.bi, qi * E, &sc, &b);
    uint32_t *ph = (uint32_t *)(hi + r * k + qi * E), *pl = (uint32_t *)(lo + r * k + qi * E);
#pragma unroll
    for (int j = 0; j < E; j += 2) {
        float v0 = grouped ? fmaf(mmv_code<F>(q, j), sc, b) : mmv_code<F>(q, j);
        float v1 = grouped ? fmaf(mmv_code<F>(q, j + 1), sc, b) : mmv_code<F>(q, j + 1);
        cu_split_bf16x2(v0, v1, &ph[j / 2], &pl[j / 2]);
    }
}

template <int F> static void chunks_split(const mnv_cu_weight *w, int64_t k, int64_t r0, uint16_t *hi, uint16_t *lo,
                                          int64_t rows, cudaStream_t s) {
    int64_t n = rows * (k / mmv_fmt<F>::epc);
    cu_launch(k_chunks_split<F>, (unsigned)((n + 255) / 256), 256, 0, s, *w, k, r0, hi, lo, rows);
}

extern "C" cudaError_t mnv_cu_qget_rows_split(const mnv_cu_weight *w, int64_t k, int64_t r0, void *hi, void *lo,
                                              int64_t rows, cudaStream_t s) {
    if (rows * k <= 0) return cudaSuccess;
    uint16_t *h = (uint16_t *)hi, *l = (uint16_t *)lo;
    switch (mmv_layout(w, k)) {
    case MMV_F32: chunks_split<MMV_F32>(w, k, r0, h, l, rows, s); break;
    case MMV_BF16: chunks_split<MMV_BF16>(w, k, r0, h, l, rows, s); break;
    case MMV_F16: chunks_split<MMV_F16>(w, k, r0, h, l, rows, s); break;
    case MMV_A8: chunks_split<MMV_A8>(w, k, r0, h, l, rows, s); break;
    case MMV_A4: chunks_split<MMV_A4>(w, k, r0, h, l, rows, s); break;
    case MMV_MX4: chunks_split<MMV_MX4>(w, k, r0, h, l, rows, s); break;
    default: cu_launch(k_qget_rows_split, (unsigned)((rows * k + 255) / 256), 256, 0, s, *w, k, r0, h, l, rows);
    }
    CU_CHECK_LAUNCH();
}

/* One (token, slot) per grid row y: its expert's rows, WARPS per block. */
static __global__ void __launch_bounds__(WARPS * 32) k_moe(mnv_cu_moe_args a) {
    cu_grid_entry();
    int64_t n = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    int64_t ts = blockIdx.y; /* t * kk + j */
    if (n >= a.n) return;
    int64_t e = a.ids[ts];
    const float *xs[1] = {a.x + (a.per_slot ? ts : ts / a.kk) * a.k};
    float acc[1] = {0};
    dot_row<1>(a.w, e, n, xs, 1, a.k, acc);
    float v = warp_sum(acc[0]);
    if ((threadIdx.x & 31) == 0) a.y[ts * a.n + n] = v + (a.bias ? a.bias[e * a.bs0 + n * a.bs1] : 0.0f);
}

static __global__ void __launch_bounds__(WARPS * 32) k_moe_tiles(mnv_cu_moe_args a, moe_groups gr) {
    cu_grid_entry();
    int64_t n = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    int32_t t = blockIdx.y;
    if (n >= a.n || t >= *gr.n_tiles) return;
    int32_t e = gr.tile[3 * t], first = gr.tile[3 * t + 1], cnt = gr.tile[3 * t + 2];
    const float *xs[MOE_MR];
    int32_t ts[MOE_MR];
    for (int r = 0; r < MOE_MR; r++) {
        ts[r] = gr.sorted[first + (r < cnt ? r : 0)];
        xs[r] = a.x + (a.per_slot ? ts[r] : ts[r] / a.kk) * a.k;
    }
    float acc[MOE_MR] = {0};
    dot_row<MOE_MR>(a.w, e, n, xs, cnt, a.k, acc);
    float b = a.bias ? a.bias[e * a.bs0 + n * a.bs1] : 0.0f;
    for (int r = 0; r < cnt; r++) {
        float v = warp_sum(acc[r]);
        if ((threadIdx.x & 31) == 0) a.y[(int64_t)ts[r] * a.n + n] = v + b;
    }
}


/* Experts, chunked: MX = 1, one (token, slot) per grid row y; MX = MOE_MR,
 * one tile of an expert's rows (grouped) per grid row y. With DUAL the
 * group reads RW rows of the gate and the same RW rows of the up weight
 * and writes their SwiGLU. */
template <int F, int RW, int MX, bool DUAL>
static __global__ void __launch_bounds__(MMV_THREADS) k_moe_mmv(mnv_cu_moe_args a, moe_groups gr, int wk) {
    cu_grid_entry();
    constexpr int E = mmv_fmt<F>::epc, R = DUAL ? 2 * RW : RW;
    __shared__ float red[MMV_WARPS][R * MX];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t n0 = ((int64_t)blockIdx.x * (MMV_WARPS / wk) + warp / wk) * RW;
    int32_t ts[MX], e, cnt = 1;
    if (MX == 1) {
        ts[0] = (int32_t)blockIdx.y;
        e = a.ids[ts[0]];
    } else {
        int32_t t = (int32_t)blockIdx.y;
        if (t >= *gr.n_tiles) return; /* the whole block */
        e = gr.tile[3 * t];
        int32_t first = gr.tile[3 * t + 1];
        cnt = gr.tile[3 * t + 2];
#pragma unroll
        for (int c = 0; c < MX; c++) ts[c] = gr.sorted[first + (c < cnt ? c : 0)];
    }
    mmv_row rows[R];
    const float *xs[MX];
#pragma unroll
    for (int r = 0; r < RW; r++) {
        int64_t n = n0 + r < a.n ? n0 + r : a.n - 1;
        rows[r] = mmv_row_of(a.w, e, n);
        if (DUAL) rows[RW + r] = mmv_row_of(a.w2, e, n);
    }
#pragma unroll
    for (int c = 0; c < MX; c++) xs[c] = a.x + (a.per_slot ? ts[c] : ts[c] / a.kk) * a.k;
    float acc[R][MX];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < MX; c++) acc[r][c] = 0.0f;
    if (n0 < a.n) mmv_accum<F, R, MX>(a.w, rows, xs, a.k / E, (warp % wk) * 32 + lane, 32 * wk, acc);
    int pair;
    float v = mmv_reduce<R, MX>(acc, red, wk, &pair);
    if (pair < 0) return;
    int r = pair / MX, c = pair % MX;
    if (DUAL && r >= RW) return; /* the up rows' sums are read by the gate rows' lanes */
    int64_t n = n0 + r;
    if (n >= a.n || c >= cnt) return;
    v = v + (a.bias ? a.bias[e * a.bs0 + n * a.bs1] : 0.0f);
    if (DUAL) {
        const int gw = warp - warp % wk; /* the up row's sums, added as mmv_reduce adds them */
        float u = 0.0f;
        for (int i = 0; i < wk; i++) u += red[gw + i][(RW + r) * MX + c];
        u = u + (a.bias2 ? a.bias2[e * a.b2s0 + n * a.b2s1] : 0.0f);
        v = cu_swiglu(v, u, a.alpha, a.limit);
    }
    a.y[(int64_t)ts[c] * a.n + n] = v;
}


template <int F, int MX, bool DUAL>
static cudaError_t moe_go(const mnv_cu_moe_args *a, const moe_groups *gr, int64_t gy, cudaStream_t s) {
    constexpr int RW = 2;
    int wk = mmv_wk(a->n, a->k / mmv_fmt<F>::epc);
    int64_t per_block = (int64_t)(MMV_WARPS / wk) * RW, gx = (a->n + per_block - 1) / per_block;
    if (gy > 65535) return cudaErrorInvalidValue;
    moe_groups g = gr ? *gr : moe_groups{NULL, NULL, NULL};
    cu_launch(k_moe_mmv<F, RW, MX, DUAL>, dim3((unsigned)gx, (unsigned)gy), MMV_THREADS, 0, s, *a, g, wk);
    CU_CHECK_LAUNCH();
}

template <int F> static cudaError_t moe_fmt(const mnv_cu_moe_args *a, const moe_groups *gr, int64_t gy, cudaStream_t s) {
    if (gr) return a->dual ? moe_go<F, MOE_MR, true>(a, gr, gy, s) : moe_go<F, MOE_MR, false>(a, gr, gy, s);
    return a->dual ? moe_go<F, 1, true>(a, NULL, gy, s) : moe_go<F, 1, false>(a, NULL, gy, s);
}

/* gy: (token, slot) rows, or (grouped) the most tiles there can be. */
static cudaError_t moe_mmv_launch(const mnv_cu_moe_args *a, const moe_groups *gr, int64_t gy, cudaStream_t s) {
    int f = mmv_layout(&a->w, a->k);
    if (a->dual && (mmv_layout(&a->w2, a->k) != f || a->w2.mode != a->w.mode || a->w2.bits != a->w.bits ||
                    a->w2.group_size != a->w.group_size || a->w2.scale_type != a->w.scale_type ||
                    a->w2.wtype != a->w.wtype))
        return cudaErrorInvalidValue;
    switch (f) {
    case MMV_F32: return moe_fmt<MMV_F32>(a, gr, gy, s);
    case MMV_BF16: return moe_fmt<MMV_BF16>(a, gr, gy, s);
    case MMV_F16: return moe_fmt<MMV_F16>(a, gr, gy, s);
    case MMV_A8: return moe_fmt<MMV_A8>(a, gr, gy, s);
    case MMV_A4: return moe_fmt<MMV_A4>(a, gr, gy, s);
    case MMV_MX4: return moe_fmt<MMV_MX4>(a, gr, gy, s);
    default: return cudaErrorInvalidValue;
    }
}

extern "C" size_t mnv_cu_moe_scratch(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    size_t grouped = rows < MNV_CU_MOE_GROUP_MIN ? 0 : (size_t)(rows + 3 * moe_max_tiles(rows, a->E, MOE_MR) + 1) * 4;
    size_t mma = mnv__cu_moe_mm_i8_fits(a) ? mnv__cu_moe_mm_i8_scratch(a)
                 : mnv__cu_moe_mma_fits(a)  ? mnv__cu_moe_mma_scratch(a)
                                            : 0;
    size_t gmma = mnv__cu_moe_gmma_i8_fits(a)  ? mnv__cu_moe_gmma_i8_scratch(a)
                  : mnv__cu_moe_gmma_fits(a) ? mnv__cu_moe_gmma_scratch(a)
                                             : 0;
    size_t m = grouped > mma ? grouped : mma;
    return m > gmma ? m : gmma;
}

extern "C" cudaError_t mnv_cu_moe_matmul(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    int64_t rows = a->T * a->kk;
    if (rows <= 0 || a->n <= 0) return cudaSuccess;
    unsigned gx = (unsigned)((a->n + WARPS - 1) / WARPS);
    bool fast = mnv_cu_mmv_fast(&a->w, a->k, a->x, a->k);
    if (a->dual && !fast) return cudaErrorInvalidValue; /* pairing is the chunked path's */
    if (scratch && mnv__cu_moe_mm_i8_fits(a)) return mnv__cu_moe_mm_i8(a, scratch, s);
    if (scratch && mnv__cu_moe_mma_fits(a)) return mnv__cu_moe_mma(a, scratch, s);
    if (scratch && mnv__cu_moe_gmma_i8_fits(a)) return mnv__cu_moe_gmma_i8(a, scratch, s);
    if (scratch && mnv__cu_moe_gmma_fits(a)) return mnv__cu_moe_gmma(a, scratch, s);
    if (mnv__cu_moe_dmma_i8_fits(a)) return mnv__cu_moe_dmma_i8(a, s);
    if (mnv__cu_moe_dmma_fits(a)) return mnv__cu_moe_dmma(a, s);
    if (rows >= MNV_CU_MOE_GROUP_MIN && scratch) {
        int64_t max_tiles = moe_max_tiles(rows, a->E, MOE_MR);
        if (max_tiles > 65535 || a->E > 4096) return cudaErrorInvalidValue;
        moe_groups gr = {(int32_t *)scratch, (int32_t *)scratch + rows, (int32_t *)scratch + rows + 3 * max_tiles};
        cu_launch(k_moe_group, 1, 1024, (size_t)(3 * a->E) * 4, s, a->ids, (int32_t)rows, (int32_t)a->E, MOE_MR, gr);
        if (fast) return moe_mmv_launch(a, &gr, max_tiles, s);
        cu_launch(k_moe_tiles, dim3(gx, (unsigned)max_tiles), WARPS * 32, 0, s, *a, gr);
        CU_CHECK_LAUNCH();
    }
    if (fast) return moe_mmv_launch(a, NULL, rows, s);
    if (rows > 65535) return cudaErrorInvalidValue;
    cu_launch(k_moe, dim3(gx, (unsigned)rows), WARPS * 32, 0, s, *a);
    CU_CHECK_LAUNCH();
}
