/* The KV block pool: sizes, accounting, tables, prefix sharing, copy on write,
 * eviction order, sliding-window rings, errors, and a randomized stress test
 * that checks K/V contents through the tables and every invariant. */
#include <pthread.h>
#include <stdatomic.h>

#include "runtime/kv_pool.h"
#include "test.h"

/* The block memory: host memory here, handed to the pool as the engine
 * hands it a backend buffer, with copy on write through host_copy. */
typedef struct {
    mnv_kv_pool *pool;
    uint8_t *mem;
    uint64_t size;
    int fail; /* host_copy refuses */
    int copies;
} host_mem;
static host_mem mems[4];

static mnv_status host_copy(void *ctx, uint64_t dst, uint64_t src, uint64_t size) {
    host_mem *h = ctx;
    if (!h || h->fail) return mnv_set_error(MNV_ERR_INTERNAL, "test: the copy is refused");
    CHECK(dst + size <= h->size && src + size <= h->size && (dst + size <= src || src + size <= dst));
    memcpy(h->mem + dst, h->mem + src, size);
    h->copies++;
    return MNV_OK;
}

static host_mem *mem_of(const mnv_kv_pool *pool) {
    for (int i = 0; i < 4; i++)
        if (mems[i].pool == pool) return &mems[i];
    return NULL;
}

/* Host address of a row: the memory's base + the pool's offset. */
static void *kvp(const mnv_kv_pool *pool, int32_t b, int32_t l, int32_t kv, int32_t t) {
    return mem_of(pool)->mem + mnv_kv_pool_offset(pool, b, l, kv, t);
}

static mnv_kv_pool_params small_params(int32_t B, int64_t n_blocks_tokens) {
    mnv_kv_pool_params p = mnv_kv_pool_params_default();
    p.n_kv_heads = 1;
    p.head_dim = 2; /* f32: one K row is 8 bytes, room for a 64-bit tag */
    p.block_tokens = B;
    p.max_tokens = n_blocks_tokens;
    p.max_seqs = 8;
    p.max_seq_tokens = 1024;
    p.mem_available = (uint64_t)1 << 40;
    p.copy = host_copy;
    return p;
}

static mnv_kv_pool *make(const mnv_kv_pool_params *p) {
    host_mem *h = mem_of(NULL);
    CHECK(h != NULL);
    if (!h) return NULL;
    mnv_kv_pool_params q = *p;
    q.copy_ctx = h;
    mnv_kv_pool *pool = NULL;
    mnv_status st = mnv_kv_pool_create(&q, &pool);
    CHECKF(st == MNV_OK, "%s", mnv_last_error());
    if (!pool) return NULL;
    mnv_kv_pool_stats s;
    mnv_kv_pool_stats_get(pool, &s);
    *h = (host_mem){.pool = pool, .mem = malloc(s.bytes_total), .size = s.bytes_total};
    CHECK(h->mem != NULL);
    return pool;
}

static void drop(mnv_kv_pool *pool) {
    host_mem *h = mem_of(pool);
    if (h) {
        free(h->mem);
        *h = (host_mem){0};
    }
    mnv_kv_pool_free(pool);
}

static void check_ok(const mnv_kv_pool *pool) {
    mnv_status st = mnv_kv_pool_check(pool);
    CHECKF(st == MNV_OK, "%s", mnv_last_error());
}

static void fill(int32_t *t, int64_t n, int32_t base) {
    for (int64_t i = 0; i < n; i++) t[i] = base + (int32_t)i;
}

/* prepare + commit n tokens */
static mnv_status append(mnv_kv_pool *pool, int32_t seq, const int32_t *tok, int64_t n) {
    mnv_status st = mnv_kv_pool_prepare_append(pool, seq, n);
    return st == MNV_OK ? mnv_kv_pool_commit(pool, seq, tok, n) : st;
}

static void test_sizes(void) {
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_F32, 8, 64, 32) == 2 * 8 * 64 * 4);
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_F16, 8, 64, 32) == 2 * 8 * 64 * 2);
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_BF16, 4, 128, 0) == 2 * 4 * 128 * 2);
    /* q8: 64 bytes of codes + 2 groups * (f16 scale + f16 bias) per head row */
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_Q8, 8, 64, 32) == 2 * 8 * (64 + 2 * 4));
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_Q4, 8, 64, 32) == 2 * 8 * (32 + 2 * 4));
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_Q8, 8, 64, 48) == 0); /* group does not divide */
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_F32, 0, 64, 32) == 0);
    CHECK(mnv_kv_bytes_per_token_layer(MNV_KV_TYPE_COUNT, 8, 64, 32) == 0);

    /* Planning: budget and max_tokens; gpt-oss-like groups. */
    mnv_kv_pool_params p = mnv_kv_pool_params_default();
    p.k_type = p.v_type = MNV_KV_BF16;
    p.n_kv_heads = 8;
    p.head_dim = 64;
    p.block_tokens = 16;
    p.n_groups = 2;
    p.groups[0] = (mnv_kv_group){12, 0};
    p.groups[1] = (mnv_kv_group){12, 128};
    p.max_seqs = 4;
    p.max_tokens = 1000;
    /* 63 blocks for 1000 tokens of the full group, 4 * (8 + 1) for the rings */
    CHECK(mnv_kv_pool_plan_blocks(&p) == 63 + 36);
    uint64_t bb = (uint64_t)2 * 8 * 64 * 2 * 16 * 12;
    p.budget_bytes = bb * 10 + bb / 2;
    CHECK(mnv_kv_pool_plan_blocks(&p) == 10);
    p.budget_bytes = bb / 2;
    CHECK(mnv_kv_pool_plan_blocks(&p) == -1);
    p.budget_bytes = 0;
    p.max_tokens = 0;
    CHECK(mnv_kv_pool_plan_blocks(&p) == -1);
    p.max_tokens = 100;
    p.groups[1].n_layers = 0;
    CHECK(mnv_kv_pool_plan_blocks(&p) == -1);
    CHECK(strstr(mnv_last_error(), "group 1") != NULL);
}

