/* Backend buffers: upload / download / copy round trips at random offsets,
 * zero sizes, bad arguments; and the executor on a backend whose memory the
 * host cannot touch. That backend ("guarded") wraps the CPU one: its
 * buffers are mappings kept PROT_NONE except while one of its own calls
 * (upload, download, copy, compute) runs, so any host code that reads or
 * writes backend memory another way faults. Its results must equal the CPU
 * backend's, byte for byte (the same kernels on the same values). */
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/graph.h"
#include "minerva.h"
#include "test.h"

/* ---- the guarded backend ---------------------------------------------------------- */

typedef struct {
    mnv_backend *cpu;
    mnv_buffer *live[8]; /* its buffers, opened for compute */
    int n_live, uploads;
} guard_ctx;

static size_t page_round(size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}
static void guard_open(mnv_buffer *b, bool open) {
    CHECK(mprotect(b->handle, page_round(b->size), open ? PROT_READ | PROT_WRITE : PROT_NONE) == 0);
}
static void guard_all(guard_ctx *c, bool open) {
    for (int i = 0; i < c->n_live; i++) guard_open(c->live[i], open);
}

static mnv_status g_alloc(mnv_backend *b, size_t size, mnv_buffer **out) {
    guard_ctx *c = b->ctx;
    void *p = mmap(NULL, page_round(size), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mnv_buffer *buf = malloc(sizeof *buf);
    if (p == MAP_FAILED || !buf || c->n_live == 8) {
        if (p != MAP_FAILED) munmap(p, page_round(size));
        free(buf);
        return mnv_set_error(MNV_ERR_NOMEM, "guarded: no buffer of %zu bytes", size);
    }
    *buf = (mnv_buffer){.backend = b, .device = 1, .size = size, .addr = p, .handle = p};
    c->live[c->n_live++] = buf;
    *out = buf;
    return MNV_OK;
}
static void g_free(mnv_backend *b, mnv_buffer *buf) {
    guard_ctx *c = b->ctx;
    for (int i = 0; i < c->n_live; i++)
        if (c->live[i] == buf) c->live[i] = c->live[--c->n_live];
    munmap(buf->handle, page_round(buf->size));
    free(buf);
}
static bool g_host_memory(mnv_backend *b) { return false; }
static mnv_status g_upload(mnv_backend *b, mnv_buffer *dst, size_t off, const void *src, size_t size) {
    guard_open(dst, true);
    memcpy((uint8_t *)dst->addr + off, src, size);
    guard_open(dst, false);
    ((guard_ctx *)b->ctx)->uploads++;
    return MNV_OK;
}
static mnv_status g_download(mnv_backend *b, void *dst, const mnv_buffer *src, size_t off, size_t size) {
    guard_open((mnv_buffer *)src, true);
    memcpy(dst, (const uint8_t *)src->addr + off, size);
    guard_open((mnv_buffer *)src, false);
    return MNV_OK;
}
static mnv_status g_copy(mnv_backend *b, mnv_buffer *dst, size_t doff, const mnv_buffer *src, size_t soff,
                         size_t size) {
    guard_open(dst, true);
    guard_open((mnv_buffer *)src, true);
    memmove((uint8_t *)dst->addr + doff, (const uint8_t *)src->addr + soff, size);
    guard_open(dst, false);
    guard_open((mnv_buffer *)src, false);
    return MNV_OK;
}
static bool g_supports(mnv_backend *b, const mnv_node *n) {
    mnv_backend *cpu = ((guard_ctx *)b->ctx)->cpu;
    return cpu->iface->supports_node(cpu, n);
}
static int n_computes; /* graphs run on guarded backends */
static mnv_status g_compute(mnv_backend *b, mnv_graph *g) {
    guard_ctx *c = b->ctx;
    n_computes++;
    guard_all(c, true);
    mnv_status st = c->cpu->iface->compute(c->cpu, g);
    guard_all(c, false);
    return st;
}
static void g_sync(mnv_backend *b) {}
static int g_threads(mnv_backend *b) { return 1; }
static void g_destroy(mnv_backend *b) {
    guard_ctx *c = b->ctx;
    mnv_backend_free(c->cpu);
    free(c);
    free(b);
}

static const mnv_backend_iface guard_iface = {
    .version = MNV_BACKEND_IFACE_VERSION, .name = "guarded", .free = g_destroy, .buffer_alloc = g_alloc,
    .buffer_free = g_free, .host_memory = g_host_memory, .upload = g_upload, .download = g_download, .copy = g_copy,
    .supports_node = g_supports, .compute = g_compute, .synchronize = g_sync, .n_threads = g_threads,
};

/* A backend that (as one fusing two nodes would) keeps each node's input
 * alive one node past its last reader. */
static void g_plan_lifetimes(mnv_backend *b, mnv_graph *g) {
    (void)b;
    int32_t n = mnv_graph_n_nodes(g);
    for (int32_t i = 0; i < n; i++) {
        mnv_node *nd = mnv_graph_node(g, i);
        if (nd->op != MNV_OP_LEAF && nd->last_use >= 0 && nd->last_use < n - 1) nd->last_use++; /* not outputs */
    }
}

static const mnv_backend_iface extend_iface = {
    .version = MNV_BACKEND_IFACE_VERSION, .name = "extended", .free = g_destroy, .buffer_alloc = g_alloc,
    .buffer_free = g_free, .host_memory = g_host_memory, .upload = g_upload, .download = g_download, .copy = g_copy,
    .supports_node = g_supports, .compute = g_compute, .synchronize = g_sync, .n_threads = g_threads,
    .plan_lifetimes = g_plan_lifetimes,
};

static mnv_status guard_ctor(const mnv_backend_params *p, mnv_backend **out) {
    *out = NULL;
    mnv_backend *b = calloc(1, sizeof *b);
    guard_ctx *c = calloc(1, sizeof *c);
    mnv_backend_params q = *p;
    q.name = "cpu";
    mnv_status st = b && c ? mnv_backend_create(&q, &c->cpu) : mnv_set_error(MNV_ERR_NOMEM, "guarded");
    if (st != MNV_OK) {
        free(b);
        free(c);
        return st;
    }
    b->iface = &guard_iface;
    b->ctx = c;
    *out = b;
    return MNV_OK;
}

static mnv_backend *guard_create(void) {
    mnv_backend_params p = {.name = "cpu", .n_threads = 2};
    mnv_backend *b = NULL;
    guard_ctor(&p, &b);
    return b;
}

/* ---- the buffer calls ------------------------------------------------------------- */

static void fill_rand(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)t_rand64();
}

