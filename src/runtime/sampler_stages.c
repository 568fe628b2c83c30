/* The sampler stages: greedy, dist, temperature, top-k, top-p, min-p and
 * penalties. Each works in place on a mnv_cand_array (see sampler.h). */
#include "runtime/sampler.h"

#include "core/topcands.h"

#include <math.h>
#include <stdlib.h>

/* ---- ordering helpers ------------------------------------------------------ */

/* The one total order: larger logit first, ties to the lower id. */
static inline int cand_before(const mnv_token_cand *a, const mnv_token_cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const mnv_token_cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static inline void cand_swap(mnv_token_cand *a, mnv_token_cand *b) {
    mnv_token_cand t = *a;
    *a = *b;
    *b = t;
}

/* Logit buckets: monotone in the logit, so every candidate of a higher bucket
 * beats every candidate of a lower one. Below-range, -inf and NaN go to 0. */
static inline int bucket_of(float l, float lo, float scale, int nb) {
    float x = (l - lo) * scale;
    return x > 0 ? (x < (float)(nb - 1) ? (int)x : nb - 1) : 0;
}

/* Range of the finite logits of d[0, n); 0 when bucketing can't spread them. */
static int logit_range(const mnv_token_cand *d, size_t n, float *lo, float *hi) {
    float mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        float l = d[i].logit;
        mn = l < mn && l > -INFINITY ? l : mn;
        mx = l > mx ? l : mx;
    }
    *lo = mn, *hi = mx;
    return mx - mn > 0 && isfinite(mx - mn);
}

/* Move the candidates of the fewest top buckets (of 256 over the logit
 * range) that hold at least k of d[0, n) to the front; return their count. */
static size_t bucket_prefilter(mnv_token_cand *d, size_t n, size_t k) {
    enum { NB = 256 };
    float lo, hi;
    if (!logit_range(d, n, &lo, &hi)) return n;
    float scale = NB / (hi - lo);
    size_t hist[NB] = {0}, cnt = 0, m = 0;
    for (size_t i = 0; i < n; i++) hist[bucket_of(d[i].logit, lo, scale, NB)]++;
    int b = NB;
    while (cnt < k) cnt += hist[--b];
    for (size_t i = 0; i < n; i++)
        if (bucket_of(d[i].logit, lo, scale, NB) >= b) cand_swap(&d[i], &d[m++]);
    return m;
}

/* Rearrange d[0, n) so that d[0, k) holds its k best candidates, unordered:
 * bucket prefilters while they shrink a large range, then quickselect
 * (median-of-three pivot) on what is left. O(n), where a full sort of a 200k
 * vocabulary per token would be O(n log n). */
static void cand_select(mnv_token_cand *d, size_t n, size_t k) {
    for (int round = 0; round < 4 && n > 2048 && k < n / 2; round++) {
        size_t m = bucket_prefilter(d, n, k);
        if (m == n) break;
        n = m;
    }
    size_t lo = 0, hi = n; /* d[0, lo) precede d[lo, hi), which precede d[hi, n) */
    for (int budget = 96; k > lo && k < hi && hi - lo > 16; budget--) {
        if (budget == 0) break; /* pathological pivots: sort what is left */
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (cand_before(&d[mid], &d[lo])) cand_swap(&d[mid], &d[lo]);
        if (cand_before(&d[last], &d[lo])) cand_swap(&d[last], &d[lo]);
        if (cand_before(&d[mid], &d[last])) cand_swap(&d[mid], &d[last]); /* median to last */
        size_t store = lo;
        for (size_t i = lo; i < last; i++)
            if (cand_before(&d[i], &d[last])) cand_swap(&d[i], &d[store++]);
        cand_swap(&d[store], &d[last]);
        if (k <= store) hi = store;
        else lo = store + 1;
    }
    if (k > lo && k < hi) qsort(d + lo, hi - lo, sizeof *d, cand_cmp);
}

/* Given d[0, lo) sorted and preceding all of d[lo, n), extend the sorted
 * prefix to d[0, hi). */
static void cand_sort_range(mnv_token_cand *d, size_t lo, size_t n, size_t hi) {
    if (hi <= lo) return;
    if (hi < n) cand_select(d + lo, n - lo, hi - lo);
    qsort(d + lo, hi - lo, sizeof *d, cand_cmp);
}

static size_t cand_best(const mnv_cand_array *c) {
    size_t best = 0;
    for (size_t i = 1; i < c->size; i++)
        if (cand_before(&c->data[i], &c->data[best])) best = i;
    return best;
}

