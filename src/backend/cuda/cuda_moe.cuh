/* The experts' rows grouped by expert (shared by the chunked and the
 * tensor-core expert products). */
#ifndef MNV_CUDA_MOE_CUH
#define MNV_CUDA_MOE_CUH

#include <stdint.h>

/* The (token, slot) rows sorted by expert on the device (a counting sort
 * in one block; the order within an expert does not matter, each row's sum
 * is its own), cut into tiles of up to `tile` rows of one expert, so that
 * each expert row is read once per tile. */
typedef struct {
    int32_t *sorted;  /* rows, by expert */
    int32_t *tile;    /* per tile: expert, first sorted index, count */
    int32_t *n_tiles;
} moe_groups;

/* The most tiles `rows` rows of E experts can make: a part-filled tile at
 * most for each expert that has rows. */
static inline int64_t moe_max_tiles(int64_t rows, int64_t E, int32_t tile) {
    return rows / tile + (E < rows ? E : rows) + 1;
}

/* Launch: one block of 1024 threads, 3 * E int32 of dynamic shared memory. */
static __global__ void k_moe_group(const int32_t *ids, int32_t rows, int32_t E, int32_t tile, moe_groups gr) {
    cu_grid_entry();
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
            for (int32_t c = 0; c < count[e]; c += tile, t++) {
                gr.tile[3 * t] = e;
                gr.tile[3 * t + 1] = acc + c;
                gr.tile[3 * t + 2] = count[e] - c < tile ? count[e] - c : tile;
            }
            acc += count[e];
        }
        *gr.n_tiles = t;
    }
    __syncthreads();
    for (int32_t i = threadIdx.x; i < rows; i += blockDim.x) gr.sorted[atomicAdd(&fill[ids[i]], 1)] = i;
}

/* ---- the decode experts' weight reads (cuda_moe_mma.cu, cuda_moe_i8.cu) ----
 * A block takes DM_ROWS rows of an expert's weight; thread (g, q) of each
 * warp (g = lane / 4, q = lane % 4) reads rows g and g + 8, word q of each
 * 16-byte group (32 mxfp4 codes), which the mma fragments then take. */
#define DM_ROWS 16 /* expert rows per block */

/* The rows g and g + 8 (of 16 from n0, the last repeated past n) of each
 * weight (gate, and up when R is 2) of expert e, as thread (g, q) reads
 * them: word q of each group's 16 bytes (q = 0: the rows' starts), and the
 * group scales. */
template <int R> struct dm_rows {
    const uint32_t *w[R][2];
    const uint8_t *s[R][2];
};
template <int R>
static __device__ __forceinline__ void dm_rows_of(const mnv_cu_moe_args &a, int64_t e, int64_t n0, int g, int q,
                                                  dm_rows<R> *rw) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        const mnv_cu_weight &w = r ? a.w2 : a.w;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int64_t n = n0 + g + 8 * h;
            n = n < a.n ? n : a.n - 1;
            rw->w[r][h] = (const uint32_t *)w.w + e * w.we + n * w.ldw + q;
            rw->s[r][h] = (const uint8_t *)w.scales + e * w.se + n * w.lds;
        }
    }
}

/* One warp step's weight loads: the words and scales of groups g0 and
 * g0 + 1 (a group past ng reads g0 again; its sums are not used) of rows
 * g and g + 8 of each weight. The kernels load a step ahead of the one
 * they multiply, so a block always has the next step's reads in flight. */
template <int R> struct dm_step {
    uint32_t w[2][R][2];
    uint32_t s[2][R][2];
};
template <int R>
static __device__ __forceinline__ void dm_load(const dm_rows<R> &rw, int64_t g0, int64_t ng, dm_step<R> *st) {
#pragma unroll
    for (int gi = 0; gi < 2; gi++) {
        const int64_t grp = g0 + gi < ng ? g0 + gi : g0;
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                st->w[gi][r][h] = __ldg(rw.w[r][h] + grp * 4);
                st->s[gi][r][h] = __ldg(rw.s[r][h] + grp);
            }
    }
}

/* The block's end in the decode expert kernels: red holds each warp's sums
 * (gate, and up with DUAL) of DM_ROWS weight rows by TILE output rows;
 * thread (row, col) adds the NW warps' in order, then the biases and the
 * SwiGLU, and stores output row rows[col] (cnt of them) of weight row
 * n0 + row. */
template <bool DUAL, int NW, int TILE>
static __device__ __forceinline__ void dm_out(const mnv_cu_moe_args &a, const float (*red)[DUAL ? 2 : 1][DM_ROWS][TILE],
                                              int32_t e, const int32_t *rows, int cnt, int64_t n0, int row, int col) {
    const int64_t n = n0 + row;
    if (col >= cnt || n >= a.n) return;
    float v = 0.0f, u = 0.0f;
    for (int w = 0; w < NW; w++) {
        v += red[w][0][row][col];
        if (DUAL) u += red[w][DUAL ? 1 : 0][row][col];
    }
    v = v + (a.bias ? a.bias[e * a.bs0 + n * a.bs1] : 0.0f);
    if (DUAL) v = cu_swiglu(v, u + (a.bias2 ? a.bias2[e * a.b2s0 + n * a.b2s1] : 0.0f), a.alpha, a.limit);
    a.y[(int64_t)rows[col] * a.n + n] = v;
}

#endif
