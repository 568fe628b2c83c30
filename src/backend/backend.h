/* The backend interface: a small versioned vtable plus a context.
 *
 * A backend runs a planned graph: every node's `data` has been resolved by
 * the executor (leaves point at weights/inputs the backend can read; other
 * nodes point into an arena the backend allocated). Kernels live behind the
 * backend; model code never sees them. */
#ifndef MNV_BACKEND_H
#define MNV_BACKEND_H

#include <stdatomic.h>

#include "core/graph.h"

/* 2: compute honours mnv_backend.abort and may return MNV_ERR_CANCELLED. */
#define MNV_BACKEND_IFACE_VERSION 2

typedef struct mnv_backend mnv_backend;

typedef struct {
    uint32_t version; /* MNV_BACKEND_IFACE_VERSION */
    const char *name;
    void (*free)(mnv_backend *b);
    /* Memory the backend computes in (64-byte aligned). */
    void *(*buffer_alloc)(mnv_backend *b, size_t size);
    void (*buffer_free)(mnv_backend *b, void *p);
    /* Make host memory (mmap'd weights) usable by the backend without a copy
     * where possible; returns the pointer kernels should use. */
    void *(*wrap_host)(mnv_backend *b, const void *host, size_t size);
    /* Copy between host memory and backend buffers. */
    mnv_status (*upload)(mnv_backend *b, void *dst, const void *src, size_t size);
    mnv_status (*download)(mnv_backend *b, void *dst, const void *src, size_t size);
    bool (*supports_node)(mnv_backend *b, const mnv_node *n);
    /* Run nodes [0, n) of g in order. Stops early with MNV_ERR_CANCELLED
     * (message naming the node it stopped before) when b->abort is set and
     * reads nonzero: before the first node or between two nodes, never
     * inside one. Nodes already run have written their outputs (and cache
     * rows); the graph's result is not valid. */
    mnv_status (*compute)(mnv_backend *b, mnv_graph *g);
    void (*synchronize)(mnv_backend *b);
    /* Threads used for compute (1 for devices). */
    int (*n_threads)(mnv_backend *b);
} mnv_backend_iface;

struct mnv_backend {
    const mnv_backend_iface *iface;
    void *ctx;
    /* NULL, or a flag another thread may set while compute runs, to stop it
     * early. Set by the backend's owner (the session points it at its cancel
     * request); the backend only reads it, never clears it: the owner
     * consumes the request. A device backend reads it between the pieces of
     * work it submits. */
    atomic_int *abort;
};

typedef struct {
    const char *name;   /* "cpu" (default) */
    int n_threads;      /* 0 = all online cores */
    int exact_quant;    /* 1: quantized products keep f32 activations (MLX's numerics) */
    int row_invariant;  /* 1: a row's results never depend on the other rows computed with it */
} mnv_backend_params;

/* registry.c: the one place that knows every backend. */
mnv_status mnv_backend_create(const mnv_backend_params *p, mnv_backend **out);
void mnv_backend_free(mnv_backend *b);

/* The executor: plans memory for a graph, resolves data pointers and runs it
 * on a backend. The arena is kept between runs and grows only when a larger
 * graph needs more, so steady-state decoding allocates nothing. */
typedef struct mnv_executor mnv_executor;
mnv_status mnv_executor_create(mnv_backend *b, mnv_executor **out);
void mnv_executor_free(mnv_executor *ex);
/* Plan and run (plan_seconds tells the planning's cost). */
mnv_status mnv_executor_run(mnv_executor *ex, mnv_graph *g);
/* Plan once: checks every node against the backend's supports_node (an
 * error names the op and dtype), assigns arena offsets; *arena_bytes: the
 * arena the graph needs. */
mnv_status mnv_executor_plan(mnv_executor *ex, mnv_graph *g, size_t *arena_bytes);
/* Run a graph planned by mnv_executor_plan (again and again: a cached
 * graph whose inputs were refilled). */
mnv_status mnv_executor_run_planned(mnv_executor *ex, mnv_graph *g, size_t arena_bytes);
size_t mnv_executor_arena_size(const mnv_executor *ex);
/* Seconds spent planning in the last run (host overhead). */
double mnv_executor_plan_seconds(const mnv_executor *ex);

/* Per-backend constructors (registered in registry.c). */
mnv_status mnv_backend_cpu_create(const mnv_backend_params *p, mnv_backend **out);

#endif