static void test_create_accounting(void) {
    mnv_kv_pool_params p = small_params(16, 16 * 10);
    p.n_groups = 2;
    p.groups[0] = (mnv_kv_group){3, 0};
    p.groups[1] = (mnv_kv_group){2, 0};
    p.max_seqs = 2;
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    mnv_kv_pool_stats s;
    mnv_kv_pool_stats_get(pool, &s);
    /* 2 groups * 10 blocks; a block is 16 tokens * 3 layers (the larger group) * 16 bytes */
    CHECK(s.blocks_total == 20 && s.block_bytes == 16 * 3 * 16);
    CHECK(s.bytes_total == 20 * s.block_bytes && s.bytes_free == s.bytes_total);
    CHECK(s.blocks_used == 0 && s.blocks_cached == 0 && s.blocks_free == 20 && s.n_seqs == 0);
    CHECK(s.meta_bytes > 0);

    int32_t tok[40], seq;
    int64_t nc;
    fill(tok, 40, 100);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 40, &seq, &nc) == MNV_OK && nc == 0);
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 40) == MNV_OK);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_used == 6 && s.blocks_free == 14 && s.n_seqs == 1); /* 3 blocks per group */
    CHECK(s.bytes_used == 6 * s.block_bytes && s.bytes_free == 14 * s.block_bytes);
    CHECK(mnv_kv_pool_blocks_available(pool) == 14);

    /* Tables and addresses: every (block, layer, K|V, token) row is distinct
     * and inside the one allocation. */
    int64_t n0, n1;
    const int32_t *t0 = mnv_kv_pool_table(pool, seq, 0, &n0);
    const int32_t *t1 = mnv_kv_pool_table(pool, seq, 1, &n1);
    CHECK(n0 == 3 && n1 == 3);
    for (int i = 0; i < 3; i++) CHECK(t0[i] >= 0 && t1[i] >= 0 && t0[i] != t1[i]);
    uint8_t *base = kvp(pool, 0, 0, 0, 0);
    uint8_t *last = kvp(pool, 19, 2, 1, 15);
    CHECK((size_t)(last - base) == s.bytes_total - 8);
    CHECK(mnv_kv_pool_offset(pool, 0, 0, 0, 0) == 0 && mnv_kv_pool_offset(pool, 19, 2, 1, 15) == s.bytes_total - 8);
    CHECK((uint8_t *)kvp(pool, 1, 0, 0, 0) - base == (ptrdiff_t)s.block_bytes);
    CHECK((uint8_t *)kvp(pool, 0, 0, 1, 0) - base == 16 * 8);
    CHECK((uint8_t *)kvp(pool, 0, 1, 0, 0) - base == 2 * 16 * 8);
    CHECK(mnv_kv_pool_commit(pool, seq, tok, 40) == MNV_OK);
    CHECK(mnv_kv_pool_seq_len(pool, seq) == 40);
    CHECK(mnv_kv_pool_blocks_needed(pool, seq, 8) == 0);
    CHECK(mnv_kv_pool_blocks_needed(pool, seq, 9) == 2);
    check_ok(pool);

    /* Finishing: the two full blocks of each group stay cached, the partial ones are freed. */
    mnv_kv_pool_seq_free(pool, seq);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_used == 0 && s.blocks_cached == 4 && s.blocks_free == 16 && s.n_seqs == 0);
    CHECK(s.bytes_cached == 4 * s.block_bytes && s.blocks_peak_used == 6);
    check_ok(pool);
    mnv_kv_pool_seq_free(pool, seq); /* unknown now: ignored */
    drop(pool);

    /* A pool needs the copy function of its block memory. */
    mnv_kv_pool *q = (mnv_kv_pool *)1;
    p.copy = NULL;
    CHECK(mnv_kv_pool_create(&p, &q) == MNV_ERR_INVALID_ARG && q == NULL);
    CHECK(strstr(mnv_last_error(), "copy function") != NULL);
    p.copy = host_copy;
    /* The memory check names the figures. */
    p.mem_available = 4096;
    CHECK(mnv_kv_pool_create(&p, &q) == MNV_ERR_NOMEM && q == NULL);
    CHECK(strstr(mnv_last_error(), "20 blocks of 768 bytes") && strstr(mnv_last_error(), "available"));
    /* and the machine's own figure is read when none is given */
    p.mem_available = 0;
    p.max_tokens = (int64_t)1 << 38;
    p.block_tokens = 1024;
    CHECK(mnv_kv_pool_create(&p, &q) == MNV_ERR_NOMEM && q == NULL);
}

