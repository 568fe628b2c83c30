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

#define TM 64     /* rows of one expert per tile */
#define BK 32     /* k per step (one mxfp4 group) */
#define LDS 40    /* shared row stride in bf16: 80 bytes, so the fragment loads hit 32 banks */
#define THREADS 128

/* hi[s] and lo[s] = the two bf16 terms of the x row of sorted row s. */
static __global__ void k_gather_split(const float *x, int32_t per_slot, int64_t kk, int64_t k, const int32_t *sorted,
                                      uint16_t *hi, uint16_t *lo) {
    int64_t s = blockIdx.x;
    int64_t ts = sorted[s];
    const float *row = x + (per_slot ? ts : ts / kk) * k;
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
        float v = row[j];
        uint16_t h = f32_to_bf16_bits(v);
        hi[s * k + j] = h;
        lo[s * k + j] = f32_to_bf16_bits(v - bf16_bits_to_f32(h));
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

/* One tile (blockIdx.y) times BN weight rows (blockIdx.x); with DUAL the
 * block holds BN gate rows and the same BN up rows and writes their
 * SwiGLU. Warps: 2 x 2, each 32 tile rows by BN / 2 columns. */
template <int F, bool DUAL>
static __global__ void __launch_bounds__(THREADS) k_moe_mma(mnv_cu_moe_args a, moe_groups gr, const uint16_t *xh,
                                                            const uint16_t *xl) {
    constexpr int NI = DUAL ? 4 : 8;        /* 8-column mma tiles per warp per weight */
    constexpr int BN = NI * 16;             /* output columns per block */
    constexpr int WR = DUAL ? 2 * BN : BN;  /* weight rows in shared memory: 128 */
    constexpr int UA = 2 * TM * (BK / 8) / THREADS, UB = WR * (BK / 8) / THREADS; /* 16-byte units a thread moves */
    __shared__ __align__(16) uint16_t sa[2][TM][LDS];
    __shared__ __align__(16) uint16_t sb[WR][LDS];
    const int32_t t = blockIdx.y;
    if (t >= *gr.n_tiles) return; /* the whole block */
    const int32_t e = gr.tile[3 * t], first = gr.tile[3 * t + 1], cnt = gr.tile[3 * t + 2];
    const int64_t n0 = (int64_t)blockIdx.x * BN, K = a.k;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    const int wm = warp & 1, wn = warp >> 1;

    /* what this thread loads: the A units (hi, lo) and the weight units */
    const uint4 *pa[UA];
    bool va[UA];
#pragma unroll
    for (int i = 0; i < UA; i++) {
        int u = tid + THREADS * i, which = u / (TM * 4), row = (u >> 2) % TM, part = u & 3;
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
            int u = tid + THREADS * i, which = u / (TM * 4), row = (u >> 2) % TM, part = u & 3;
            *(uint4 *)&sa[which][row][part * 8] = ra[i];
        }
#pragma unroll
        for (int i = 0; i < UB; i++) {
            int u = tid + THREADS * i, r = u >> 2, part = u & 3;
            *(uint4 *)&sb[r][part * 8] = F == MMV_MX4 ? mx4_to_bf16(rw[i], rs[i]) : rb[i];
        }
    };

    float acc[2][NI][4], acc2[2][DUAL ? NI : 1][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
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
            uint32_t ah[2][4], al[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                int r = wm * 32 + mi * 16 + g;
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
                int c = wn * (BN / 2) + ni * 8 + g;
                uint32_t b0 = *(const uint32_t *)&sb[c][ks + 2 * q], b1 = *(const uint32_t *)&sb[c][ks + 2 * q + 8];
#pragma unroll
                for (int mi = 0; mi < 2; mi++) {
                    mma_bf16(acc[mi][ni], ah[mi], b0, b1);
                    mma_bf16(acc[mi][ni], al[mi], b0, b1);
                }
                if (DUAL) {
                    uint32_t u0 = *(const uint32_t *)&sb[BN + c][ks + 2 * q];
                    uint32_t u1 = *(const uint32_t *)&sb[BN + c][ks + 2 * q + 8];
#pragma unroll
                    for (int mi = 0; mi < 2; mi++) {
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
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = wm * 32 + mi * 16 + g + 8 * h;
            if (row >= cnt) continue;
            int64_t ts = gr.sorted[first + row];
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int64_t col = n0 + wn * (BN / 2) + ni * 8 + 2 * q + j;
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

static int mma_layout(const mnv_cu_moe_args *a) {
    int f = mmv_layout(&a->w, a->k);
    if (a->k % BK || (f != MMV_MX4 && f != MMV_BF16) || (f == MMV_MX4 && a->w.group_size != 32)) return MMV_NONE;
    if (a->dual && (mmv_layout(&a->w2, a->k) != f || a->w2.group_size != a->w.group_size)) return MMV_NONE;
    return f;
}

extern "C" int mnv__cu_moe_mma_fits(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    return a->mma_min_rows > 0 && rows >= a->mma_min_rows && mma_layout(a) != MMV_NONE &&
           moe_max_tiles(rows, a->E, TM) <= 65535 && a->E <= 4096 && a->n <= 65535LL * 64;
}

/* sorted, tiles and their count (rounded up to 16 bytes), then hi and lo */
static size_t groups_bytes(int64_t rows, int64_t E) {
    return ((size_t)(rows + 3 * moe_max_tiles(rows, E, TM) + 1) * 4 + 15) & ~(size_t)15;
}

extern "C" size_t mnv__cu_moe_mma_scratch(const mnv_cu_moe_args *a) {
    int64_t rows = a->T * a->kk;
    return groups_bytes(rows, a->E) + 2 * (size_t)rows * (size_t)a->k * 2;
}

extern "C" cudaError_t mnv__cu_moe_mma(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    int64_t rows = a->T * a->kk, max_tiles = moe_max_tiles(rows, a->E, TM);
    int f = mma_layout(a);
    if (f == MMV_NONE || max_tiles > 65535 || rows > INT32_MAX) return cudaErrorInvalidValue;
    int32_t *base = (int32_t *)scratch;
    moe_groups gr = {base, base + rows, base + rows + 3 * max_tiles};
    uint16_t *hi = (uint16_t *)((uint8_t *)scratch + groups_bytes(rows, a->E)), *lo = hi + rows * a->k;
    k_moe_group<<<1, 1024, (size_t)(3 * a->E) * 4, s>>>(a->ids, (int32_t)rows, (int32_t)a->E, TM, gr);
    k_gather_split<<<(unsigned)rows, 256, 0, s>>>(a->x, a->per_slot, a->kk, a->k, gr.sorted, hi, lo);
    int bn = a->dual ? 64 : 128;
    dim3 grid((unsigned)((a->n + bn - 1) / bn), (unsigned)max_tiles);
    if (f == MMV_MX4)
        a->dual ? k_moe_mma<MMV_MX4, true><<<grid, THREADS, 0, s>>>(*a, gr, hi, lo)
                : k_moe_mma<MMV_MX4, false><<<grid, THREADS, 0, s>>>(*a, gr, hi, lo);
    else
        a->dual ? k_moe_mma<MMV_BF16, true><<<grid, THREADS, 0, s>>>(*a, gr, hi, lo)
                : k_moe_mma<MMV_BF16, false><<<grid, THREADS, 0, s>>>(*a, gr, hi, lo);
    CU_CHECK_LAUNCH();
}