static void test_calls(mnv_backend *be) {
    const char *name = be->iface->name;
    mnv_buffer *a = (mnv_buffer *)1, *b = NULL;
    CHECK(mnv_buffer_alloc(be, 0, &a) == MNV_ERR_INVALID_ARG && a == NULL);
    CHECK(strstr(mnv_last_error(), "0 bytes") != NULL);
    CHECK(mnv_buffer_alloc(NULL, 16, &a) == MNV_ERR_INVALID_ARG && a == NULL);
    CHECK(mnv_buffer_alloc(be, 16, NULL) == MNV_ERR_INVALID_ARG);
    size_t na = (size_t)t_randint(1000, 5000), nb = (size_t)t_randint(100, 999);
    CHECKF(mnv_buffer_alloc(be, na, &a) == MNV_OK && a, "%s: %s", name, mnv_last_error());
    CHECKF(mnv_buffer_alloc(be, nb, &b) == MNV_OK && b, "%s: %s", name, mnv_last_error());
    if (!a || !b) return;
    CHECK(a->backend == be && mnv_buffer_size(a) == na && (uintptr_t)mnv_buffer_addr(a) % 64 == 0);
    uint8_t *want = malloc(na), *got = malloc(na), *tmp = malloc(na);
    fill_rand(want, na);
    CHECK(mnv_buffer_upload(a, 0, want, na) == MNV_OK);
    /* pieces at random offsets, over and back */
    for (int r = 0; r < 50; r++) {
        size_t off = (size_t)t_randint(0, (int)na), n = (size_t)t_randint(0, (int)(na - off));
        fill_rand(tmp, n);
        CHECK(mnv_buffer_upload(a, off, tmp, n) == MNV_OK);
        memcpy(want + off, tmp, n);
        size_t o2 = (size_t)t_randint(0, (int)na), n2 = (size_t)t_randint(0, (int)(na - o2));
        CHECK(mnv_buffer_download(got, a, o2, n2) == MNV_OK);
        CHECKF(!memcmp(got, want + o2, n2), "%s: download of %zu bytes at %zu", name, n2, o2);
    }
    /* copies: buffer to buffer, and between disjoint ranges of one buffer */
    for (int r = 0; r < 50; r++) {
        size_t n = (size_t)t_randint(0, (int)nb), so = (size_t)t_randint(0, (int)(na - n)),
               dof = (size_t)t_randint(0, (int)(nb - n));
        CHECK(mnv_buffer_copy(b, dof, a, so, n) == MNV_OK);
        CHECK(mnv_buffer_download(got, b, dof, n) == MNV_OK);
        CHECKF(!memcmp(got, want + so, n), "%s: copy of %zu bytes from %zu to %zu", name, n, so, dof);
        size_t m = (size_t)t_randint(0, (int)(na / 2)), s1 = (size_t)t_randint(0, (int)(na / 2 - m)),
               d1 = na / 2 + (size_t)t_randint(0, (int)(na - na / 2 - m));
        CHECK(mnv_buffer_copy(a, d1, a, s1, m) == MNV_OK);
        memmove(want + d1, want + s1, m);
    }
    CHECK(mnv_buffer_download(got, a, 0, na) == MNV_OK && !memcmp(got, want, na));
    /* zero bytes: a no-op, at the very end too, and with no host pointer */
    CHECK(mnv_buffer_upload(a, na, NULL, 0) == MNV_OK);
    CHECK(mnv_buffer_download(NULL, a, na, 0) == MNV_OK);
    CHECK(mnv_buffer_copy(b, nb, a, na, 0) == MNV_OK);
    /* bad arguments: named, and nothing moved */
    CHECK(mnv_buffer_upload(a, na, want, 1) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "pass the end") != NULL);
    CHECK(mnv_buffer_upload(a, na + 1, want, 0) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_upload(a, 8, want, SIZE_MAX - 4) == MNV_ERR_INVALID_ARG); /* off + size wraps */
    CHECK(mnv_buffer_download(got, a, SIZE_MAX, 2) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_upload(NULL, 0, want, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_upload(a, 0, NULL, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_download(NULL, a, 0, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_download(got, NULL, 0, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_copy(b, 0, a, 0, nb + 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_copy(a, 0, b, 1, nb) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_copy(NULL, 0, a, 0, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_copy(a, 0, NULL, 0, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_copy(a, 10, a, 0, 11) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "overlap") != NULL);
    CHECK(mnv_buffer_copy(a, 0, a, 10, 11) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_buffer_copy(a, 0, a, 10, 10) == MNV_OK);
    memmove(want, want + 10, 10);
    CHECK(mnv_buffer_download(got, a, 0, na) == MNV_OK && !memcmp(got, want, na));
    /* buffers of two backends */
    mnv_backend *other = NULL;
    mnv_backend_params p = {.name = "cpu", .n_threads = 1};
    mnv_buffer *c = NULL;
    if (mnv_backend_create(&p, &other) == MNV_OK && mnv_buffer_alloc(other, nb, &c) == MNV_OK) {
        CHECK(mnv_buffer_copy(c, 0, a, 0, 1) == MNV_ERR_INVALID_ARG);
        CHECK(strstr(mnv_last_error(), "two backends") != NULL);
    }
    mnv_buffer_free(c);
    mnv_backend_free(other);
    mnv_buffer_free(NULL);
    mnv_buffer_free(a);
    mnv_buffer_free(b);
    free(want);
    free(got);
    free(tmp);
}

/* ---- the executor on a backend with its own memory --------------------------------- */

typedef struct {
    mnv_array *x, *ids, *y;
} small_graph;

/* y = (table[ids] + x) * x over (T, D): two inputs, one weight, an output. */
static small_graph build(mnv_graph *g, const float *table, int64_t V, int64_t T, int64_t D) {
    small_graph s;
    mnv_graph_reset(g);
    int64_t xs[2] = {T, D}, is[1] = {T}, ts[2] = {V, D};
    s.x = mnv_input(g, MNV_DTYPE_F32, 2, xs, "x");
    s.ids = mnv_input(g, MNV_DTYPE_I32, 1, is, "ids");
    mnv_array *w = mnv_param(g, table, MNV_DTYPE_F32, 2, ts, "table");
    s.y = mnv_mul(g, mnv_add(g, mnv_get_rows(g, w, s.ids), s.x), s.x);
    mnv_set_output(s.y);
    return s;
}

static void fill_inputs(small_graph *s, int64_t V, int64_t T, int64_t D) {
    float *x = mnv_input_data(s->x);
    int32_t *id = mnv_input_data(s->ids);
    for (int64_t i = 0; i < T * D; i++) x[i] = t_randf();
    for (int64_t t = 0; t < T; t++) id[t] = t_randint(0, (int)V - 1);
}

static void test_executor(void) {
    const int64_t V = 37, T = 9, D = 24;
    float *table = malloc(sizeof(float) * V * D), *want = malloc(sizeof(float) * T * D),
          *got = malloc(sizeof(float) * T * D);
    for (int64_t i = 0; i < V * D; i++) table[i] = t_randf();
    mnv_backend_params p = {.name = "cpu", .n_threads = 2};
    mnv_backend *cpu = NULL, *dev = guard_create();
    mnv_executor *ec = NULL, *ed = NULL;
    mnv_graph *g = NULL, *gd = NULL; /* a plan lives in the nodes: one graph per executor */
    CHECK(dev && mnv_backend_create(&p, &cpu) == MNV_OK && mnv_graph_create(64, &g) == MNV_OK &&
          mnv_graph_create(64, &gd) == MNV_OK);
    if (!dev || !cpu || !g || !gd) return;
    CHECK(mnv_backend_host_memory(cpu) && !mnv_backend_host_memory(dev));
    CHECK(mnv_executor_create(cpu, &ec) == MNV_OK && mnv_executor_create(dev, &ed) == MNV_OK);
    small_graph s = build(g, table, V, T, D), sd = build(gd, table, V, T, D);
    CHECKF(mnv_graph_status(g) == MNV_OK && mnv_graph_status(gd) == MNV_OK, "%s", mnv_last_error());
    size_t need_c = 0, need_d = 0;
    CHECK(mnv_executor_plan(ec, g, &need_c) == MNV_OK);
    CHECK(mnv_executor_plan(ed, gd, &need_d) == MNV_OK);
    /* the device's arena holds the inputs too */
    CHECK(need_d >= need_c + (size_t)(T * D * 4 + T * 4));
    for (int rep = 0; rep < 3; rep++) { /* a replayed graph: inputs refilled, uploaded again */
        fill_inputs(&s, V, T, D);
        const float *x = mnv_input_data(s.x);
        const int32_t *id = mnv_input_data(s.ids);
        memcpy(mnv_input_data(sd.x), x, sizeof(float) * T * D);
        memcpy(mnv_input_data(sd.ids), id, sizeof(int32_t) * T);
        for (int64_t t = 0; t < T; t++)
            for (int64_t d = 0; d < D; d++)
                want[t * D + d] = (table[id[t] * D + d] + x[t * D + d]) * x[t * D + d];
        /* the CPU reads the inputs where the graph keeps them */
        CHECKF(mnv_executor_run_planned(ec, g, need_c) == MNV_OK, "%s", mnv_last_error());
        CHECK(s.x->data == mnv_input_data(s.x) && s.ids->data == mnv_input_data(s.ids));
        memset(got, 0, sizeof(float) * T * D);
        CHECK(mnv_executor_read(ec, s.y, got, sizeof(float) * T * D) == MNV_OK);
        CHECK(!memcmp(got, want, sizeof(float) * T * D));
        /* the device gets them uploaded into its arena */
        int up = ((guard_ctx *)dev->ctx)->uploads;
        CHECKF(mnv_executor_run_planned(ed, gd, need_d) == MNV_OK, "%s", mnv_last_error());
        CHECK(((guard_ctx *)dev->ctx)->uploads == up + 2);
        CHECK(sd.x->data != mnv_input_data(sd.x) && sd.ids->data != mnv_input_data(sd.ids));
        memset(got, 0, sizeof(float) * T * D);
        CHECKF(mnv_executor_read(ed, sd.y, got, sizeof(float) * T * D) == MNV_OK, "%s", mnv_last_error());
        CHECKF(!memcmp(got, want, sizeof(float) * T * D), "guarded backend, run %d", rep);
    }
    /* reading: past the node's end, and a node with no place in the arena */
    CHECK(mnv_executor_read(ed, sd.y, got, sizeof(float) * T * D + 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_executor_read(ec, s.x, got, 4) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "'x'") != NULL);
    /* the plain executor path plans and runs in one call */
    fill_inputs(&sd, V, T, D);
    CHECK(mnv_executor_run(ed, gd) == MNV_OK && mnv_executor_read(ed, sd.y, got, 4) == MNV_OK);
    mnv_executor_free(ec);
    mnv_executor_free(ed);
    mnv_graph_free(g);
    mnv_graph_free(gd);
    mnv_backend_free(cpu);
    mnv_backend_free(dev);
    free(table);
    free(want);
    free(got);
}

/* ---- the engine and the session on it -------------------------------------------- */

#define NP 6
#define NGEN 12

/* NP prompts (some sharing a prefix) through one engine, all at once, then
 * the first again through a session. */
static void run_all(mnv_model *m, int32_t prompts[NP][40], const int *lens, t_ids *got) {
    t_engine_greedy(m, NP, prompts, lens, NGEN, got);
    t_session_greedy(m, prompts[0], lens[0], NGEN, &got[NP]);
}

/* The engine asks for the default backend: made the guarded one, every
 * step's inputs, its KV blocks and its logits go through the buffer calls,
 * and any other touch of backend memory faults. Same tokens as the CPU. */
static void test_engine_on_device(const char *dir) {
    int V = 0;
    mnv_model *m = t_load_model(dir, &V);
    if (!m) return;
    int32_t prompts[NP][40];
    int lens[NP];
    for (int i = 0; i < NP; i++) { /* odd ones share prompt 0's first 20 tokens (a cached block) */
        lens[i] = i % 2 == 0 && i ? t_randint(3, 40) : t_randint(21, 40);
        for (int j = 0; j < lens[i]; j++)
            prompts[i][j] = i % 2 && j < 20 ? prompts[0][j] : t_randint(0, V - 1);
    }
    t_ids want[NP + 1], got[NP + 1];
    CHECK(mnv__backend_set_default("cpu") == MNV_OK);
    int n0 = n_computes;
    run_all(m, prompts, lens, want);
    CHECK(mnv__backend_set_default("guarded") == MNV_OK);
    int n1 = n_computes;
    run_all(m, prompts, lens, got);
    CHECK(mnv__backend_set_default("cpu") == MNV_OK);
    CHECKF(n1 == n0 && n_computes > n1 + NGEN, "%s: %d graphs on the guarded backend", dir, n_computes - n1);
    for (int i = 0; i <= NP; i++)
        CHECKF(want[i].n == NGEN && got[i].n == want[i].n && !memcmp(got[i].ids, want[i].ids, sizeof(int32_t) * NGEN),
               "%s: %s %d: the guarded backend's tokens differ from the CPU's", dir, i < NP ? "request" : "session",
               i);
    mnv_model_free(m);
}

/* The planner with a backend's lifetime hook: a value kept past its last
 * reader is not given to the node after that reader, and is freed when its
 * extended life ends (a long chain does not grow the arena). */
static void test_plan_hook(void) {
    mnv_backend *dev = guard_create();
    mnv_graph *g = NULL;
    mnv_executor *ex = NULL;
    CHECK(dev && mnv_graph_create(256, &g) == MNV_OK);
    if (!dev || !g) {
        mnv_backend_free(dev);
        return;
    }
    dev->iface = &extend_iface;
    CHECK(mnv_executor_create(dev, &ex) == MNV_OK);
    const int64_t n = 4096, len = 60;
    int64_t shape[1] = {n};
    mnv_array *x = mnv_input(g, MNV_DTYPE_F32, 1, shape, "x"), *y = x, *chain[60];
    for (int i = 0; i < len; i++) chain[i] = y = mnv_scale(g, y, 1.0f + 1.0f / (float)(i + 1));
    mnv_set_output(y);
    size_t need = 0, one = (size_t)n * 4;
    CHECKF(mnv_executor_plan(ex, g, &need) == MNV_OK, "%s", mnv_last_error());
    CHECKF(need <= 5 * one, "arena %zu bytes for a chain of %d x %zu with lives one node longer", need, (int)len, one);
    bool apart = true; /* node i + 2 is placed while node i still lives */
    for (int i = 0; i + 2 < len; i++) {
        size_t a = chain[i]->offset, b = chain[i + 2]->offset;
        apart &= a + one <= b || b + one <= a;
    }
    CHECK(apart);
    mnv_executor_free(ex);
    mnv_graph_free(g);
    mnv_backend_free(dev);
}

int main(void) {
    t_seed();
    test_plan_hook();
    mnv_backend_params p = {.name = "cpu", .n_threads = 1};
    mnv_backend *cpu = NULL;
    CHECK(mnv_backend_create(&p, &cpu) == MNV_OK);
    if (cpu) {
        CHECK(mnv_backend_host_memory(cpu));
        test_calls(cpu);
        mnv_backend_free(cpu);
    }
    mnv_backend *dev = guard_create();
    CHECK(dev != NULL);
    if (dev) {
        test_calls(dev);
        mnv_backend_free(dev);
    }
    test_executor();
    CHECK(mnv__backend_register("guarded", guard_ctor) == MNV_OK);
    CHECK(mnv__backend_register("cpu", guard_ctor) == MNV_ERR_INVALID_ARG);
    mnv_backend *b = NULL;
    CHECK(mnv_backend_create(&(mnv_backend_params){.name = "nonesuch"}, &b) == MNV_ERR_UNSUPPORTED && !b);
    test_engine_on_device("../models/stories260K");
    test_engine_on_device("fixtures/models/tiny-gptoss-mxfp4");
    return t_done();
}