static void test_prefix(void) {
    mnv_kv_pool_params p = small_params(16, 16 * 16);
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    int32_t a[40], b[40], seqa, seqb, seqc;
    int64_t nc;
    fill(a, 40, 1000);
    CHECK(mnv_kv_pool_seq_start(pool, a, 40, &seqa, &nc) == MNV_OK && nc == 0);
    /* Uncommitted blocks are not found: a second sequence gets nothing yet. */
    CHECK(mnv_kv_pool_prepare_append(pool, seqa, 40) == MNV_OK);
    CHECK(mnv_kv_pool_seq_start(pool, a, 40, &seqb, &nc) == MNV_OK && nc == 0);
    mnv_kv_pool_seq_free(pool, seqb);
    CHECK(mnv_kv_pool_commit(pool, seqa, a, 40) == MNV_OK);

    /* Hit: 35 shared tokens -> two full blocks, the same physical ids. */
    memcpy(b, a, sizeof b);
    b[35] = -7;
    CHECK(mnv_kv_pool_seq_start(pool, b, 40, &seqb, &nc) == MNV_OK && nc == 32);
    int64_t na, nb;
    const int32_t *ta = mnv_kv_pool_table(pool, seqa, 0, &na);
    const int32_t *tb = mnv_kv_pool_table(pool, seqb, 0, &nb);
    CHECK(nb == 2 && ta[0] == tb[0] && ta[1] == tb[1]);
    CHECK(mnv_kv_pool_block_ref(pool, ta[0]) == 2 && mnv_kv_pool_block_ref(pool, ta[2]) == 1);
    CHECK(mnv_kv_pool_seq_len(pool, seqb) == 32);
    CHECK(append(pool, seqb, b + 32, 8) == MNV_OK);
    check_ok(pool);

    /* Miss in the second block: only the first is taken. Miss in the first: nothing. */
    b[20] = -1;
    CHECK(mnv_kv_pool_seq_start(pool, b, 40, &seqc, &nc) == MNV_OK && nc == 16);
    mnv_kv_pool_seq_free(pool, seqc);
    b[3] = -1;
    CHECK(mnv_kv_pool_seq_start(pool, b, 40, &seqc, &nc) == MNV_OK && nc == 0);
    mnv_kv_pool_seq_free(pool, seqc);
    /* A prompt of exactly two blocks: the last token is left to compute. */
    CHECK(mnv_kv_pool_seq_start(pool, a, 32, &seqc, &nc) == MNV_OK && nc == 16);
    mnv_kv_pool_seq_free(pool, seqc);
    CHECK(mnv_kv_pool_seq_start(pool, a, 33, &seqc, &nc) == MNV_OK && nc == 32);
    mnv_kv_pool_seq_free(pool, seqc);
    /* The same tokens at another place in the chain are not a match. */
    CHECK(mnv_kv_pool_seq_start(pool, a + 16, 24, &seqc, &nc) == MNV_OK && nc == 0);
    mnv_kv_pool_seq_free(pool, seqc);

    /* After both finish the full blocks stay cached and are found again. */
    int32_t keep0 = ta[0], keep1 = ta[1];
    mnv_kv_pool_seq_free(pool, seqa);
    mnv_kv_pool_seq_free(pool, seqb);
    mnv_kv_pool_stats s;
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_used == 0 && s.blocks_cached == 2); /* a's two full blocks */
    CHECK(mnv_kv_pool_seq_start(pool, a, 40, &seqc, &nc) == MNV_OK && nc == 32);
    const int32_t *tc = mnv_kv_pool_table(pool, seqc, 0, &na);
    CHECK(tc[0] == keep0 && tc[1] == keep1 && mnv_kv_pool_block_ref(pool, keep0) == 1);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_used == 2 && s.blocks_cached == 0 && s.prefix_hit_tokens == 32 + 16 + 16 + 32 + 32);
    check_ok(pool);
    mnv_kv_pool_seq_free(pool, seqc);
    drop(pool);
}

static void test_cow(void) {
    mnv_kv_pool_params p = small_params(8, 8 * 8);
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    int32_t tok[20], seq, child;
    int64_t nc, n;
    fill(tok, 20, 7);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 12, &seq, &nc) == MNV_OK);
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 12) == MNV_OK);
    const int32_t *t = mnv_kv_pool_table(pool, seq, 0, &n);
    for (int i = 0; i < 12; i++) {
        uint64_t v = 0xabc000u + (uint64_t)i;
        memcpy(kvp(pool, t[i / 8], 0, 0, i % 8), &v, 8);
    }
    CHECK(mnv_kv_pool_commit(pool, seq, tok, 12) == MNV_OK);
    CHECK(mnv_kv_pool_seq_fork(pool, seq, &child) == MNV_OK);
    const int32_t *tc = mnv_kv_pool_table(pool, child, 0, &n);
    int32_t shared = t[1];
    CHECK(n == 2 && tc[1] == shared && mnv_kv_pool_block_ref(pool, shared) == 2);
    CHECK(mnv_kv_pool_seq_len(pool, child) == 12);
    /* Writing into a shared partial block without prepare_append is refused. */
    CHECK(mnv_kv_pool_commit(pool, child, tok + 12, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_kv_pool_blocks_needed(pool, child, 1) == 1);
    /* A failing copy is reported; the child keeps the shared block and the pool its blocks. */
    mem_of(pool)->fail = 1;
    CHECK(mnv_kv_pool_prepare_append(pool, child, 1) == MNV_ERR_INTERNAL);
    CHECK(strstr(mnv_last_error(), "copy is refused") != NULL);
    mem_of(pool)->fail = 0;
    CHECK(mnv_kv_pool_table(pool, child, 0, &n)[1] == shared && mnv_kv_pool_block_ref(pool, shared) == 2);
    CHECK(mnv_kv_pool_blocks_available(pool) == 6);
    check_ok(pool);
    CHECK(mnv_kv_pool_prepare_append(pool, child, 1) == MNV_OK);
    CHECK(mem_of(pool)->copies == 1);
    tc = mnv_kv_pool_table(pool, child, 0, &n);
    CHECK(tc[1] != shared && tc[0] == t[0]);
    CHECK(mnv_kv_pool_block_ref(pool, shared) == 1 && mnv_kv_pool_block_ref(pool, tc[1]) == 1);
    CHECK(!memcmp(kvp(pool, tc[1], 0, 0, 0), kvp(pool, shared, 0, 0, 0), 4 * 8));
    uint64_t v = 77, w = 88, r;
    memcpy(kvp(pool, tc[1], 0, 0, 4), &v, 8); /* the child's position 12 */
    CHECK(mnv_kv_pool_commit(pool, child, tok + 12, 1) == MNV_OK);
    /* The parent's own append does not copy now (its block is no longer shared). */
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 1) == MNV_OK &&
          mnv_kv_pool_table(pool, seq, 0, &n)[1] == shared);
    memcpy(kvp(pool, shared, 0, 0, 4), &w, 8); /* the parent's position 12 */
    memcpy(&r, kvp(pool, tc[1], 0, 0, 4), 8);
    CHECK(r == 77);
    memcpy(&r, kvp(pool, tc[1], 0, 0, 3), 8);
    CHECK(r == 0xabc000u + 11);
    mnv_kv_pool_stats s;
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.cow_copies == 1 && s.blocks_used == 3);
    check_ok(pool);
    mnv_kv_pool_seq_free(pool, seq);
    mnv_kv_pool_seq_free(pool, child);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_used == 0 && s.blocks_cached == 1 && s.blocks_free == 7);
    check_ok(pool);
    drop(pool);
}

