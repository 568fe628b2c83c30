/* Per-node timing of the CUDA backend (MNV_CUDA_PROFILE=1): each node's
 * launches are bracketed by events and waited for before the next node is
 * queued (so the time is the device's, not the host's pace of launching),
 * graphs run node by node (no replay), and when the backend is freed a
 * table of device time by op and weight (layer numbers folded) goes to
 * stderr. A tool for finding where a step's time goes, not a mode to run
 * in: a replayed step runs its kernels back to back, without these waits. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "backend/cuda/cuda_prof.h"

typedef struct {
    char key[96];
    double ms;
    int64_t calls;
} prof_row;

struct mnv_cu_prof {
    cudaEvent_t *ev; /* two per node: before and after its launches */
    int32_t n_ev;
    uint8_t *timed;  /* nodes timed this step (a fused launch times its first) */
    prof_row *rows;
    int32_t n_rows, cap_rows;
    int64_t steps;
    double total_ms;
};

mnv_cu_prof *mnv__cu_prof_create(void) { return calloc(1, sizeof(mnv_cu_prof)); }

/* A node's key: its op, its first input's rows (a decode step's products
 * apart from a prompt's) and the first weight it reads, digits folded to '#'. */
static void node_key(const mnv_node *n, char *out, size_t cap) {
    const char *w = "";
    for (int s = 0; s < MNV_MAX_SRC && !*w; s++)
        if (n->src[s] && n->src[s]->op == MNV_OP_LEAF && (n->src[s]->flags & MNV_NODE_PARAM)) w = n->src[s]->name;
    const long long rows = n->src[0] ? (long long)mnv_array_rows(n->src[0]) : 0;
    size_t k = (size_t)snprintf(out, cap, "%-14s %6lld ", mnv_op_name(n->op), rows);
    if (k >= cap) k = cap - 1;
    bool digit = false;
    for (; *w && k + 1 < cap; w++) {
        if (isdigit((unsigned char)*w)) {
            if (!digit) out[k++] = '#';
            digit = true;
        } else {
            out[k++] = *w;
            digit = false;
        }
    }
    out[k < cap ? k : cap - 1] = 0;
}

static prof_row *row_of(mnv_cu_prof *p, const char *key) {
    for (int32_t i = 0; i < p->n_rows; i++)
        if (strcmp(p->rows[i].key, key) == 0) return &p->rows[i];
    if (p->n_rows == p->cap_rows) {
        int32_t nc = p->cap_rows ? 2 * p->cap_rows : 64;
        prof_row *r = realloc(p->rows, (size_t)nc * sizeof *r);
        if (!r) return NULL;
        p->rows = r;
        p->cap_rows = nc;
    }
    prof_row *r = &p->rows[p->n_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s", key);
    return r;
}

static bool grow(mnv_cu_prof *p, int32_t n_ev);

bool mnv__cu_prof_begin(mnv_cu_prof *p, int32_t n_nodes, cudaStream_t s) {
    (void)s;
    if (p->n_ev < 2 * n_nodes && !grow(p, 2 * n_nodes)) return false;
    uint8_t *t = realloc(p->timed, (size_t)n_nodes);
    if (!t) return false;
    p->timed = t;
    memset(t, 0, (size_t)n_nodes);
    return true;
}

static bool grow(mnv_cu_prof *p, int32_t n_ev) {
    cudaEvent_t *ev = realloc(p->ev, (size_t)n_ev * sizeof *ev);
    if (!ev) return false;
    p->ev = ev;
    for (int32_t i = p->n_ev; i < n_ev; i++)
        if (cudaEventCreate(&p->ev[i]) != cudaSuccess) {
            p->n_ev = i;
            return false;
        }
    p->n_ev = n_ev;
    return true;
}

void mnv__cu_prof_mark(mnv_cu_prof *p, int32_t i, cudaStream_t s) { cudaEventRecord(p->ev[2 * i], s); }

cudaError_t mnv__cu_prof_done(mnv_cu_prof *p, int32_t i, cudaStream_t s) {
    cudaError_t e = cudaEventRecord(p->ev[2 * i + 1], s);
    if (e == cudaSuccess) e = cudaEventSynchronize(p->ev[2 * i + 1]);
    p->timed[i] = e == cudaSuccess;
    return e;
}

void mnv__cu_prof_end(mnv_cu_prof *p, mnv_graph *g, cudaStream_t s) {
    (void)s;
    int32_t n = mnv_graph_n_nodes(g);
    char key[96];
    float ms;
    p->steps++;
    for (int32_t i = 0; i < n; i++) {
        if (!p->timed[i] || cudaEventElapsedTime(&ms, p->ev[2 * i], p->ev[2 * i + 1]) != cudaSuccess) continue;
        node_key(mnv_graph_node(g, i), key, sizeof key);
        prof_row *r = row_of(p, key);
        if (r) {
            r->ms += ms;
            r->calls++;
        }
        p->total_ms += ms;
    }
}

static int by_time(const void *a, const void *b) {
    double x = ((const prof_row *)a)->ms, y = ((const prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

void mnv__cu_prof_free(mnv_cu_prof *p) {
    if (!p) return;
    if (p->steps > 0) {
        qsort(p->rows, (size_t)p->n_rows, sizeof *p->rows, by_time);
        fprintf(stderr, "cuda profile: %lld graph runs, %.3f ms of kernel time each on average\n",
                (long long)p->steps, p->total_ms / (double)p->steps);
        fprintf(stderr, "%-80s %9s %11s %6s\n", "op, rows of its input and weight", "calls", "us/call", "share");
        for (int32_t i = 0; i < p->n_rows; i++) {
            const prof_row *r = &p->rows[i];
            fprintf(stderr, "%-80.80s %9lld %11.2f %5.1f%%\n", r->key, (long long)r->calls,
                    1000.0 * r->ms / (double)r->calls, p->total_ms > 0 ? 100.0 * r->ms / p->total_ms : 0.0);
        }
    }
    for (int32_t i = 0; i < p->n_ev; i++) cudaEventDestroy(p->ev[i]);
    free(p->ev);
    free(p->timed);
    free(p->rows);
    free(p);
}
