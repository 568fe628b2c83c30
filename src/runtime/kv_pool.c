/* The KV block pool (see kv_pool.h for the model of blocks, tables, rings,
 * prefix sharing and copy on write). */
#include "runtime/kv_pool.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysinfo.h>

enum { KV_FREE = 0, KV_USED, KV_CACHED };

typedef struct {
    int32_t ref;
    int8_t state;
    int8_t hashed; /* in the hash index under (group, hash) */
    int8_t group;
    int32_t prev, next; /* LRU links while cached */
    int32_t hnext;      /* hash bucket chain */
    uint64_t hash, parent;
} kv_block;

typedef struct {
    int32_t *ids; /* (cap) logical block -> physical id, -1 when released by a ring */
    int64_t len, cap;
    int64_t lo; /* first live logical block (sliding groups) */
} kv_table;

typedef struct {
    bool active;
    int64_t n_tokens;   /* tokens committed */
    uint64_t last_hash; /* chain hash of the last full block; 0 before the first */
    int32_t *partial;   /* (B) tokens of the partly filled block */
    kv_table t[MNV_KV_MAX_GROUPS];
} kv_seq;

struct mnv_kv_pool {
    mnv_kv_pool_params p;
    int32_t B, n_layers_max;
    size_t tok_bytes[2]; /* K, V of one token of one layer */
    size_t block_bytes;
    int32_t n_blocks; /* block memory (the owner's): (n_blocks, n_layers_max, K rows (B) then V rows (B)) */
    kv_block *blk;
    int32_t *btok;       /* (n_blocks, B) tokens of indexed blocks */
    int32_t *free_stack; /* LIFO: the last block freed is the next one handed out */
    int32_t n_free;
    int32_t lru_head, lru_tail; /* head: least recently released */
    int32_t n_cached, n_used, peak_used;
    int32_t *buckets; /* (n_buckets) head of each hash chain, -1 empty */
    uint32_t n_buckets;
    kv_seq *seqs;
    int32_t *partials; /* (max_seqs, B) */
    int32_t n_seqs;
    int64_t hit_tokens, evictions, cow_copies;
    uint64_t meta_fixed;
    pthread_mutex_t mu; /* guards snap */
    mnv_kv_pool_stats snap;
};

/* ---- sizes ------------------------------------------------------------------ */

size_t mnv_kv_bytes_per_token_layer(mnv_kv_type type, int32_t n_kv_heads, int32_t head_dim,
                                    int32_t quant_group) {
    mnv_kv_layout l;
    if (n_kv_heads <= 0 || head_dim <= 0 || mnv_kv_layout_make(type, head_dim, quant_group, &l) != MNV_OK) return 0;
    return 2 * (size_t)n_kv_heads * (size_t)l.row_bytes;
}

/* K (kv 0) or V (kv 1) bytes of one token in one layer; 0 when invalid. */
static size_t side_bytes(const mnv_kv_pool_params *p, int kv) {
    return mnv_kv_bytes_per_token_layer(kv ? p->v_type : p->k_type, p->n_kv_heads, p->head_dim, p->quant_group) / 2;
}

mnv_kv_pool_params mnv_kv_pool_params_default(void) {
    mnv_kv_pool_params p;
    memset(&p, 0, sizeof p);
    p.k_type = p.v_type = MNV_KV_F32;
    p.block_tokens = 16;
    p.n_groups = 1;
    p.groups[0].n_layers = 1;
    p.max_seqs = 16;
    p.max_seq_tokens = 4096;
    p.prefix_cache = 1;
    return p;
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static size_t block_bytes_of(const mnv_kv_pool_params *p) {
    int32_t lmax = 0;
    for (int g = 0; g < p->n_groups; g++) lmax = MNV_MAX(lmax, p->groups[g].n_layers);
    return (side_bytes(p, 0) + side_bytes(p, 1)) * (size_t)p->block_tokens * (size_t)lmax;
}

static mnv_status validate(const mnv_kv_pool_params *p) {
    for (int kv = 0; kv < 2; kv++) {
        mnv_kv_type t = kv ? p->v_type : p->k_type;
        if (t <= MNV_KV_DEFAULT || t >= MNV_KV_TYPE_COUNT)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: unknown %s element type %d", kv ? "V" : "K", (int)t);
        if (!side_bytes(p, kv))
            return mnv_set_error(MNV_ERR_INVALID_ARG,
                                 "kv pool: invalid shape for %s %s: n_kv_heads %d, head_dim %d, quant_group %d",
                                 kv ? "V" : "K", mnv_kv_type_name(t), p->n_kv_heads, p->head_dim, p->quant_group);
    }
    if (p->block_tokens < 1 || p->block_tokens > 4096)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: block_tokens %d not in [1, 4096]",
                             p->block_tokens);
    if (p->n_groups < 1 || p->n_groups > MNV_KV_MAX_GROUPS)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: n_groups %d not in [1, %d]", p->n_groups,
                             MNV_KV_MAX_GROUPS);
    for (int g = 0; g < p->n_groups; g++)
        if (p->groups[g].n_layers < 1 || p->groups[g].window < 0)
            return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: group %d: n_layers %d, window %d", g,
                                 p->groups[g].n_layers, p->groups[g].window);
    if (p->max_seqs < 1 || p->max_seq_tokens < 1)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: max_seqs %d, max_seq_tokens %" PRId64,
                             p->max_seqs, p->max_seq_tokens);
    return MNV_OK;
}