/* Eviction is least recently released first; a sequence releases its blocks
 * last to first, so a prefix loses its tail before its head. */
static void test_eviction(void) {
    mnv_kv_pool_params p = small_params(4, 4 * 6);
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    int32_t a[13], b[9], c[32], seq;
    int64_t nc;
    fill(a, 13, 100);
    fill(b, 9, 500);
    fill(c, 32, 900);
    CHECK(mnv_kv_pool_seq_start(pool, a, 13, &seq, &nc) == MNV_OK);
    CHECK(append(pool, seq, a, 13) == MNV_OK); /* 3 full blocks + 1 token */
    mnv_kv_pool_seq_free(pool, seq);           /* cached: a2, a1, a0 (oldest first) */
    CHECK(mnv_kv_pool_seq_start(pool, b, 9, &seq, &nc) == MNV_OK);
    CHECK(append(pool, seq, b, 9) == MNV_OK);
    mnv_kv_pool_seq_free(pool, seq); /* then b1, b0 */
    mnv_kv_pool_stats s;
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_cached == 5 && s.blocks_free == 1);
    /* A sequence of 3 blocks: the free block, then a2 and a1 evicted. */
    CHECK(mnv_kv_pool_seq_start(pool, c, 12, &seq, &nc) == MNV_OK && nc == 0);
    CHECK(append(pool, seq, c, 12) == MNV_OK);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.evictions == 2 && s.blocks_cached == 3);
    check_ok(pool);
    int32_t s2;
    CHECK(mnv_kv_pool_seq_start(pool, a, 13, &s2, &nc) == MNV_OK && nc == 4); /* a0 only */
    mnv_kv_pool_seq_free(pool, s2);
    CHECK(mnv_kv_pool_seq_start(pool, b, 9, &s2, &nc) == MNV_OK && nc == 8); /* b intact */
    mnv_kv_pool_seq_free(pool, s2);
    /* Taking a0, then b, moved them to the recent end in that order: a0 goes next. */
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 4) == MNV_OK);
    CHECK(mnv_kv_pool_seq_start(pool, a, 13, &s2, &nc) == MNV_OK && nc == 0);
    mnv_kv_pool_seq_free(pool, s2);
    CHECK(mnv_kv_pool_seq_start(pool, b, 9, &s2, &nc) == MNV_OK && nc == 8);
    mnv_kv_pool_seq_free(pool, s2);
    /* Full: 4 used by seq, 2 cached; asking for 3 more fails and changes nothing. */
    CHECK(mnv_kv_pool_commit(pool, seq, c + 12, 4) == MNV_OK);
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 12) == MNV_ERR_NOMEM);
    CHECK(strstr(mnv_last_error(), "needs 3 blocks") != NULL);
    int64_t n;
    mnv_kv_pool_table(pool, seq, 0, &n);
    CHECK(n == 4 && mnv_kv_pool_seq_len(pool, seq) == 16);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.evictions == 3 && s.blocks_cached == 2 && s.blocks_used == 4);
    check_ok(pool);
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 8) == MNV_OK);
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_cached == 0 && s.blocks_used == 6 && s.blocks_free == 0 && s.bytes_free == 0);
    mnv_kv_pool_seq_free(pool, seq);
    check_ok(pool);
    drop(pool);
}

/* A window-W group keeps ceil(W/B) + 1 blocks while decoding, and the
 * positions the next token reads are always live. */
