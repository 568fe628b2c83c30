/* A context of random K/V for decode benchmarks at depth.
 *
 * Decoding after d tokens costs the same whatever the cached K/V hold: the
 * attention reads every row of the window and does the same arithmetic. A
 * benchmark at 32K tokens of context would otherwise first spend most of
 * its time computing them (a prefill whose attention grows with the square
 * of the length), so this appends n tokens to a sequence by writing random
 * rows, stored in the cache's element types, straight into the pool's
 * blocks, then committing them as if a step had computed them. The tokens
 * and the values have no relation: only the cost of what follows means
 * something. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/engine_int.h"

enum { FILL_ROWS = 61 /* distinct random token rows per side */ };

/* FILL_ROWS token rows (n_kv_heads head rows each) of random values in
 * [-2, 2) stored in layout lay. */
static uint8_t *random_rows(const mnv_kv_layout *lay, int32_t heads, uint64_t *x) {
    size_t tb = (size_t)heads * (size_t)lay->row_bytes;
    uint8_t *rows = malloc(tb * FILL_ROWS);
    float *f = malloc((size_t)lay->head_dim * sizeof *f);
    if (!rows || !f) {
        free(rows), free(f);
        return NULL;
    }
    for (int32_t r = 0; r < FILL_ROWS * heads; r++) {
        for (int32_t i = 0; i < lay->head_dim; i++) {
            *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
            f[i] = (float)(*x >> 40) * (4.0f / 16777216.0f) - 2.0f;
        }
        mnv_kv_store_row(lay, f, rows + (size_t)r * (size_t)lay->row_bytes);
    }
    free(f);
    return rows;
}

/* Write the rows of positions [p0, p1) of every layer of group g. */
static mnv_status fill_group(mnv_engine *e, int32_t seq, int32_t g, int64_t p0, int64_t p1, uint8_t *const src[2],
                             uint8_t *blk, uint64_t *x) {
    const int64_t B = e->kv.block_tokens;
    int64_t nt;
    const int32_t *tab = mnv_kv_pool_table(e->pool, seq, g, &nt);
    size_t tb[2] = {mnv_kv_pool_token_bytes(e->pool, 0), mnv_kv_pool_token_bytes(e->pool, 1)};
    for (int32_t l = 0; l < e->kv.n_layer; l++) {
        if (e->layer_group[l] != g) continue;
        for (int64_t p = p0; p < p1;) {
            int64_t r0 = p % B, n = MNV_MIN(B - r0, p1 - p);
            int32_t b = p / B < nt ? tab[p / B] : -1;
            if (b < 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "filling the context: position %lld has no block",
                                            (long long)p);
            for (int kv = 0; kv < 2; kv++) {
                for (int64_t j = 0; j < n; j++) {
                    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
                    memcpy(blk + (size_t)j * tb[kv], src[kv] + (size_t)(*x % FILL_ROWS) * tb[kv], tb[kv]);
                }
                uint64_t off = mnv_kv_pool_offset(e->pool, b, e->layer_index[l], kv, (int32_t)r0);
                mnv_status st = mnv_buffer_upload(e->kv_mem, (size_t)off, blk, (size_t)n * tb[kv]);
                if (st != MNV_OK) return st;
            }
            p += n;
        }
    }
    return MNV_OK;
}

mnv_status mnv__engine_fill_random(mnv_engine *e, int32_t seq, const int32_t *ids, int64_t n, int64_t chunk,
                                   uint64_t seed) {
    uint64_t x = seed | 1;
    const mnv_model_config *c = &e->model->cfg;
    uint8_t *src[2] = {random_rows(&e->kv.k_lay, c->num_key_value_heads, &x),
                       random_rows(&e->kv.v_lay, c->num_key_value_heads, &x)};
    size_t tbmax = MNV_MAX(mnv_kv_pool_token_bytes(e->pool, 0), mnv_kv_pool_token_bytes(e->pool, 1));
    uint8_t *blk = malloc(tbmax * (size_t)e->kv.block_tokens);
    mnv_status st = src[0] && src[1] && blk ? MNV_OK : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    for (int64_t done = 0; st == MNV_OK && done < n;) {
        int64_t k = MNV_MIN(chunk > 0 ? chunk : n, n - done), p0 = mnv_kv_pool_seq_len(e->pool, seq);
        if ((st = mnv_kv_pool_prepare_append(e->pool, seq, k)) != MNV_OK) break;
        for (int32_t g = 0; st == MNV_OK && g < e->n_groups; g++) st = fill_group(e, seq, g, p0, p0 + k, src, blk, &x);
        if (st == MNV_OK) st = mnv_kv_pool_commit(e->pool, seq, ids + done, k);
        done += k;
    }
    free(src[0]), free(src[1]), free(blk);
    return st;
}
