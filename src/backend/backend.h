/* The backend interface: a small versioned vtable plus a context.
 *
 * A backend runs a planned graph: every node's `data` has been resolved by
 * the executor (leaves point at weights/inputs the backend can read; other
 * nodes point into an arena buffer the backend allocated). Backend memory is
 * mnv_buffer objects that know their backend and device; host code reaches
 * it only through upload, download and copy, so a device whose memory the
 * host cannot touch fits the same interface. Kernels live behind the
 * backend; model code never sees them. */
#ifndef MNV_BACKEND_H
#define MNV_BACKEND_H

#include <stdatomic.h>

#include "core/graph.h"

/* 2: compute honours mnv_backend.abort and may return MNV_ERR_CANCELLED.
 * 3: memory is mnv_buffer objects; upload, download and copy name a buffer
 *    and a byte offset; host_memory says whether kernels read host memory. */
#define MNV_BACKEND_IFACE_VERSION 3

typedef struct mnv_backend mnv_backend;

/* A buffer of backend memory. Its bytes live where the backend computes (a
 * device's own memory, or host memory for the CPU); the host reaches them
 * only through mnv_buffer_upload / _download / _copy. `addr` is the address
 * kernels use: a host pointer only when the backend's host_memory says so,
 * otherwise a device address the host must never dereference (pointer
 * arithmetic on it is fine: a node's data is addr + offset). Created by the
 * backend's buffer_alloc, which fills every field. */
typedef struct mnv_buffer {
    mnv_backend *backend; /* the backend that allocated it */
    int32_t device;       /* the backend's device index (0 for the CPU) */
    size_t size;          /* bytes */
    void *addr;           /* what kernels address; 64-byte aligned */
    void *handle;         /* the backend's own object (NULL for the CPU) */
} mnv_buffer;

/* The backend's part of the buffer calls. The checked wrappers below
 * (mnv_buffer_*) validate arguments (NULL, a range past the buffer's end,
 * buffers of another backend) before calling these, and never call them for
 * zero bytes; so an implementation only moves bytes. */
typedef struct {
    uint32_t version; /* MNV_BACKEND_IFACE_VERSION */
    const char *name;
    void (*free)(mnv_backend *b);
    /* A buffer of size > 0 bytes (64-byte aligned), contents undefined. On
     * failure *out is NULL and the status says why (MNV_ERR_NOMEM). */
    mnv_status (*buffer_alloc)(mnv_backend *b, size_t size, mnv_buffer **out);
    void (*buffer_free)(mnv_backend *b, mnv_buffer *buf);
    /* true: kernels read host memory in place (host pointers, such as graph
     * inputs, may be given to them, and mnv_buffer.addr is a host pointer);
     * the CPU. false: a device whose memory the host cannot touch; the
     * executor uploads graph inputs before each run. */
    bool (*host_memory)(mnv_backend *b);
    /* Make host memory (mmap'd weights) usable by the backend without a copy
     * where possible; returns the pointer kernels should use. */
    void *(*wrap_host)(mnv_backend *b, const void *host, size_t size);
    /* host -> buf[off, off + size) */
    mnv_status (*upload)(mnv_backend *b, mnv_buffer *dst, size_t off, const void *src, size_t size);
    /* buf[off, off + size) -> host */
    mnv_status (*download)(mnv_backend *b, void *dst, const mnv_buffer *src, size_t off, size_t size);
    /* buffer to buffer, on the device (the ranges may be of one buffer and
     * must not overlap) */
    mnv_status (*copy)(mnv_backend *b, mnv_buffer *dst, size_t dst_off, const mnv_buffer *src, size_t src_off,
                       size_t size);
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
    /* Optional (NULL: nothing to do). Called by the planner once every
     * node's last reader is known (node->last_use), before memory is
     * placed: a backend that runs several nodes as one launch extends the
     * lifetimes of what the launch reads to its last node, so that no output
     * of the launch is given their memory. */
    void (*plan_lifetimes)(mnv_backend *b, mnv_graph *g);
    /* Optional (NULL: weights are read where they are). Copy read-only
     * weights [host, host + size) to the device now, so that graphs reading
     * them later find them there instead of copying them at their first
     * run; name names them in errors. */
    mnv_status (*place_weights)(mnv_backend *b, const void *host, size_t size, const char *name);
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
    const char *name;   /* "cpu", "cuda", "cuda:N" (device N); NULL: the default backend */
    int32_t device;     /* the device index (set by mnv_backend_create from "name:N"; 0 otherwise) */
    int n_threads;      /* 0 = all online cores */
    int exact_quant;    /* 1: quantized products keep f32 activations (MLX's numerics) */
    int row_invariant;  /* 1: a row's results never depend on the other rows computed with it */
    int fixed_width;    /* 1: every run takes every thread, even beside busy neighbours (tests of
                           what threads do together; 0: runs narrow to the CPUs others leave) */
} mnv_backend_params;