static void test_ring(void) {
    const int32_t B = 8, W = 20;
    mnv_kv_pool_params p = small_params(B, 8 * 40);
    p.n_groups = 2;
    p.groups[0] = (mnv_kv_group){2, 0};
    p.groups[1] = (mnv_kv_group){2, W};
    p.max_seqs = 2;
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    int32_t tok[200], seq;
    int64_t nc, n;
    fill(tok, 200, 3);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 5, &seq, &nc) == MNV_OK);
    CHECK(append(pool, seq, tok, 5) == MNV_OK);
    int max_live = 0, ok = 1;
    mnv_kv_pool_stats s;
    for (int64_t i = 5; i < 200; i++) {
        CHECK(mnv_kv_pool_prepare_append(pool, seq, 1) == MNV_OK);
        const int32_t *t = mnv_kv_pool_table(pool, seq, 1, &n);
        int live = 0;
        for (int64_t j = 0; j < n; j++) live += t[j] >= 0;
        max_live = MNV_MAX(max_live, live);
        for (int64_t q = MNV_MAX(0, i - W + 1); q <= i; q++) ok &= t[q / B] >= 0;
        CHECK(mnv_kv_pool_commit(pool, seq, tok + i, 1) == MNV_OK);
        mnv_kv_pool_stats_get(pool, &s);
        ok &= s.blocks_used == (i + 1 + B - 1) / B + live;
    }
    CHECK(ok);
    CHECK(max_live == (W + B - 1) / B + 1);
    check_ok(pool);
    /* A chunk of k tokens holds ceil((W - 1 + k) / B) + 1 at most. */
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 40) == MNV_OK);
    const int32_t *t = mnv_kv_pool_table(pool, seq, 1, &n);
    int live = 0;
    for (int64_t j = 0; j < n; j++) live += t[j] >= 0;
    CHECK(live <= (W - 1 + 40 + B - 1) / B + 1);
    mnv_kv_pool_seq_free(pool, seq);
    check_ok(pool);
    drop(pool);
}

/* Prefixes with a sliding group: reused when the window's blocks are cached,
 * shortened when they are not. */
static void test_ring_prefix(void) {
    const int32_t B = 4, W = 8;
    mnv_kv_pool_params p = small_params(B, 4 * 16);
    p.n_groups = 2;
    p.groups[0] = (mnv_kv_group){1, 0};
    p.groups[1] = (mnv_kv_group){1, W};
    p.max_seqs = 4;
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    int32_t tok[40], seq, s2;
    int64_t nc, n;
    fill(tok, 40, 50);
    /* Decoded token by token: the ring releases early blocks to the cache. */
    CHECK(mnv_kv_pool_seq_start(pool, tok, 1, &seq, &nc) == MNV_OK);
    for (int i = 0; i < 30; i++) CHECK(append(pool, seq, tok + i, 1) == MNV_OK);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 30, &s2, &nc) == MNV_OK && nc == 28);
    const int32_t *t = mnv_kv_pool_table(pool, s2, 1, &n);
    /* position 28's window [21, 28] reads blocks 5 and 6 of the sliding group */
    CHECK(n == 7 && t[4] == -1 && t[5] >= 0 && t[6] >= 0);
    CHECK(mnv_kv_pool_table(pool, s2, 0, &n)[0] >= 0 && n == 7);
    mnv_kv_pool_seq_free(pool, s2);
    /* A prompt ending mid-way needs the window blocks of that point: cached too. */
    CHECK(mnv_kv_pool_seq_start(pool, tok, 14, &s2, &nc) == MNV_OK && nc == 12);
    t = mnv_kv_pool_table(pool, s2, 1, &n);
    CHECK(n == 3 && t[0] == -1 && t[1] >= 0 && t[2] >= 0);
    mnv_kv_pool_seq_free(pool, s2);
    check_ok(pool);
    mnv_kv_pool_seq_free(pool, seq);
    /* Oldest cached now: sliding blocks 0 and 3 (1 and 2 were taken and
     * released again above). A sequence taking every free block and two
     * more evicts exactly those; matches that need them shrink. */
    mnv_kv_pool_stats st;
    mnv_kv_pool_stats_get(pool, &st);
    CHECK(st.blocks_total == 28 && st.blocks_free == 14 && st.blocks_cached == 14);
    int32_t other[40];
    fill(other, 40, 9000);
    CHECK(mnv_kv_pool_seq_start(pool, other, 1, &seq, &nc) == MNV_OK);
    CHECK(mnv_kv_pool_prepare_append(pool, seq, 32) == MNV_OK); /* 8 blocks per group */
    mnv_kv_pool_stats_get(pool, &st);
    CHECK(st.evictions == 2 && st.blocks_free == 0 && st.blocks_cached == 12);
    check_ok(pool);
    /* 18 tokens: position 16 reads sliding blocks 2, 3; 3 is gone -> 12 tokens. */
    CHECK(mnv_kv_pool_seq_start(pool, tok, 18, &s2, &nc) == MNV_OK && nc == 12);
    mnv_kv_pool_seq_free(pool, s2);
    /* 10 tokens: position 8 reads sliding blocks 0, 1; 0 is gone, and so is
     * position 4's -> nothing, though full blocks 0 and 1 are cached. */
    CHECK(mnv_kv_pool_seq_start(pool, tok, 10, &s2, &nc) == MNV_OK && nc == 0);
    mnv_kv_pool_seq_free(pool, s2);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 30, &s2, &nc) == MNV_OK && nc == 28);
    mnv_kv_pool_seq_free(pool, s2);
    mnv_kv_pool_seq_free(pool, seq);
    check_ok(pool);
    drop(pool);
}

