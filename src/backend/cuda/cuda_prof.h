/* Per-node device timing of the CUDA backend (cuda_prof.c). */
#ifndef MNV_CUDA_PROF_H
#define MNV_CUDA_PROF_H

#include <stdbool.h>

#include <cuda_runtime_api.h>

#include "core/graph.h"

typedef struct mnv_cu_prof mnv_cu_prof;

mnv_cu_prof *mnv__cu_prof_create(void);
/* Events for a graph of n_nodes (false when they cannot be made). */
bool mnv__cu_prof_begin(mnv_cu_prof *p, int32_t n_nodes, cudaStream_t s);
/* Before node i's launches, and after them (waits for them: returns what
 * the wait reports, so that a kernel's fault is laid at its own node). */
void mnv__cu_prof_mark(mnv_cu_prof *p, int32_t i, cudaStream_t s);
cudaError_t mnv__cu_prof_done(mnv_cu_prof *p, int32_t i, cudaStream_t s);
/* After the last node: wait, and add each node's time to its row. */
void mnv__cu_prof_end(mnv_cu_prof *p, mnv_graph *g, cudaStream_t s);
/* Print the table (if anything ran) and free. */
void mnv__cu_prof_free(mnv_cu_prof *p);

#endif
