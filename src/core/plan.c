/* The memory planner and executor: lifetimes from the node order, a
 * best-fit free list over one arena buffer, then a run on the backend (after
 * uploading the step's inputs when the backend's memory is its own). */
#include <limits.h>
#include <stdlib.h>

#include "backend/backend.h"

#define ALIGN 64

typedef struct {
    size_t off, size;
} block;

struct mnv_executor {
    mnv_backend *be;
    bool host_mem; /* kernels read host memory: inputs stay where the graph keeps them */
    mnv_buffer *arena;
    size_t arena_size;
    block *free_blocks; /* sorted by offset */
    int32_t n_free, cap_free;
    double plan_sec;
};

mnv_status mnv_executor_create(mnv_backend *b, mnv_executor **out) {
    *out = NULL;
    mnv_executor *ex = calloc(1, sizeof *ex);
    if (!ex) return mnv_set_error(MNV_ERR_NOMEM, "executor: out of memory");
    ex->be = b;
    ex->host_mem = mnv_backend_host_memory(b);
    *out = ex;
    return MNV_OK;
}

void mnv_executor_free(mnv_executor *ex) {
    if (!ex) return;
    mnv_buffer_free(ex->arena);
    free(ex->free_blocks);
    free(ex);
}

size_t mnv_executor_arena_size(const mnv_executor *ex) { return ex->arena_size; }
double mnv_executor_plan_seconds(const mnv_executor *ex) { return ex->plan_sec; }

static mnv_node *root_of(mnv_node *n) { return n->view_src ? n->view_src : n; }
static bool is_input(const mnv_node *n) { return n->op == MNV_OP_LEAF && (n->flags & MNV_NODE_INPUT); }
/* Has a place in the arena: computed nodes, and inputs when the backend
 * cannot read the graph's host copy. */
static bool owns_memory(const mnv_executor *ex, const mnv_node *n) {
    if (n->op == MNV_OP_LEAF) return !ex->host_mem && (n->flags & MNV_NODE_INPUT);
    return n->op != MNV_OP_VIEW && n->op != MNV_OP_CACHE_WRITE;
}
/* Bytes of a node's own value (inputs keep nbytes 0: their memory is the graph's). */
static size_t value_bytes(const mnv_node *n) {
    return is_input(n) ? (size_t)mnv_array_nelem(n) * mnv_dtype_size(n->dtype) : n->nbytes;
}
static size_t slot_bytes(const mnv_node *n) {
    size_t sz = (value_bytes(n) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    return sz ? sz : ALIGN;
}

/* Best fit; the arena end grows when nothing fits. */
static size_t fl_alloc(mnv_executor *ex, size_t size, size_t *high) {
    int32_t best = -1;
    for (int32_t i = 0; i < ex->n_free; i++)
        if (ex->free_blocks[i].size >= size && (best < 0 || ex->free_blocks[i].size < ex->free_blocks[best].size))
            best = i;
    if (best >= 0) {
        size_t off = ex->free_blocks[best].off;
        ex->free_blocks[best].off += size;
        ex->free_blocks[best].size -= size;
        if (ex->free_blocks[best].size == 0) {
            memmove(&ex->free_blocks[best], &ex->free_blocks[best + 1],
                    (size_t)(ex->n_free - best - 1) * sizeof(block));
            ex->n_free--;
        }
        return off;
    }
    /* extend: if the last free block touches the end, use it */
    if (ex->n_free && ex->free_blocks[ex->n_free - 1].off + ex->free_blocks[ex->n_free - 1].size == *high) {
        size_t off = ex->free_blocks[--ex->n_free].off;
        *high = off + size;
        return off;
    }
    size_t off = *high;
    *high += size;
    return off;
}

static void fl_free(mnv_executor *ex, size_t off, size_t size) {
    int32_t i = 0;
    while (i < ex->n_free && ex->free_blocks[i].off < off) i++;
    memmove(&ex->free_blocks[i + 1], &ex->free_blocks[i], (size_t)(ex->n_free - i) * sizeof(block));
    ex->free_blocks[i] = (block){off, size};
    ex->n_free++;
    if (i + 1 < ex->n_free && off + size == ex->free_blocks[i + 1].off) { /* merge right */
        ex->free_blocks[i].size += ex->free_blocks[i + 1].size;
        memmove(&ex->free_blocks[i + 1], &ex->free_blocks[i + 2], (size_t)(ex->n_free - i - 2) * sizeof(block));
        ex->n_free--;
    }
    if (i > 0 && ex->free_blocks[i - 1].off + ex->free_blocks[i - 1].size == off) { /* merge left */
        ex->free_blocks[i - 1].size += ex->free_blocks[i].size;
        memmove(&ex->free_blocks[i], &ex->free_blocks[i + 1], (size_t)(ex->n_free - i - 1) * sizeof(block));
        ex->n_free--;
    }
}

static void compute_lifetimes(mnv_graph *g) {
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) mnv_graph_node(g, i)->last_use = -1;
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        for (int s = 0; s < MNV_MAX_SRC; s++)
            if (nd->src[s]) root_of(nd->src[s])->last_use = i;
    }
    for (int32_t i = 0; i < n; i++) { /* outputs live past the end, whoever reads them */
        mnv_node *nd = mnv_graph_node(g, i);
        if (nd->flags & MNV_NODE_OUTPUT) root_of(nd)->last_use = INT32_MAX;
    }
}

/* Assign arena offsets; returns the arena size needed. Inputs (when they
 * have a place here) are uploaded before the first node runs, so they are
 * placed first and live from node 0 to their last reader. */