static void test_errors(void) {
    mnv_kv_pool_params p = small_params(4, 4 * 8);
    p.max_seqs = 2;
    p.max_seq_tokens = 10;
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    int32_t tok[12] = {0}, a, b, c;
    int64_t nc;
    CHECK(mnv_kv_pool_seq_start(pool, tok, 0, &a, &nc) == MNV_ERR_INVALID_ARG && a == -1);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 11, &a, &nc) == MNV_ERR_RANGE);
    CHECK(strstr(mnv_last_error(), "context of 10") != NULL);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 3, &a, &nc) == MNV_OK);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 3, &b, &nc) == MNV_OK);
    CHECK(mnv_kv_pool_seq_start(pool, tok, 3, &c, &nc) == MNV_ERR_NOMEM && c == -1);
    CHECK(mnv_kv_pool_seq_fork(pool, a, &c) == MNV_ERR_NOMEM);
    CHECK(mnv_kv_pool_prepare_append(pool, a, 11) == MNV_ERR_RANGE);
    CHECK(mnv_kv_pool_prepare_append(pool, 5, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_kv_pool_prepare_append(pool, a, 3) == MNV_OK);
    CHECK(mnv_kv_pool_commit(pool, a, tok, 5) == MNV_ERR_INVALID_ARG);
    CHECK(strstr(mnv_last_error(), "past the 4 prepared") != NULL);
    CHECK(mnv_kv_pool_commit(pool, a, NULL, 1) == MNV_ERR_INVALID_ARG);
    CHECK(mnv_kv_pool_commit(pool, a, tok, 3) == MNV_OK);
    CHECK(mnv_kv_pool_blocks_needed(pool, 7, 1) == -1);
    int64_t n;
    CHECK(mnv_kv_pool_table(pool, a, 1, &n) == NULL && n == 0);
    CHECK(mnv_kv_pool_seq_len(pool, 9) == -1);
    check_ok(pool);
    mnv_kv_pool_seq_free(pool, a);
    mnv_kv_pool_seq_free(pool, b);
    check_ok(pool);
    drop(pool);
    mnv_kv_pool_free(NULL);
}

static void test_hash(void) {
    int32_t t[16];
    fill(t, 16, 1);
    uint64_t h = mnv_kv_block_hash(0, t, 16);
    CHECK(h == mnv_kv_block_hash(0, t, 16));
    CHECK(h != mnv_kv_block_hash(1, t, 16));
    CHECK(h != mnv_kv_block_hash(0, t, 15));
    t[15] ^= 1;
    CHECK(h != mnv_kv_block_hash(0, t, 16));
    /* Single-token blocks of neighbouring ids: no collisions, and each output
     * bit is set about half the time. */
    enum { N = 1 << 14 };
    static uint64_t hs[N];
    int bits[64] = {0};
    for (int32_t i = 0; i < N; i++) {
        hs[i] = mnv_kv_block_hash(0, &i, 1);
        for (int k = 0; k < 64; k++) bits[k] += (int)(hs[i] >> k & 1);
    }
    int dup = 0;
    for (int32_t i = 0; i < N; i++)
        for (int32_t j = i + 1; j < i + 64 && j < N; j++) dup += hs[i] == hs[j];
    CHECK(dup == 0);
    int skew = 0;
    for (int k = 0; k < 64; k++) skew += bits[k] < N * 45 / 100 || bits[k] > N * 55 / 100;
    CHECK(skew == 0);
}

/* Stats read from another thread while the owner thread mutates. */
static atomic_int stop_reader;
static void *reader(void *arg) {
    mnv_kv_pool *pool = arg;
    long bad = 0;
    while (!stop_reader) {
        mnv_kv_pool_stats s;
        mnv_kv_pool_stats_get(pool, &s);
        bad += s.blocks_used + s.blocks_cached + s.blocks_free != s.blocks_total;
    }
    return (void *)bad;
}

static void test_stats_thread(void) {
    mnv_kv_pool_params p = small_params(4, 4 * 32);
    mnv_kv_pool *pool = make(&p);
    if (!pool) return;
    pthread_t th;
    stop_reader = 0;
    CHECK(pthread_create(&th, NULL, reader, pool) == 0);
    int32_t tok[64], seq;
    int64_t nc;
    fill(tok, 64, 1);
    for (int r = 0; r < 2000; r++) {
        if (mnv_kv_pool_seq_start(pool, tok, 1 + r % 60, &seq, &nc) != MNV_OK) break;
        if (append(pool, seq, tok + nc, 1 + r % 60 - nc) != MNV_OK) break;
        mnv_kv_pool_seq_free(pool, seq);
    }
    stop_reader = 1;
    void *bad;
    pthread_join(th, &bad);
    CHECK(bad == NULL);
    check_ok(pool);
    drop(pool);
}

/* ---- the randomized stress test ------------------------------------------------
 * Sequences of random lengths with prompts that share random prefixes of a few
 * base texts, chunked prefill, decode, forks, cancels at random points, and
 * preemption when the pool is full. Every K/V row a sequence writes holds a
 * tag of its whole prefix (positions and tokens up to it), so reading a row
 * through a table checks that prefix sharing handed out the right blocks and
 * that copy on write kept sequences apart. */

enum { ST_SEQS = 12, ST_MAXT = 300, ST_BASES = 3 };

typedef struct {
    int live;
    int32_t id;
    int64_t n, n_prompt, goal;
    int32_t tok[ST_MAXT];
    uint64_t pv[ST_MAXT]; /* pv[i]: tag of tokens 0..i */
} st_seq;

static uint64_t st_tag(uint64_t prev, int32_t t) {
    uint64_t z = (prev ^ (uint32_t)t) * 0x100000001b3ull;
    z ^= z >> 29;
    return z * 0xbf58476d1ce4e5b9ull + 1;
}