static float cand_max_logit(const mnv_cand_array *c) {
    if (c->sorted) return c->data[0].logit;
    float mx = -INFINITY;
    for (size_t i = 0; i < c->size; i++) mx = c->data[i].logit > mx ? c->data[i].logit : mx;
    return mx;
}

/* exp(l - mx), safe when mx is infinite (all -inf: uniform; +inf: all mass on it). */
static inline double cand_weight(float l, float mx) {
    if (l == mx || mx == -INFINITY) return 1.0;
    return exp((double)l - (double)mx);
}

/* ---- greedy ---------------------------------------------------------------- */

static void greedy_apply(mnv_sampler *s, mnv_cand_array *c) {
    c->selected = c->size ? (int32_t)cand_best(c) : -1;
}

static const mnv_sampler_iface greedy_iface = {"greedy", greedy_apply, NULL, NULL, NULL};

mnv_sampler *mnv_sampler_greedy(void) { return mnv__sampler_new(&greedy_iface, 0); }

bool mnv__sampler_is_greedy(const mnv_sampler *s) { return s && s->iface == &greedy_iface; }

/* ---- dist: draw from the softmax with a seeded xoshiro256** ---------------- */

typedef struct {
    uint64_t seed;
    uint64_t st[4];
} dist_ctx;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

static void dist_reset(mnv_sampler *s) {
    dist_ctx *d = s->ctx;
    uint64_t x = d->seed;
    for (int i = 0; i < 4; i++) d->st[i] = splitmix64(&x);
}

static void dist_apply(mnv_sampler *s, mnv_cand_array *c) {
    dist_ctx *d = s->ctx;
    if (c->partial) { /* a draw needs every token's weight */
        c->incomplete = 1;
        return;
    }
    if (!c->size) {
        c->selected = -1;
        return;
    }
    /* few candidates are drawn from in their best-first order, so that the
     * same draw picks the same token however the cuts before left them
     * (a device's candidates arrive sorted; a row's cuts may not sort) */
    if (!c->sorted && c->size <= MNV_TOP_CANDS) {
        qsort(c->data, c->size, sizeof *c->data, cand_cmp);
        c->sorted = 1;
    }
    float mx = cand_max_logit(c);
    double sum = 0;
    for (size_t i = 0; i < c->size; i++) {
        c->data[i].p = (float)cand_weight(c->data[i].logit, mx);
        sum += c->data[i].p;
    }
    /* u in [0, 1); the running sum repeats the same additions, so it reaches
     * `sum` exactly and a zero-probability token is never picked. */
    double target = (double)(xoshiro_next(d->st) >> 11) * 0x1.0p-53 * sum, cum = 0;
    c->selected = (int32_t)c->size - 1;
    for (size_t i = 0; i < c->size; i++) {
        cum += c->data[i].p;
        if (cum > target) {
            c->selected = (int32_t)i;
            break;
        }
    }
    for (size_t i = 0; i < c->size; i++) c->data[i].p = (float)(c->data[i].p / sum);
}

static const mnv_sampler_iface dist_iface = {"dist", dist_apply, NULL, dist_reset, NULL};

mnv_sampler *mnv_sampler_dist(uint64_t seed) {
    mnv_sampler *s = mnv__sampler_new(&dist_iface, sizeof(dist_ctx));
    if (!s) return NULL;
    ((dist_ctx *)s->ctx)->seed = seed;
    dist_reset(s);
    return s;
}

/* ---- temperature ----------------------------------------------------------- */

static void temperature_apply(mnv_sampler *s, mnv_cand_array *c) {
    float t = *(const float *)s->ctx;
    if (t > 0.0f && c->partial) { /* the missing tokens' weights would change too */
        c->incomplete = 1;
        return;
    }
    if (t > 0.0f) { /* dividing by t > 0 keeps the order */
        if (t != 1.0f)
            for (size_t i = 0; i < c->size; i++) c->data[i].logit /= t;
        return;
    }
    if (!c->size) return; /* t <= 0 is the limit: only the best token stays */
    cand_swap(&c->data[0], &c->data[cand_best(c)]);
    c->size = 1;
    c->sorted = 1;
    c->partial = 0;
}

static const mnv_sampler_iface temperature_iface = {"temperature", temperature_apply, NULL, NULL, NULL};

mnv_sampler *mnv_sampler_temperature(float t) {
    mnv_sampler *s = mnv__sampler_new(&temperature_iface, sizeof(float));
    if (s) *(float *)s->ctx = t;
    return s;
}

/* ---- top-k ----------------------------------------------------------------- */