static mnv_status plan(const mnv_kv_pool_params *p, int64_t *out) {
    mnv_status st = validate(p);
    if (st != MNV_OK) return st;
    uint64_t bb = block_bytes_of(p);
    int64_t n;
    if (p->budget_bytes) {
        n = (int64_t)(p->budget_bytes / bb);
    } else if (p->max_tokens > 0) {
        n = 0;
        for (int g = 0; g < p->n_groups; g++) {
            int32_t w = p->groups[g].window;
            n += w ? (int64_t)p->max_seqs * (cdiv(w, p->block_tokens) + 1)
                   : cdiv(p->max_tokens, p->block_tokens);
        }
    } else {
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: neither budget_bytes nor max_tokens is set");
    }
    if (n < 1 || n > INT32_MAX / 2)
        return mnv_set_error(MNV_ERR_RANGE,
                             "kv pool: %" PRId64 " blocks of %" PRIu64 " bytes: not in [1, %d]", n, bb,
                             INT32_MAX / 2);
    *out = n;
    return MNV_OK;
}

int64_t mnv_kv_pool_plan_blocks(const mnv_kv_pool_params *p) {
    int64_t n = -1;
    return plan(p, &n) == MNV_OK ? n : -1;
}

/* MemAvailable from /proc/meminfo, else sysinfo's free + buffer RAM. */
static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(f);
                return (uint64_t)kb * 1024;
            }
        fclose(f);
    }
    struct sysinfo si;
    if (sysinfo(&si) == 0) return ((uint64_t)si.freeram + si.bufferram) * si.mem_unit;
    return UINT64_MAX; /* unknown: do not refuse */
}

/* ---- the hash ----------------------------------------------------------------
 * Each token is folded into the state with a multiply-xorshift step and the
 * result goes through splitmix64's finalizer. Seeded by the parent hash. */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t mnv_kv_block_hash(uint64_t parent, const int32_t *tokens, int32_t n) {
    uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
    for (int32_t i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)tokens[i] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return mix64(h ^ (uint64_t)n);
}

static uint32_t bucket_of(const mnv_kv_pool *pool, int32_t g, uint64_t h) {
    return (uint32_t)(mix64(h + (uint64_t)g * 0x9e3779b97f4a7c15ull) & (pool->n_buckets - 1));
}

static int32_t index_find(const mnv_kv_pool *pool, int32_t g, uint64_t h, uint64_t parent,
                          const int32_t *tokens) {
    for (int32_t b = pool->buckets[bucket_of(pool, g, h)]; b >= 0; b = pool->blk[b].hnext) {
        const kv_block *k = &pool->blk[b];
        if (k->group == g && k->hash == h && k->parent == parent &&
            !memcmp(pool->btok + (size_t)b * pool->B, tokens, (size_t)pool->B * sizeof(int32_t)))
            return b;
    }
    return -1;
}

static void index_remove(mnv_kv_pool *pool, int32_t b) {
    kv_block *k = &pool->blk[b];
    int32_t *pp = &pool->buckets[bucket_of(pool, k->group, k->hash)];
    while (*pp != b) pp = &pool->blk[*pp].hnext;
    *pp = k->hnext;
    k->hnext = -1;
    k->hashed = 0;
}

/* ---- block states ------------------------------------------------------------ */

static void lru_unlink(mnv_kv_pool *pool, int32_t b) {
    kv_block *k = &pool->blk[b];
    if (k->prev >= 0)
        pool->blk[k->prev].next = k->next;
    else
        pool->lru_head = k->next;
    if (k->next >= 0)
        pool->blk[k->next].prev = k->prev;
    else
        pool->lru_tail = k->prev;
    k->prev = k->next = -1;
    pool->n_cached--;
}

static void lru_push(mnv_kv_pool *pool, int32_t b) {
    kv_block *k = &pool->blk[b];
    k->prev = pool->lru_tail;
    k->next = -1;
    if (pool->lru_tail >= 0)
        pool->blk[pool->lru_tail].next = b;
    else
        pool->lru_head = b;
    pool->lru_tail = b;
    pool->n_cached++;
}

static void set_used(mnv_kv_pool *pool) {
    if (pool->n_used > pool->peak_used) pool->peak_used = pool->n_used;
}