static uint64_t st_row(uint64_t pv, int g, int l, int kv) {
    return pv ^ ((uint64_t)(g * 16 + l * 2 + kv) << 56);
}

static void st_write(mnv_kv_pool *pool, const mnv_kv_pool_params *p, const st_seq *s, int64_t from,
                     int64_t to) {
    for (int g = 0; g < p->n_groups; g++) {
        int64_t n;
        const int32_t *t = mnv_kv_pool_table(pool, s->id, g, &n);
        for (int64_t q = from; q < to; q++)
            for (int l = 0; l < p->groups[g].n_layers; l++)
                for (int kv = 0; kv < 2; kv++) {
                    uint64_t v = st_row(s->pv[q], g, l, kv);
                    memcpy(
                        kvp(pool, t[q / p->block_tokens], l, kv, (int32_t)(q % p->block_tokens)),
                        &v, 8);
                }
    }
}

/* Rows the next token reads: all of a full group, the window of a sliding one. */
static long st_verify(mnv_kv_pool *pool, const mnv_kv_pool_params *p, const st_seq *s) {
    long bad = 0;
    for (int g = 0; g < p->n_groups; g++) {
        int64_t n;
        const int32_t *t = mnv_kv_pool_table(pool, s->id, g, &n);
        int32_t w = p->groups[g].window;
        for (int64_t q = w ? MNV_MAX(0, s->n - w + 1) : 0; q < s->n; q++) {
            int32_t b = t[q / p->block_tokens];
            if (b < 0) {
                if (!bad)
                    fprintf(stderr, "stress: seq %d position %lld group %d: released block read\n", s->id,
                            (long long)q, g);
                bad++;
                continue;
            }
            for (int l = 0; l < p->groups[g].n_layers; l++)
                for (int kv = 0; kv < 2; kv++) {
                    uint64_t v;
                    memcpy(&v, kvp(pool, b, l, kv, (int32_t)(q % p->block_tokens)), 8);
                    if (v != st_row(s->pv[q], g, l, kv)) {
                        if (!bad)
                            fprintf(stderr,
                                    "stress: seq %d position %lld group %d: wrong row (n %lld, prompt %lld, "
                                    "block %d ref %d)\n",
                                    s->id, (long long)q, g, (long long)s->n, (long long)s->n_prompt, b,
                                    mnv_kv_pool_block_ref(pool, b));
                        bad++;
                    }
                }
        }
    }
    return bad;
}

static void st_tags(st_seq *s, int64_t from, int64_t to) {
    for (int64_t i = from; i < to; i++) s->pv[i] = st_tag(i ? s->pv[i - 1] : 0x5eed, s->tok[i]);
}

typedef struct {
    mnv_kv_pool *pool;
    const mnv_kv_pool_params *p;
    st_seq *seqs;
    int32_t (*bases)[ST_MAXT];
    long bad, nomem, starts, finished, cancelled, forks;
    int64_t hits;
} st_ctx;

static void st_cancel(st_ctx *c, int i) {
    mnv_kv_pool_seq_free(c->pool, c->seqs[i].id);
    c->seqs[i].live = 0;
}

static void st_start(st_ctx *c, int i) {
    st_seq *s = &c->seqs[i];
    s->goal = t_randint(1, ST_MAXT);
    int64_t shared = t_randint(0, 3) ? t_randint(0, (int)s->goal) : 0;
    const int32_t *base = c->bases[t_randint(0, ST_BASES - 1)];
    for (int64_t j = 0; j < s->goal; j++) s->tok[j] = j < shared ? base[j] : t_randint(0, 40);
    st_tags(s, 0, s->goal);
    s->n_prompt = t_randint(1, (int)s->goal);
    int64_t nc;
    if (mnv_kv_pool_seq_start(c->pool, s->tok, s->n_prompt, &s->id, &nc) != MNV_OK) return;
    c->starts++;
    c->hits += nc;
    s->n = nc;
    s->live = 1;
    c->bad += st_verify(c->pool, c->p, s);
}

static void st_fork(st_ctx *c, int src, int i) {
    st_seq *a = &c->seqs[src], *s = &c->seqs[i];
    if (mnv_kv_pool_seq_fork(c->pool, a->id, &s->id) != MNV_OK) return;
    c->forks++;
    s->n = s->n_prompt = a->n;
    s->goal = t_randint((int)MNV_MAX(a->n, 1), ST_MAXT);
    memcpy(s->tok, a->tok, (size_t)a->n * sizeof(int32_t));
    for (int64_t j = a->n; j < s->goal; j++) s->tok[j] = t_randint(0, 40);
    st_tags(s, 0, s->goal);
    s->live = 1;
    c->bad += st_verify(c->pool, c->p, s);
}