static void top_k_apply(mnv_sampler *s, mnv_cand_array *c) {
    int32_t k = *(const int32_t *)s->ctx;
    if (k <= 0 || !c->size) return;
    if (c->partial && (size_t)k > c->size) {
        c->incomplete = 1;
        return;
    }
    size_t n = MNV_MIN((size_t)k, c->size);
    if (!c->sorted) cand_sort_range(c->data, 0, c->size, n);
    /* penalized candidates: the k-th must stay above every missing token */
    if (c->partial && c->tail < 0 && !(c->data[n - 1].logit > c->bound)) {
        c->incomplete = 1;
        return;
    }
    c->partial = 0;
    c->size = n;
    c->sorted = 1;
}

static const mnv_sampler_iface top_k_iface = {"top-k", top_k_apply, NULL, NULL, NULL};

mnv_sampler *mnv_sampler_top_k(int32_t k) {
    mnv_sampler *s = mnv__sampler_new(&top_k_iface, sizeof(int32_t));
    if (s) *(int32_t *)s->ctx = k;
    return s;
}

/* ---- top-p and min-p share {p, min_keep} ----------------------------------- */

typedef struct {
    float p;
    size_t min_keep; /* at least 1 */
} cut_ctx;

/* Keep the shortest best-first prefix whose softmax mass reaches p (at least
 * min_keep). Sorted input: walk it. Otherwise build the order a chunk at a
 * time (64, 256, 1024, ...) by partial selection, so a peaked distribution
 * never pays for a full sort. */
static void top_p_sorted(mnv_cand_array *c, const cut_ctx *f) {
    size_t n = c->size, keep = n, done = c->sorted ? n : 0, chunk = 64;
    float mx = cand_max_logit(c);
    double sum = 0, cum = 0;
    for (size_t i = 0; i < n; i++) sum += cand_weight(c->data[i].logit, mx);
    double target = (double)f->p * sum;
    for (size_t i = 0; i < n; i++) {
        if (i == done) {
            size_t hi = MNV_MIN(n, done + chunk);
            cand_sort_range(c->data, done, n, hi);
            done = hi;
            chunk *= 4;
        }
        cum += cand_weight(c->data[i].logit, mx);
        if (cum >= target && i + 1 >= f->min_keep) {
            keep = i + 1;
            break;
        }
    }
    c->size = keep; /* data[0, keep) is sorted either way */
    c->sorted = 1;
}

/* Large unsorted arrays: histogram the softmax mass over 1024 logit buckets,
 * keep the buckets above the one where the mass crosses p whole (unsorted),
 * and sort only that one. O(n) however flat the distribution. Returns 0 when
 * it can't help (the array may be permuted; nothing else changes). */
static int top_p_bucketed(mnv_cand_array *c, const cut_ctx *f) {
    enum { NB = 1024 };
    mnv_token_cand *d = c->data;
    size_t n = c->size, a = 0, m;
    float lo, hi;
    if (!logit_range(d, n, &lo, &hi)) return 0;
    lo = MNV_MAX(lo, hi - 80.0f); /* weights below e^-80 all share bucket 0 */
    float scale = NB / (hi - lo);
    double mass[NB] = {0}, sum = 0, cum = 0;
    for (size_t i = 0; i < n; i++) mass[bucket_of(d[i].logit, lo, scale, NB)] += cand_weight(d[i].logit, hi);
    for (int b = 0; b < NB; b++) sum += mass[b];
    double target = (double)f->p * sum;
    int b = NB - 1;
    while (b > 0 && cum + mass[b] < target) cum += mass[b--];
    for (size_t i = 0; i < n; i++) /* buckets above b to the front, then bucket b */
        if (bucket_of(d[i].logit, lo, scale, NB) > b) cand_swap(&d[i], &d[a++]);
    m = a;
    for (size_t i = a; i < n; i++)
        if (bucket_of(d[i].logit, lo, scale, NB) == b) cand_swap(&d[i], &d[m++]);
    qsort(d + a, m - a, sizeof *d, cand_cmp);
    size_t keep = m; /* if rounding never reaches the target, keep all of bucket b */
    for (size_t i = a; i < m; i++) {
        cum += cand_weight(d[i].logit, hi);
        if (cum >= target) {
            keep = i + 1;
            break;
        }
    }
    if (keep < f->min_keep) return 0;
    c->size = keep;
    c->sorted = a == 0;
    return 1;
}

/* Sorted candidates with the weight of the missing ones (tail): the same
 * walk, the sum counting the tail; the cut must fall within the candidates,
 * and clear of the target by more than the rounding of the two paths' sums
 * (the tail comes from a float log-sum; the row's walk adds in another
 * order), or the row decides. */