static mnv_status plan(mnv_executor *ex, mnv_graph *g, size_t *size_out) {
    int32_t n = mnv_graph_n_nodes(g);
    if (ex->cap_free < n + 1) {
        block *b = realloc(ex->free_blocks, (size_t)(n + 1) * sizeof *b);
        if (!b) return mnv_set_error(MNV_ERR_NOMEM, "planner: out of memory");
        ex->free_blocks = b;
        ex->cap_free = n + 1;
    }
    ex->n_free = 0;
    compute_lifetimes(g);
    if (ex->be->iface->plan_lifetimes) ex->be->iface->plan_lifetimes(ex->be, g);
    /* the values whose life ends at each node: freed once that node's own
     * memory is placed (a backend's hook may have extended a value past its
     * last reader, so the readers alone do not say when) */
    int32_t *ends = malloc(sizeof(int32_t) * (size_t)(2 * n + 1)), *next = ends ? ends + n : NULL;
    if (!ends) return mnv_set_error(MNV_ERR_NOMEM, "planner: out of memory");
    for (int32_t i = 0; i < n; i++) ends[i] = -1;
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (owns_memory(ex, nd) && nd->last_use >= 0 && nd->last_use < n) {
            next[i] = ends[nd->last_use];
            ends[nd->last_use] = i;
        }
    }
    size_t high = 0;
    for (int32_t i = 0; !ex->host_mem && i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (is_input(nd)) nd->offset = fl_alloc(ex, slot_bytes(nd), &high);
    }
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (owns_memory(ex, nd) && !is_input(nd)) {
            nd->offset = fl_alloc(ex, slot_bytes(nd), &high);
            if (nd->last_use < 0) fl_free(ex, nd->offset, slot_bytes(nd)); /* dead value */
        }
        for (int32_t r = ends[i]; r >= 0; r = next[r]) {
            mnv_node *v = mnv_graph_node(g, r);
            fl_free(ex, v->offset, slot_bytes(v));
        }
    }
    free(ends);
    *size_out = high;
    return MNV_OK;
}

/* Point every node at its memory; inputs that live in the arena get their
 * host data uploaded. */
static mnv_status resolve(mnv_executor *ex, mnv_graph *g) {
    int32_t n = mnv_graph_n_nodes(g);
    uint8_t *base = ex->arena ? mnv_buffer_addr(ex->arena) : NULL;
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (owns_memory(ex, nd)) {
            nd->data = base + nd->offset;
            if (is_input(nd)) {
                mnv_status st = mnv_buffer_upload(ex->arena, nd->offset, nd->host, value_bytes(nd));
                if (st != MNV_OK) return st;
            }
        } else if (nd->view_src) {
            nd->data = (uint8_t *)nd->view_src->data + nd->view_offset;
        }
    }
    return MNV_OK;
}

/* Every computing node has a kernel on the backend: checked at plan time,
 * with an error naming the op and dtype, instead of skipping a node. */
static mnv_status check_support(mnv_executor *ex, mnv_graph *g) {
    if (!ex->be->iface->supports_node) return MNV_OK;
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (nd->op == MNV_OP_LEAF || nd->op == MNV_OP_VIEW || ex->be->iface->supports_node(ex->be, nd)) continue;
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "backend %s has no kernel for node %d '%s' (%s, %s%s%s)",
                             ex->be->iface->name, i, nd->name, mnv_op_name(nd->op), mnv_dtype_name(nd->dtype),
                             nd->src[1] ? " with a source of " : "", nd->src[1] ? mnv_dtype_name(nd->src[1]->dtype) : "");
    }
    return MNV_OK;
}

mnv_status mnv_executor_plan(mnv_executor *ex, mnv_graph *g, size_t *arena_bytes) {
    mnv_status st = mnv_graph_status(g);
    if (st == MNV_OK) st = check_support(ex, g);
    if (st == MNV_OK) st = plan(ex, g, arena_bytes);
    return st;
}

mnv_status mnv_executor_run_planned(mnv_executor *ex, mnv_graph *g, size_t arena_bytes) {
    if (arena_bytes > ex->arena_size) {
        mnv_buffer_free(ex->arena);
        ex->arena = NULL;
        ex->arena_size = 0;
        if (mnv_buffer_alloc(ex->be, arena_bytes, &ex->arena) != MNV_OK)
            return mnv_set_error(MNV_ERR_NOMEM, "executor: cannot allocate %zu bytes of activations", arena_bytes);
        ex->arena_size = arena_bytes;
    }
    /* cheap, and the arena may have moved since this graph last ran */
    mnv_status st = resolve(ex, g);
    return st == MNV_OK ? ex->be->iface->compute(ex->be, g) : st;
}

mnv_status mnv_executor_read_at(mnv_executor *ex, const mnv_node *n, size_t at, void *dst, size_t size) {
    const mnv_node *r = n && n->view_src ? n->view_src : n;
    if (!r || !ex->arena || !owns_memory(ex, r))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "executor read: node '%s' has no place in the arena",
                             n ? n->name : "(null)");
    size_t off = n->view_src ? n->view_offset : 0, have = value_bytes(r);
    if (off > have || at > have - off || size > have - off - at)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "executor read: %zu bytes at %zu of node '%s' (%zu from offset %zu)",
                             size, at, n->name, have, off);
    return mnv_buffer_download(dst, ex->arena, r->offset + off + at, size);
}

mnv_status mnv_executor_read(mnv_executor *ex, const mnv_node *n, void *dst, size_t size) {
    return mnv_executor_read_at(ex, n, 0, dst, size);
}

mnv_status mnv_executor_run(mnv_executor *ex, mnv_graph *g) {
    double t0 = mnv_time_sec();
    size_t need = 0;
    mnv_status st = mnv_executor_plan(ex, g, &need);
    ex->plan_sec = mnv_time_sec() - t0;
    if (st != MNV_OK) return st;
    return mnv_executor_run_planned(ex, g, need);
}