/* One step of sequence i: a prefill chunk or one decoded token. */
static void st_step(st_ctx *c, int i) {
    st_seq *s = &c->seqs[i];
    if (s->n >= s->goal) {
        c->finished++;
        st_cancel(c, i);
        return;
    }
    int64_t chunk = t_randint(1, 3 * c->p->block_tokens); /* not inside MNV_MIN: it evaluates twice */
    int64_t k = s->n < s->n_prompt ? MNV_MIN(s->n_prompt - s->n, chunk) : 1;
    int64_t need = mnv_kv_pool_blocks_needed(c->pool, s->id, k),
            avail = mnv_kv_pool_blocks_available(c->pool);
    mnv_status st = mnv_kv_pool_prepare_append(c->pool, s->id, k);
    if (st == MNV_ERR_NOMEM) {
        c->nomem++;
        if (need <= avail) { /* refused though it fitted */
            fprintf(stderr, "stress: %s (needed %lld, available %lld)\n", mnv_last_error(), (long long)need,
                    (long long)avail);
            c->bad++;
        }
        int victim = t_randint(0, ST_SEQS - 1);
        if (!c->seqs[victim].live) victim = i;
        c->cancelled++;
        st_cancel(c, victim);
        return;
    }
    if (st != MNV_OK) {
        fprintf(stderr, "stress: %s\n", mnv_last_error());
        c->bad++;
        return;
    }
    if (need > avail) {
        fprintf(stderr, "stress: an append of %lld blocks fitted in %lld\n", (long long)need,
                (long long)avail);
        c->bad++;
    }
    st_write(c->pool, c->p, s, s->n, s->n + k);
    if (mnv_kv_pool_commit(c->pool, s->id, s->tok + s->n, k) != MNV_OK) {
        fprintf(stderr, "stress: %s\n", mnv_last_error());
        c->bad++;
    }
    s->n += k;
    if (t_randint(0, 3) == 0) c->bad += st_verify(c->pool, c->p, s);
}

static void st_run(mnv_kv_pool_params *p, int steps) {
    mnv_kv_pool *pool = make(p);
    if (!pool) return;
    static st_seq seqs[ST_SEQS];
    static int32_t bases[ST_BASES][ST_MAXT];
    memset(seqs, 0, sizeof seqs);
    for (int b = 0; b < ST_BASES; b++)
        for (int j = 0; j < ST_MAXT; j++) bases[b][j] = t_randint(0, 1000);
    st_ctx c = {.pool = pool, .p = p, .seqs = seqs, .bases = bases};
    long broken = 0;
    for (int it = 0; it < steps; it++) {
        int i = t_randint(0, ST_SEQS - 1), r = t_randint(0, 99);
        if (!seqs[i].live) {
            int src = t_randint(0, ST_SEQS - 1);
            if (r < 10 && seqs[src].live)
                st_fork(&c, src, i);
            else if (r < 60)
                st_start(&c, i);
        } else if (r < 3) {
            c.cancelled++;
            st_cancel(&c, i);
        } else {
            st_step(&c, i);
        }
        if (it % 50 == 0 && mnv_kv_pool_check(pool) != MNV_OK && !broken++)
            fprintf(stderr, "stress: step %d: %s\n", it, mnv_last_error());
    }
    CHECKF(broken == 0, "%ld invariant failures", broken);
    CHECKF(c.bad == 0, "%ld wrong rows or refused appends", c.bad);
    CHECK(c.starts > 100 && c.finished > 10 && c.forks > 10 && c.nomem > 0 && c.hits > 0);
    printf("stress: B %d, %d groups, %lld blocks: %ld starts (%lld prompt tokens from the cache), "
           "%ld forks, %ld finished, %ld cancelled, %ld pool-full\n",
           p->block_tokens, p->n_groups, (long long)mnv_kv_pool_plan_blocks(p), c.starts, (long long)c.hits,
           c.forks, c.finished, c.cancelled, c.nomem);
    for (int i = 0; i < ST_SEQS; i++)
        if (seqs[i].live) st_cancel(&c, i);
    check_ok(pool);
    mnv_kv_pool_stats s;
    mnv_kv_pool_stats_get(pool, &s);
    CHECK(s.blocks_used == 0 && s.n_seqs == 0 && s.blocks_cached + s.blocks_free == s.blocks_total);
    CHECK(s.evictions > 0 && s.bytes_used == 0 && s.bytes_cached + s.bytes_free == s.bytes_total);
    /* Every block can be handed out again: one sequence takes all of them. */
    int32_t fresh = -5, seq;
    int64_t nc, per_group = s.blocks_total / p->n_groups;
    CHECK(mnv_kv_pool_seq_start(pool, &fresh, 1, &seq, &nc) == MNV_OK);
    if (per_group * p->block_tokens <= ST_MAXT) {
        CHECK(mnv_kv_pool_prepare_append(pool, seq, per_group * p->block_tokens) == MNV_OK);
        mnv_kv_pool_stats_get(pool, &s);
        CHECK(s.blocks_used == per_group * p->n_groups && s.blocks_cached == 0);
    }
    mnv_kv_pool_seq_free(pool, seq);
    check_ok(pool);
    drop(pool);
}

static void test_stress(void) {
    mnv_kv_pool_params p = small_params(4, 4 * 150);
    p.max_seqs = ST_SEQS;
    p.max_seq_tokens = ST_MAXT;
    st_run(&p, 20000);

    p = small_params(4, 4 * 100);
    p.max_seqs = ST_SEQS;
    p.max_seq_tokens = ST_MAXT;
    p.n_groups = 2;
    p.groups[0] = (mnv_kv_group){2, 0};
    p.groups[1] = (mnv_kv_group){2, 10};
    st_run(&p, 20000);

    p = small_params(8, 8 * 60);
    p.max_seqs = ST_SEQS;
    p.max_seq_tokens = ST_MAXT;
    p.n_groups = 3;
    p.groups[0] = (mnv_kv_group){1, 0};
    p.groups[1] = (mnv_kv_group){2, 33};
    p.groups[2] = (mnv_kv_group){1, 5};
    st_run(&p, 20000);
}

int main(void) {
    t_seed();
    test_sizes();
    test_create_accounting();
    test_prefix();
    test_cow();
    test_eviction();
    test_ring();
    test_ring_prefix();
    test_errors();
    test_hash();
    test_stats_thread();
    test_stress();
    return t_done();
}