/* A block for writing: the free list first, else evict the LRU cached block. */
static int32_t block_alloc(mnv_kv_pool *pool) {
    int32_t b;
    if (pool->n_free > 0) {
        b = pool->free_stack[--pool->n_free];
    } else if (pool->lru_head >= 0) {
        b = pool->lru_head;
        lru_unlink(pool, b);
        index_remove(pool, b);
        pool->evictions++;
    } else {
        return -1;
    }
    kv_block *k = &pool->blk[b];
    k->state = KV_USED;
    k->ref = 1;
    pool->n_used++;
    set_used(pool);
    return b;
}

/* Take a reference on an indexed block (used or cached). */
static void block_take(mnv_kv_pool *pool, int32_t b) {
    kv_block *k = &pool->blk[b];
    if (k->state == KV_CACHED) {
        lru_unlink(pool, b);
        k->state = KV_USED;
        pool->n_used++;
        set_used(pool);
    }
    k->ref++;
}

static void block_release(mnv_kv_pool *pool, int32_t b) {
    kv_block *k = &pool->blk[b];
    if (--k->ref > 0) return;
    pool->n_used--;
    if (k->hashed) {
        k->state = KV_CACHED;
        lru_push(pool, b);
    } else {
        k->state = KV_FREE;
        pool->free_stack[pool->n_free++] = b;
    }
}

/* ---- stats ------------------------------------------------------------------- */

static void publish(mnv_kv_pool *pool) {
    mnv_kv_pool_stats s;
    memset(&s, 0, sizeof s);
    uint64_t bb = pool->block_bytes;
    s.block_bytes = bb;
    s.blocks_total = pool->n_blocks;
    s.blocks_used = pool->n_used;
    s.blocks_cached = pool->n_cached;
    s.blocks_free = pool->n_free;
    s.blocks_peak_used = pool->peak_used;
    s.bytes_total = bb * (uint64_t)pool->n_blocks;
    s.bytes_used = bb * (uint64_t)pool->n_used;
    s.bytes_cached = bb * (uint64_t)pool->n_cached;
    s.bytes_free = bb * (uint64_t)pool->n_free;
    uint64_t tables = 0;
    for (int32_t i = 0; i < pool->p.max_seqs; i++)
        for (int g = 0; g < pool->p.n_groups; g++) tables += (uint64_t)pool->seqs[i].t[g].cap * 4;
    s.meta_bytes = pool->meta_fixed + tables;
    s.n_seqs = pool->n_seqs;
    s.prefix_hit_tokens = pool->hit_tokens;
    s.evictions = pool->evictions;
    s.cow_copies = pool->cow_copies;
    pthread_mutex_lock(&pool->mu);
    pool->snap = s;
    pthread_mutex_unlock(&pool->mu);
}

void mnv_kv_pool_stats_get(mnv_kv_pool *pool, mnv_kv_pool_stats *out) {
    pthread_mutex_lock(&pool->mu);
    *out = pool->snap;
    pthread_mutex_unlock(&pool->mu);
}

/* ---- create / free ------------------------------------------------------------ */

mnv_status mnv_kv_pool_create(const mnv_kv_pool_params *p, mnv_kv_pool **out) {
    *out = NULL;
    if (!p->copy) return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: no copy function for the block memory");
    int64_t nb = 0;
    mnv_status st = plan(p, &nb);
    if (st != MNV_OK) return st;
    uint64_t bb = block_bytes_of(p);
    uint32_t nbk = 1;
    while (nbk < (uint64_t)nb * 2) nbk <<= 1;
    uint64_t meta = (uint64_t)nb * (sizeof(kv_block) + 4 + (uint64_t)p->block_tokens * 4) +
                    (uint64_t)nbk * 4 +
                    (uint64_t)p->max_seqs * (sizeof(kv_seq) + (uint64_t)p->block_tokens * 4);
    uint64_t need = (uint64_t)nb * bb + meta;
    uint64_t avail = p->mem_available ? p->mem_available : mem_available();
    if (need > avail)
        return mnv_set_error(MNV_ERR_NOMEM,
                             "kv pool: %" PRId64 " blocks of %" PRIu64 " bytes (%.1f MiB with %.1f MiB of "
                             "tables) exceed the %.1f MiB of memory available; lower the KV budget "
                             "or max tokens",
                             nb, bb, (double)need / 1048576.0, (double)meta / 1048576.0,
                             (double)avail / 1048576.0);
    mnv_kv_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return mnv_set_error(MNV_ERR_NOMEM, "kv pool: out of memory");
    pool->p = *p;
    pool->B = p->block_tokens;
    for (int g = 0; g < p->n_groups; g++)
        pool->n_layers_max = MNV_MAX(pool->n_layers_max, p->groups[g].n_layers);
    pool->tok_bytes[0] = side_bytes(p, 0);
    pool->tok_bytes[1] = side_bytes(p, 1);
    pool->block_bytes = bb;
    pool->n_blocks = (int32_t)nb;
    pool->n_buckets = nbk;
    pool->meta_fixed = meta;
    pool->lru_head = pool->lru_tail = -1;
    pthread_mutex_init(&pool->mu, NULL);
    pool->blk = calloc((size_t)nb, sizeof(kv_block));
    pool->btok = malloc((size_t)nb * (size_t)pool->B * sizeof(int32_t));
    pool->free_stack = malloc((size_t)nb * sizeof(int32_t));
    pool->buckets = malloc((size_t)nbk * sizeof(int32_t));
    pool->seqs = calloc((size_t)p->max_seqs, sizeof(kv_seq));
    pool->partials = malloc((size_t)p->max_seqs * (size_t)pool->B * sizeof(int32_t));
    if (!pool->blk || !pool->btok || !pool->free_stack || !pool->buckets || !pool->seqs ||
        !pool->partials) {
        mnv_kv_pool_free(pool);
        return mnv_set_error(MNV_ERR_NOMEM,
                             "kv pool: allocating the tables of %" PRId64 " blocks failed", nb);
    }
    for (uint32_t i = 0; i < nbk; i++) pool->buckets[i] = -1;
    /* Stacked so that block 0 is handed out first. */
    for (int32_t i = 0; i < pool->n_blocks; i++) {
        kv_block *k = &pool->blk[i];
        k->prev = k->next = k->hnext = -1;
        pool->free_stack[i] = pool->n_blocks - 1 - i;
    }
    pool->n_free = pool->n_blocks;
    for (int32_t i = 0; i < p->max_seqs; i++) pool->seqs[i].partial = pool->partials + (size_t)i * pool->B;
    publish(pool);
    *out = pool;
    return MNV_OK;
}

