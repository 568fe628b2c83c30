/* Matrix products on CUDA: float and MLX-quantized weights, plain and per
 * expert. One warp computes one weight row's dot products with up to PLAIN_MR
 * rows of x, so the weights stream once per PLAIN_MR rows of x (decode reads
 * them once); packed rows are read a U32 word per lane and dequantized in
 * registers. cuda_gemm.c sends large float products to cuBLAS. */
#include "backend/cuda/cuda_common.cuh"

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
    if ((w.bits == 4 || w.bits == 8) && gw % 4 == 0 && ((uintptr_t)row & 15) == 0) {
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
    if (32 % w.bits == 0) { /* 2, 4, 8 bits: a word holds whole elements of one group */
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

static __global__ void __launch_bounds__(WARPS * 32) k_matmul(mnv_cu_matmul_args a) {
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
    int64_t gy = (a->m + PLAIN_MR - 1) / PLAIN_MR;
    if (gy > 65535) return cudaErrorInvalidValue;
    dim3 grid((unsigned)((a->n + WARPS - 1) / WARPS), (unsigned)gy);
    k_matmul<<<grid, WARPS * 32, 0, s>>>(*a);
    CU_CHECK_LAUNCH();
}

static __global__ void k_qget_rows(mnv_cu_weight w, int64_t k, const int32_t *ids, int64_t r0, float *y,
                                   int64_t rows) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * k) return;
    y[i] = cu_weight_at(&w, 0, ids ? ids[i / k] : r0 + i / k, i % k);
}

extern "C" cudaError_t mnv_cu_qget_rows(const mnv_cu_weight *w, int64_t k, const int32_t *ids, int64_t r0, float *y,
                                        int64_t rows, cudaStream_t s) {
    if (rows * k > 0) k_qget_rows<<<(unsigned)((rows * k + 255) / 256), 256, 0, s>>>(*w, k, ids, r0, y, rows);
    CU_CHECK_LAUNCH();
}

/* One (token, slot) per grid row y: its expert's rows, WARPS per block. */
static __global__ void __launch_bounds__(WARPS * 32) k_moe(mnv_cu_moe_args a) {
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

/* Grouping (prefill): the (token, slot) rows sorted by expert on the device
 * (a counting sort in one block; the order within an expert does not
 * matter, each row's sum is its own), cut into tiles of up to MOE_MR rows
 * of one expert, so that each expert row is read once per tile. */
typedef struct {
    int32_t *sorted;  /* rows, by expert */
    int32_t *tile;    /* per tile: expert, first sorted index, count */
    int32_t *n_tiles;
} moe_groups;

static __global__ void k_moe_group(const int32_t *ids, int32_t rows, int32_t E, moe_groups gr) {
    extern __shared__ int32_t sh[]; /* count[E], start[E], fill[E] */
    int32_t *count = sh, *start = sh + E, *fill = sh + 2 * E;
    for (int32_t e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int32_t i = threadIdx.x; i < rows; i += blockDim.x) atomicAdd(&count[ids[i]], 1);
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t acc = 0, t = 0;
        for (int32_t e = 0; e < E; e++) {
            start[e] = fill[e] = acc;
            for (int32_t c = 0; c < count[e]; c += MOE_MR, t++) {
                gr.tile[3 * t] = e;
                gr.tile[3 * t + 1] = acc + c;
                gr.tile[3 * t + 2] = count[e] - c < MOE_MR ? count[e] - c : MOE_MR;
            }
            acc += count[e];
        }
        *gr.n_tiles = t;
    }
    __syncthreads();
    for (int32_t i = threadIdx.x; i < rows; i += blockDim.x) gr.sorted[atomicAdd(&fill[ids[i]], 1)] = i;
}

static __global__ void __launch_bounds__(WARPS * 32) k_moe_tiles(mnv_cu_moe_args a, moe_groups gr) {
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

extern "C" size_t mnv_cu_moe_scratch(int64_t T, int64_t kk, int64_t E) {
    int64_t rows = T * kk;
    if (rows < MNV_CU_MOE_GROUP_MIN) return 0;
    return (size_t)(rows + 3 * (rows / MOE_MR + E + 1) + 1) * 4;
}

extern "C" cudaError_t mnv_cu_moe_matmul(const mnv_cu_moe_args *a, void *scratch, cudaStream_t s) {
    int64_t rows = a->T * a->kk;
    if (rows <= 0 || a->n <= 0) return cudaSuccess;
    unsigned gx = (unsigned)((a->n + WARPS - 1) / WARPS);
    if (rows >= MNV_CU_MOE_GROUP_MIN && scratch) {
        int64_t max_tiles = rows / MOE_MR + a->E + 1;
        if (max_tiles > 65535 || a->E > 4096) return cudaErrorInvalidValue;
        moe_groups gr = {(int32_t *)scratch, (int32_t *)scratch + rows, (int32_t *)scratch + rows + 3 * max_tiles};
        k_moe_group<<<1, 1024, (size_t)(3 * a->E) * 4, s>>>(a->ids, (int32_t)rows, (int32_t)a->E, gr);
        k_moe_tiles<<<dim3(gx, (unsigned)max_tiles), WARPS * 32, 0, s>>>(*a, gr);
        CU_CHECK_LAUNCH();
    }
    if (rows > 65535) return cudaErrorInvalidValue;
    k_moe<<<dim3(gx, (unsigned)rows), WARPS * 32, 0, s>>>(*a);
    CU_CHECK_LAUNCH();
}