static void top_p_partial(mnv_cand_array *c, const cut_ctx *f) {
    if (c->tail < 0 || !c->sorted) {
        c->incomplete = 1;
        return;
    }
    float mx = cand_max_logit(c);
    double sum = c->tail, cum = 0;
    for (size_t i = 0; i < c->size; i++) sum += cand_weight(c->data[i].logit, mx);
    double target = (double)f->p * sum, eps = 1e-5 * sum;
    for (size_t i = 0; i < c->size; i++) {
        const double prev = cum;
        cum += cand_weight(c->data[i].logit, mx);
        if (cum >= target && i + 1 >= f->min_keep) {
            if (cum - target < eps || (i + 1 > f->min_keep && target - prev < eps)) break;
            c->size = i + 1;
            c->partial = 0;
            return;
        }
    }
    c->incomplete = 1;
}

static void top_p_apply(mnv_sampler *s, mnv_cand_array *c) {
    const cut_ctx *f = s->ctx;
    if (!(f->p < 1.0f)) return;
    if (c->partial) {
        top_p_partial(c, f);
        return;
    }
    if (c->size <= 1) return;
    if (c->sorted || c->size < 4096 || !top_p_bucketed(c, f)) top_p_sorted(c, f);
}

/* Keep tokens with p >= min_p * p_max, i.e. logit >= max_logit + log(min_p). */
static void min_p_apply(mnv_sampler *s, mnv_cand_array *c) {
    const cut_ctx *f = s->ctx;
    if (!(f->p > 0.0f)) return;
    float thr = cand_max_logit(c) + logf(f->p);
    if (c->partial) { /* every missing token is at most bound */
        if (!c->size || c->bound >= thr) {
            c->incomplete = 1;
            return;
        }
        c->partial = 0;
    }
    if (c->size <= 1) return;
    size_t n = 0;
    for (size_t i = 0; i < c->size; i++) n += c->data[i].logit >= thr;
    if (n >= f->min_keep) { /* compact in place; the order (and sortedness) is kept */
        size_t j = 0;
        for (size_t i = 0; i < c->size; i++)
            if (c->data[i].logit >= thr) c->data[j++] = c->data[i];
        c->size = n;
        return;
    }
    n = MNV_MIN(f->min_keep, c->size);
    if (!c->sorted) cand_sort_range(c->data, 0, c->size, n);
    c->size = n;
    c->sorted = 1;
}

static const mnv_sampler_iface top_p_iface = {"top-p", top_p_apply, NULL, NULL, NULL};
static const mnv_sampler_iface min_p_iface = {"min-p", min_p_apply, NULL, NULL, NULL};

static mnv_sampler *cut_new(const mnv_sampler_iface *iface, float p, size_t min_keep) {
    mnv_sampler *s = mnv__sampler_new(iface, sizeof(cut_ctx));
    if (s) *(cut_ctx *)s->ctx = (cut_ctx){p, min_keep ? min_keep : 1};
    return s;
}

mnv_sampler *mnv_sampler_top_p(float p, size_t min_keep) { return cut_new(&top_p_iface, p, min_keep); }
mnv_sampler *mnv_sampler_min_p(float p, size_t min_keep) { return cut_new(&min_p_iface, p, min_keep); }

/* ---- penalties ------------------------------------------------------------- */

typedef struct {
    int32_t last_n; /* window; -1 = every accepted token, 0 = off */
    float repeat, freq, present;
    int32_t *ring;  /* window, oldest first: ring[(head + i) % cap], i < n */
    size_t cap, head, n;
    int32_t *counts; /* (n_counts) occurrences of each id in the window */
    size_t n_counts;
} pen_ctx;

static void pen_accept(mnv_sampler *s, int32_t token) {
    pen_ctx *q = s->ctx;
    if (q->last_n == 0 || token < 0) return;
    if ((size_t)token >= q->n_counts) { /* grows to the largest id seen: a few times per vocabulary */
        size_t nc = MNV_MAX((size_t)token + 1, MNV_MAX(q->n_counts * 2, (size_t)1024));
        int32_t *cn = realloc(q->counts, nc * sizeof *cn);
        if (!cn) return;
        memset(cn + q->n_counts, 0, (nc - q->n_counts) * sizeof *cn);
        q->counts = cn;
        q->n_counts = nc;
    }
    if (q->n == q->cap && q->last_n > 0) { /* evict the oldest */
        q->counts[q->ring[q->head]]--;
        q->head = (q->head + 1) % q->cap;
        q->n--;
    } else if (q->n == q->cap) { /* unbounded: grow; head stays 0 */
        size_t nc = MNV_MAX(q->cap * 2, (size_t)256);
        int32_t *r = realloc(q->ring, nc * sizeof *r);
        if (!r) return;
        q->ring = r;
        q->cap = nc;
    }
    q->ring[(q->head + q->n) % q->cap] = token;
    q->n++;
    q->counts[token]++;
}