void mnv_kv_pool_free(mnv_kv_pool *pool) {
    if (!pool) return;
    if (pool->seqs)
        for (int32_t i = 0; i < pool->p.max_seqs; i++)
            for (int g = 0; g < MNV_KV_MAX_GROUPS; g++) free(pool->seqs[i].t[g].ids);
    free(pool->blk);
    free(pool->btok);
    free(pool->free_stack);
    free(pool->buckets);
    free(pool->seqs);
    free(pool->partials);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

/* ---- sequences ------------------------------------------------------------------ */

static kv_seq *seq_get(const mnv_kv_pool *pool, int32_t seq) {
    if (seq < 0 || seq >= pool->p.max_seqs || !pool->seqs[seq].active) return NULL;
    return &pool->seqs[seq];
}

static mnv_status table_reserve(kv_table *t, int64_t n) {
    if (n <= t->cap) return MNV_OK;
    int64_t cap = MNV_MAX(t->cap * 2, MNV_MAX(n, 16));
    int32_t *ids = realloc(t->ids, (size_t)cap * sizeof(int32_t));
    if (!ids)
        return mnv_set_error(MNV_ERR_NOMEM, "kv pool: growing a block table to %" PRId64 " entries", cap);
    t->ids = ids;
    t->cap = cap;
    return MNV_OK;
}

/* First logical block a sliding group still needs when the next token is at
 * position n_next (its window is [n_next - W + 1, n_next]). */
static int64_t ring_lo(const mnv_kv_pool *pool, int32_t g, int64_t n_next) {
    int32_t w = pool->p.groups[g].window;
    if (!w) return 0;
    return MNV_MAX(0, n_next - w + 1) / pool->B;
}

static mnv_status seq_slot(mnv_kv_pool *pool, int32_t *out) {
    for (int32_t i = 0; i < pool->p.max_seqs; i++)
        if (!pool->seqs[i].active) {
            kv_seq *s = &pool->seqs[i];
            s->active = true;
            s->n_tokens = 0;
            s->last_hash = 0;
            for (int g = 0; g < pool->p.n_groups; g++) s->t[g].len = s->t[g].lo = 0;
            pool->n_seqs++;
            *out = i;
            return MNV_OK;
        }
    return mnv_set_error(MNV_ERR_NOMEM, "kv pool: all %d sequences are in use (max_seqs)", pool->p.max_seqs);
}

/* The longest k <= k_max such that every group holds what a sequence at
 * position k * B needs: blocks 0..k-1 (full groups), or the blocks the next
 * position's window reads (sliding groups). found[g * k_max + j]: block or -1. */
static int64_t prefix_usable(const mnv_kv_pool *pool, const int32_t *found, int64_t k_max) {
    int64_t k = k_max;
    for (int g = 0; g < pool->p.n_groups; g++) {
        if (pool->p.groups[g].window) continue;
        int64_t j = 0;
        while (j < k && found[g * k_max + j] >= 0) j++;
        k = j;
    }
    for (; k > 0; k--) {
        bool ok = true;
        for (int g = 0; g < pool->p.n_groups && ok; g++) {
            if (!pool->p.groups[g].window) continue;
            for (int64_t j = ring_lo(pool, g, k * pool->B); j < k && ok; j++) ok = found[g * k_max + j] >= 0;
        }
        if (ok) break;
    }
    return k;
}

mnv_status mnv_kv_pool_seq_start(mnv_kv_pool *pool, const int32_t *prompt, int64_t n_prompt, int32_t *seq_out,
                                 int64_t *n_cached_out) {
    *seq_out = -1;
    *n_cached_out = 0;
    if (!prompt || n_prompt < 1)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: a sequence needs a prompt of at least one token");
    if (n_prompt > pool->p.max_seq_tokens)
        return mnv_set_error(MNV_ERR_RANGE,
                             "kv pool: prompt of %" PRId64 " tokens exceeds the context of %" PRId64,
                             n_prompt, pool->p.max_seq_tokens);
    const int32_t B = pool->B, G = pool->p.n_groups;
    int64_t k_max = pool->p.prefix_cache ? (n_prompt - 1) / B : 0; /* at least one token is left to compute */
    uint64_t *h = malloc((size_t)(k_max + 1) * sizeof(uint64_t));
    int32_t *found = malloc((size_t)(k_max * G + 1) * sizeof(int32_t));
    if (!h || !found) {
        free(h);
        free(found);
        return mnv_set_error(MNV_ERR_NOMEM, "kv pool: prefix lookup of %" PRId64 " tokens", n_prompt);
    }
    uint64_t parent = 0;
    for (int64_t j = 0; j < k_max; j++) {
        h[j] = mnv_kv_block_hash(parent, prompt + j * B, B);
        for (int g = 0; g < G; g++) found[g * k_max + j] = index_find(pool, g, h[j], parent, prompt + j * B);
        parent = h[j];
    }
    int64_t k = prefix_usable(pool, found, k_max);
    int32_t id = -1;
    mnv_status st = seq_slot(pool, &id);
    for (int g = 0; st == MNV_OK && g < G; g++) st = table_reserve(&pool->seqs[id].t[g], k);
    if (st != MNV_OK) {
        if (id >= 0) {
            pool->seqs[id].active = false;
            pool->n_seqs--;
        }
        free(h);
        free(found);
        return st;
    }
    kv_seq *s = &pool->seqs[id];
    for (int g = 0; g < G; g++) {
        kv_table *t = &s->t[g];
        t->lo = ring_lo(pool, g, k * B);
        for (int64_t j = 0; j < k; j++) {
            t->ids[j] = j < t->lo ? -1 : found[g * k_max + j];
            if (t->ids[j] >= 0) block_take(pool, t->ids[j]);
        }
        t->len = k;
    }
    s->n_tokens = k * B;
    s->last_hash = k ? h[k - 1] : 0;
    pool->hit_tokens += k * B;
    free(h);
    free(found);
    publish(pool);
    *seq_out = id;
    *n_cached_out = k * B;
    return MNV_OK;
}

mnv_status mnv_kv_pool_seq_fork(mnv_kv_pool *pool, int32_t src, int32_t *seq_out) {
    *seq_out = -1;
    kv_seq *a = seq_get(pool, src);
    if (!a) return mnv_set_error(MNV_ERR_INVALID_ARG, "kv pool: fork of unknown sequence %d", src);
    int64_t len = cdiv(a->n_tokens, pool->B);
    int32_t id = -1;
    mnv_status st = seq_slot(pool, &id);
    if (st != MNV_OK) return st;
    kv_seq *s = &pool->seqs[id];
    for (int g = 0; g < pool->p.n_groups; g++) {
        if ((st = table_reserve(&s->t[g], len)) != MNV_OK) {
            s->active = false;
            pool->n_seqs--;
            return st;
        }
    }
    a = &pool->seqs[src];
    for (int g = 0; g < pool->p.n_groups; g++) {
        kv_table *t = &s->t[g];
        const kv_table *ta = &a->t[g];
        t->lo = ta->lo;
        for (int64_t j = 0; j < len; j++) {
            t->ids[j] = ta->ids[j];
            if (t->ids[j] >= 0) block_take(pool, t->ids[j]);
        }
        t->len = len;
    }
    s->n_tokens = a->n_tokens;
    s->last_hash = a->last_hash;
    memcpy(s->partial, a->partial, (size_t)pool->B * sizeof(int32_t));
    publish(pool);
    *seq_out = id;
    return MNV_OK;
}

void mnv_kv_pool_seq_free(mnv_kv_pool *pool, int32_t seq) {
    kv_seq *s = seq_get(pool, seq);
    if (!s) return;
    int64_t len = 0;
    for (int g = 0; g < pool->p.n_groups; g++) len = MNV_MAX(len, s->t[g].len);
    /* Last to first, so the start of a prefix is the last to be evicted. */
    for (int64_t j = len - 1; j >= 0; j--)
        for (int g = 0; g < pool->p.n_groups; g++) {
            kv_table *t = &s->t[g];
            if (j < t->len && t->ids[j] >= 0) block_release(pool, t->ids[j]);
        }
    for (int g = 0; g < pool->p.n_groups; g++) s->t[g].len = s->t[g].lo = 0;
    s->active = false;
    s->n_tokens = 0;
    pool->n_seqs--;
    publish(pool);
}

int64_t mnv_kv_pool_seq_len(const mnv_kv_pool *pool, int32_t seq) {
    const kv_seq *s = seq_get(pool, seq);
    return s ? s->n_tokens : -1;
}

/* ---- appending -------------------------------------------------------------------- */

/* Does group g's partly filled block need a copy before n > 0 tokens are written? */
static bool needs_cow(const mnv_kv_pool *pool, const kv_seq *s, int g) {
    if (s->n_tokens % pool->B == 0) return false;
    int32_t b = s->t[g].ids[s->n_tokens / pool->B];
    return pool->blk[b].ref > 1;
}

int64_t mnv_kv_pool_blocks_needed(const mnv_kv_pool *pool, int32_t seq, int64_t n) {
    const kv_seq *s = seq_get(pool, seq);
    if (!s || n < 0) return -1;
    int64_t need = 0, target = cdiv(s->n_tokens + n, pool->B);
    for (int g = 0; g < pool->p.n_groups; g++) {
        const kv_table *t = &s->t[g];
        need += MNV_MAX(0, target - t->len) + (n > 0 && needs_cow(pool, s, g));
        for (int64_t j = t->lo; j < ring_lo(pool, g, s->n_tokens) && j < t->len; j++)
            if (t->ids[j] >= 0 && pool->blk[t->ids[j]].ref == 1) need--;
    }
    return need;
}

int64_t mnv_kv_pool_blocks_available(const mnv_kv_pool *pool) {
    return (int64_t)pool->n_free + pool->n_cached;
}

mnv_status mnv_kv_pool_prepare_append(mnv_kv_pool *pool, int32_t seq, int64_t n) {
    kv_seq *s = seq_get(pool, seq);
    if (!s || n < 0)
        return mnv_set_error(MNV_ERR_INVALID_ARG,
                             "kv pool: append of %" PRId64 " tokens to unknown sequence %d", n, seq);
    if (s->n_tokens + n > pool->p.max_seq_tokens)
        return mnv_set_error(MNV_ERR_RANGE,
                             "kv pool: sequence %d: %" PRId64 " + %" PRId64
                             " tokens exceed the context of %" PRId64,
                             seq, s->n_tokens, n, pool->p.max_seq_tokens);
    const int G = pool->p.n_groups;
    /* The ring first: blocks behind every window are never read again. */
    for (int g = 0; g < G; g++) {
        kv_table *t = &s->t[g];
        int64_t lo = MNV_MIN(ring_lo(pool, g, s->n_tokens), t->len);
        for (int64_t j = t->lo; j < lo; j++)
            if (t->ids[j] >= 0) {
                block_release(pool, t->ids[j]);
                t->ids[j] = -1;
            }
        t->lo = MNV_MAX(t->lo, lo);
    }
    int64_t target = cdiv(s->n_tokens + n, pool->B), need = 0;
    for (int g = 0; g < G; g++) need += MNV_MAX(0, target - s->t[g].len) + (n > 0 && needs_cow(pool, s, g));
    if (need > mnv_kv_pool_blocks_available(pool)) {
        publish(pool);
        return mnv_set_error(MNV_ERR_NOMEM,
                             "kv pool full: sequence %d needs %" PRId64
                             " blocks, %d free and %d cached of %d "
                             "(%d tokens each, %d sequences alive)",
                             seq, need, pool->n_free, pool->n_cached, pool->n_blocks, pool->B, pool->n_seqs);
    }
    for (int g = 0; g < G; g++) {
        mnv_status st = table_reserve(&s->t[g], target);
        if (st != MNV_OK) return st;
    }
    for (int g = 0; g < G; g++) {
        kv_table *t = &s->t[g];
        if (n > 0 && needs_cow(pool, s, g)) {
            int64_t j = s->n_tokens / pool->B;
            int32_t old = t->ids[j], b = block_alloc(pool);
            uint64_t bb = pool->block_bytes;
            mnv_status st = pool->p.copy(pool->p.copy_ctx, (uint64_t)b * bb, (uint64_t)old * bb, bb);
            if (st != MNV_OK) { /* the new block goes back; the sequence keeps the shared one */
                block_release(pool, b);
                publish(pool);
                return st;
            }
            block_release(pool, old);
            t->ids[j] = b;
            pool->cow_copies++;
        }
        while (t->len < target) t->ids[t->len++] = block_alloc(pool);
    }
    publish(pool);
    return MNV_OK;
}

static void index_insert(mnv_kv_pool *pool, int32_t b, int32_t g, uint64_t h, uint64_t parent,
                         const int32_t *tokens) {
    kv_block *k = &pool->blk[b];
    memcpy(pool->btok + (size_t)b * pool->B, tokens, (size_t)pool->B * sizeof(int32_t));
    k->group = (int8_t)g;
    k->hash = h;
    k->parent = parent;
    k->hashed = 1;
    uint32_t bk = bucket_of(pool, g, h);
    k->hnext = pool->buckets[bk];
    pool->buckets[bk] = b;
}

mnv_status mnv_kv_pool_commit(mnv_kv_pool *pool, int32_t seq, const int32_t *tokens, int64_t n) {
    kv_seq *s = seq_get(pool, seq);
    if (!s || n < 0 || (n > 0 && !tokens))
        return mnv_set_error(MNV_ERR_INVALID_ARG,
                             "kv pool: commit of %" PRId64 " tokens to unknown sequence %d", n, seq);
    if (n == 0) return MNV_OK;
    const int32_t B = pool->B;
    for (int g = 0; g < pool->p.n_groups; g++) {
        if (s->t[g].len * B < s->n_tokens + n)
            return mnv_set_error(MNV_ERR_INVALID_ARG,
                                 "kv pool: sequence %d: commit of %" PRId64 " tokens at %" PRId64
                                 " past the %" PRId64 " prepared",
                                 seq, n, s->n_tokens, s->t[g].len * B);
        if (needs_cow(pool, s, g))
            return mnv_set_error(MNV_ERR_INVALID_ARG,
                                 "kv pool: sequence %d: commit into a shared block (prepare_append first)",
                                 seq);
    }
    for (int64_t i = 0; i < n; i++) {
        s->partial[s->n_tokens % B] = tokens[i];
        if (++s->n_tokens % B) continue;
        int64_t j = s->n_tokens / B - 1;
        uint64_t h = mnv_kv_block_hash(s->last_hash, s->partial, B);
        for (int g = 0; g < pool->p.n_groups; g++) {
            int32_t b = s->t[g].ids[j];
            if (b >= 0 && !pool->blk[b].hashed && index_find(pool, g, h, s->last_hash, s->partial) < 0)
                index_insert(pool, b, g, h, s->last_hash, s->partial);
        }
        s->last_hash = h;
    }
    publish(pool);
    return MNV_OK;
}

/* ---- access -------------------------------------------------------------------------- */

const int32_t *mnv_kv_pool_table(const mnv_kv_pool *pool, int32_t seq, int32_t g, int64_t *n_out) {
    const kv_seq *s = seq_get(pool, seq);
    if (!s || g < 0 || g >= pool->p.n_groups) {
        *n_out = 0;
        return NULL;
    }
    *n_out = s->t[g].len;
    return s->t[g].ids;
}

uint64_t mnv_kv_pool_offset(const mnv_kv_pool *pool, int32_t b, int32_t l, int32_t kv, int32_t t) {
    uint64_t B = (uint64_t)pool->B, layer = B * (pool->tok_bytes[0] + pool->tok_bytes[1]);
    return (uint64_t)b * pool->block_bytes + (uint64_t)l * layer + (kv ? B * pool->tok_bytes[0] : 0) +
           (uint64_t)t * pool->tok_bytes[kv ? 1 : 0];
}

size_t mnv_kv_pool_token_bytes(const mnv_kv_pool *pool, int32_t kv) { return pool->tok_bytes[kv ? 1 : 0]; }

int32_t mnv_kv_pool_block_ref(const mnv_kv_pool *pool, int32_t b) {
    return b >= 0 && b < pool->n_blocks ? pool->blk[b].ref : -1;
}

/* ---- invariants ---------------------------------------------------------------------- */

static mnv_status check_tables(const mnv_kv_pool *pool, int32_t *refs) {
    const int32_t N = pool->n_blocks;
    int32_t n_seqs = 0;
    for (int32_t i = 0; i < pool->p.max_seqs; i++) {
        const kv_seq *s = &pool->seqs[i];
        if (!s->active) {
            for (int g = 0; g < pool->p.n_groups; g++)
                if (s->t[g].len)
                    return mnv_set_error(MNV_ERR_INTERNAL,
                                         "kv pool check: free sequence slot %d holds %" PRId64 " blocks", i,
                                         s->t[g].len);
            continue;
        }
        n_seqs++;
        for (int g = 0; g < pool->p.n_groups; g++) {
            const kv_table *t = &s->t[g];
            if (t->len < cdiv(s->n_tokens, pool->B))
                return mnv_set_error(MNV_ERR_INTERNAL,
                                     "kv pool check: sequence %d group %d: %" PRId64 " blocks for %" PRId64
                                     " tokens",
                                     i, g, t->len, s->n_tokens);
            for (int64_t j = 0; j < t->len; j++) {
                int32_t b = t->ids[j];
                if (j < t->lo && b != -1)
                    return mnv_set_error(
                        MNV_ERR_INTERNAL,
                        "kv pool check: sequence %d group %d: released entry %" PRId64 " is %d", i, g, j, b);
                if (j >= t->lo && (b < 0 || b >= N))
                    return mnv_set_error(MNV_ERR_INTERNAL,
                                         "kv pool check: sequence %d group %d: entry %" PRId64 " is %d", i, g,
                                         j, b);
                if (b >= 0) refs[b]++;
            }
        }
    }
    if (n_seqs != pool->n_seqs)
        return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: %d sequences alive, counter says %d", n_seqs,
                             pool->n_seqs);
    return MNV_OK;
}

