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

#endif