static void pen_reset(mnv_sampler *s) {
    pen_ctx *q = s->ctx;
    q->head = q->n = 0;
    if (q->counts) memset(q->counts, 0, q->n_counts * sizeof *q->counts);
}

static void penalize(const pen_ctx *q, mnv_token_cand *t, int32_t count) {
    if (t->logit <= 0) t->logit *= q->repeat;
    else t->logit /= q->repeat;
    t->logit -= (float)count * q->freq + (float)(count > 0) * q->present;
}

static void pen_apply(mnv_sampler *s, mnv_cand_array *c) {
    pen_ctx *q = s->ctx;
    if (!q->n) return;
    if (c->partial && (q->repeat < 1.0f || q->freq < 0.0f || q->present < 0.0f)) { /* a token could rise into them */
        c->incomplete = 1;
        return;
    }
    if (c->partial) c->tail = -1.0; /* penalties that only lower keep the bound, not the tail */
    /* Fast path: candidates still indexed by id (fresh from logits), so each
     * window token is found directly; else one pass over the candidates. */
    int direct = 1;
    for (size_t i = 0; i < q->n && direct; i++) {
        int32_t t = q->ring[(q->head + i) % q->cap];
        direct = (size_t)t < c->size && c->data[t].id == t;
    }
    if (direct) {
        for (size_t i = 0; i < q->n; i++) { /* a negated count marks "done" */
            int32_t t = q->ring[(q->head + i) % q->cap];
            if (q->counts[t] <= 0) continue;
            penalize(q, &c->data[t], q->counts[t]);
            q->counts[t] = -q->counts[t];
        }
        for (size_t i = 0; i < q->n; i++) {
            int32_t t = q->ring[(q->head + i) % q->cap];
            if (q->counts[t] < 0) q->counts[t] = -q->counts[t];
        }
    } else {
        for (size_t i = 0; i < c->size; i++) {
            int32_t id = c->data[i].id;
            if (id >= 0 && (size_t)id < q->n_counts && q->counts[id] > 0) penalize(q, &c->data[i], q->counts[id]);
        }
    }
    c->sorted = 0;
}

static void pen_free(mnv_sampler *s) {
    pen_ctx *q = s->ctx;
    free(q->ring);
    free(q->counts);
}

static const mnv_sampler_iface pen_iface = {"penalties", pen_apply, pen_accept, pen_reset, pen_free};

int mnv__sampler_cands_kind(const mnv_sampler *s) {
    if (s->iface == &greedy_iface) return 1;
    if (s->iface == &top_k_iface) {
        int32_t k = *(const int32_t *)s->ctx;
        return k <= 0 ? 0 : k <= MNV_TOP_CANDS ? 1 : -1;
    }
    if (s->iface == &top_p_iface) return ((const cut_ctx *)s->ctx)->p < 1.0f ? 1 : 0;
    if (s->iface == &min_p_iface) return ((const cut_ctx *)s->ctx)->p > 0.0f ? 1 : 0;
    if (s->iface == &temperature_iface) return *(const float *)s->ctx > 0.0f ? -1 : 1;
    if (s->iface == &pen_iface) { /* penalties that only lower logits leave the bound valid */
        const pen_ctx *q = s->ctx;
        return q->repeat >= 1.0f && q->freq >= 0.0f && q->present >= 0.0f ? 0 : -1;
    }
    return -1; /* dist, anything else */
}

mnv_sampler *mnv_sampler_penalties(int32_t last_n, float repeat, float freq, float present) {
    if (last_n < -1) return NULL;
    mnv_sampler *s = mnv__sampler_new(&pen_iface, sizeof(pen_ctx));
    if (!s) return NULL;
    pen_ctx *q = s->ctx;
    *q = (pen_ctx){.last_n = last_n, .repeat = repeat, .freq = freq, .present = present};
    if (last_n > 0) {
        q->ring = malloc((size_t)last_n * sizeof *q->ring);
        if (!q->ring) {
            free(s);
            return NULL;
        }
        q->cap = (size_t)last_n;
    }
    return s;
}