/* registry.c: the one place that knows every backend. p->name NULL: the
 * default backend ("cpu" unless mnv__backend_set_default changed it). */
mnv_status mnv_backend_create(const mnv_backend_params *p, mnv_backend **out);
void mnv_backend_free(mnv_backend *b);
/* Tests: add a backend by name (a device emulated on the CPU), and make a
 * backend the default, so that engines and sessions, which ask for the
 * default, run on it. Not thread-safe: call before creating them. */
typedef mnv_status (*mnv_backend_ctor)(const mnv_backend_params *p, mnv_backend **out);
mnv_status mnv__backend_register(const char *name, mnv_backend_ctor create);
mnv_status mnv__backend_set_default(const char *name);

/* ---- buffers (buffer.c): the checked calls every host caller uses ---- */
/* size > 0 bytes on b; *out NULL on failure (the error names the size). */
mnv_status mnv_buffer_alloc(mnv_backend *b, size_t size, mnv_buffer **out);
void mnv_buffer_free(mnv_buffer *buf); /* NULL is ignored */
static inline void *mnv_buffer_addr(const mnv_buffer *buf) { return buf->addr; }
static inline size_t mnv_buffer_size(const mnv_buffer *buf) { return buf->size; }
/* Host memory to buf[off, off + size), buf[off, off + size) to host memory,
 * and src[src_off ..] to dst[dst_off ..] (buffers of one backend; ranges of
 * one buffer must not overlap). size 0 is a no-op (off may then equal the
 * buffer's size). MNV_ERR_INVALID_ARG, naming the call and the figures, for
 * a NULL buffer or pointer, a range past a buffer's end, overlapping ranges
 * or buffers of two backends; the backend's status otherwise. */
mnv_status mnv_buffer_upload(mnv_buffer *dst, size_t off, const void *src, size_t size);
mnv_status mnv_buffer_download(void *dst, const mnv_buffer *src, size_t off, size_t size);
mnv_status mnv_buffer_copy(mnv_buffer *dst, size_t dst_off, const mnv_buffer *src, size_t src_off, size_t size);
/* Does b compute in host memory (see mnv_backend_iface.host_memory)? */
bool mnv_backend_host_memory(mnv_backend *b);

/* The executor: plans memory for a graph, resolves data pointers and runs it
 * on a backend. The arena (an mnv_buffer) is kept between runs and grows
 * only when a larger graph needs more, so steady-state decoding allocates
 * nothing. On a backend without host_memory the plan also gives every
 * MNV_NODE_INPUT leaf a place in the arena, live from the first node, and
 * each run uploads the inputs' host data there before compute; on the CPU
 * kernels read the inputs where the graph keeps them. */
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
/* Copy the value of node n (a node computed in the arena, or a view of
 * one, of the graph last run) to host memory: size bytes from its start.
 * MNV_ERR_INVALID_ARG when n has no place in the arena or size passes its
 * end. */
mnv_status mnv_executor_read(mnv_executor *ex, const mnv_node *n, void *dst, size_t size);
/* The same, size bytes from byte offset off of the value (one row of many). */
mnv_status mnv_executor_read_at(mnv_executor *ex, const mnv_node *n, size_t off, void *dst, size_t size);
size_t mnv_executor_arena_size(const mnv_executor *ex);
/* Seconds spent planning in the last run (host overhead). */
double mnv_executor_plan_seconds(const mnv_executor *ex);

/* Per-backend constructors (registered in registry.c). */
mnv_status mnv_backend_cpu_create(const mnv_backend_params *p, mnv_backend **out);
/* Tests: per node of the CPU backend's last graph, 1 where the barrier after
 * the node was left out (cpu_backend.c says when); NULL for another backend
 * or before any graph. Valid until the backend's next compute. */
const uint8_t *mnv__cpu_barrier_plan(const mnv_backend *b);
/* The CUDA backend (built with MINERVA_CUDA): p->device picks the card. */
mnv_status mnv_backend_cuda_create(const mnv_backend_params *p, mnv_backend **out);

#endif