static mnv_status check_blocks(const mnv_kv_pool *pool, const int32_t *refs, uint8_t *seen) {
    const int32_t N = pool->n_blocks;
    int32_t n_used = 0, n_hashed = 0;
    for (int32_t b = 0; b < N; b++) {
        const kv_block *k = &pool->blk[b];
        if (k->ref != refs[b])
            return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: block %d: refcount %d, tables hold %d", b,
                                 k->ref, refs[b]);
        int want = k->ref > 0 ? KV_USED : k->hashed ? KV_CACHED : KV_FREE;
        if (k->state != want)
            return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: block %d: state %d, expected %d", b,
                                 k->state, want);
        n_used += k->state == KV_USED;
        if (k->hashed) {
            n_hashed++;
            const int32_t *tok = pool->btok + (size_t)b * pool->B;
            if (mnv_kv_block_hash(k->parent, tok, pool->B) != k->hash)
                return mnv_set_error(MNV_ERR_INTERNAL,
                                     "kv pool check: block %d: hash does not match its tokens", b);
            if (index_find(pool, k->group, k->hash, k->parent, tok) != b)
                return mnv_set_error(MNV_ERR_INTERNAL,
                                     "kv pool check: block %d: not the index's entry for its key", b);
        }
    }
    if (n_used != pool->n_used)
        return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: %d blocks used, counter says %d", n_used,
                             pool->n_used);
    for (int32_t i = 0; i < pool->n_free; i++) {
        int32_t b = pool->free_stack[i];
        if (b < 0 || b >= N || seen[b])
            return mnv_set_error(MNV_ERR_INTERNAL,
                                 "kv pool check: free list entry %d: block %d out of range or listed twice",
                                 i, b);
        if (pool->blk[b].state != KV_FREE)
            return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: free list holds block %d of state %d", b,
                                 pool->blk[b].state);
        seen[b] = 1;
    }
    int32_t n_lru = 0;
    for (int32_t b = pool->lru_head, prev = -1; b >= 0; prev = b, b = pool->blk[b].next) {
        if (seen[b] || n_lru > N)
            return mnv_set_error(MNV_ERR_INTERNAL,
                                 "kv pool check: LRU list: block %d listed twice or in the free list", b);
        if (pool->blk[b].prev != prev)
            return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: LRU list: block %d has a broken back link",
                                 b);
        if (pool->blk[b].state != KV_CACHED)
            return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: LRU list holds block %d of state %d", b,
                                 pool->blk[b].state);
        seen[b] = 1;
        if (pool->blk[b].next < 0 && pool->lru_tail != b)
            return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: LRU list: tail is %d, walk ends at %d",
                                 pool->lru_tail, b);
        n_lru++;
    }
    if (n_lru != pool->n_cached)
        return mnv_set_error(MNV_ERR_INTERNAL,
                             "kv pool check: %d cached blocks in the LRU list, counter says %d", n_lru,
                             pool->n_cached);
    if (pool->n_free + n_lru + n_used != N)
        return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: %d free + %d cached + %d used != %d blocks",
                             pool->n_free, n_lru, n_used, N);
    int32_t n_indexed = 0;
    for (uint32_t i = 0; i < pool->n_buckets; i++)
        for (int32_t b = pool->buckets[i]; b >= 0; b = pool->blk[b].hnext) {
            if (!pool->blk[b].hashed || bucket_of(pool, pool->blk[b].group, pool->blk[b].hash) != i)
                return mnv_set_error(MNV_ERR_INTERNAL,
                                     "kv pool check: hash index: block %d in bucket %u is not indexed there",
                                     b, i);
            if (++n_indexed > N)
                return mnv_set_error(MNV_ERR_INTERNAL, "kv pool check: hash index: a chain loops");
        }
    if (n_indexed != n_hashed)
        return mnv_set_error(MNV_ERR_INTERNAL,
                             "kv pool check: hash index holds %d blocks, %d are marked indexed", n_indexed,
                             n_hashed);
    return MNV_OK;
}

mnv_status mnv_kv_pool_check(const mnv_kv_pool *pool) {
    int32_t *refs = calloc((size_t)pool->n_blocks, sizeof(int32_t));
    uint8_t *seen = calloc((size_t)pool->n_blocks, 1);
    mnv_status st = !refs || !seen ? mnv_set_error(MNV_ERR_NOMEM, "kv pool check: out of memory")
                                   : check_tables(pool, refs);
    if (st == MNV_OK) st = check_blocks(pool, refs, seen);
    free(refs);
    free(seen);
    return st;
}
