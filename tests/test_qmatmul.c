/* Quantized matmul and embedding lookup (backend/cpu/qmatmul.h) against a
 * naive double-precision reference that dequantizes with the formulas of the
 * MLX format spec (written here, independent of quant.c): every
 * implementation of every path (level) the host has, under that level's cap, x every mode / bits / group size / scale dtype
 * x 1, 2 and 3 threads, at fresh random shapes (odd m and n, k several groups,
 * row strides longer than the rows), random packed codes and random scales
 * (negative affine scales; E8M0 exponents 120..130). y is poisoned with NaN
 * first: every output must be written and nothing outside it. */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/qmatmul.h"
#include "test.h"

/* ---- formats ------------------------------------------------------------------ */

typedef struct {
    mnv_qmode mode;
    int bits, G;
    mnv_dtype sdt;
} fmtcase;

static int all_formats(fmtcase *out) {
    static const int bits[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
    static const mnv_dtype sd[] = {MNV_DTYPE_BF16, MNV_DTYPE_F16, MNV_DTYPE_F32};
    int n = 0;
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++)
            for (int s = 0; s < 3; s++) out[n++] = (fmtcase){MNV_QMODE_AFFINE, bits[b], groups[g], sd[s]};
    out[n++] = (fmtcase){MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8};
    out[n++] = (fmtcase){MNV_QMODE_MXFP8, 8, 32, MNV_DTYPE_U8};
    out[n++] = (fmtcase){MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8};
    return n;
}

static mnv_qformat to_qformat(const fmtcase *f) {
    return (mnv_qformat){.mode = f->mode, .bits = f->bits, .group_size = f->G, .scale_dtype = f->sdt};
}

static const char *fmt_name(const fmtcase *f, char *buf) {
    static const char *modes[] = {"none", "affine", "mxfp4", "mxfp8", "nvfp4"};
    const char *sd = f->sdt == MNV_DTYPE_BF16 ? "bf16" : f->sdt == MNV_DTYPE_F16 ? "f16" : f->sdt == MNV_DTYPE_F32 ? "f32" : "u8";
    sprintf(buf, "%s %d-bit g%d %s", modes[f->mode], f->bits, f->G, sd);
    return buf;
}

/* ---- the reference: the spec's formulas, in double ------------------------------ */

static double ref_half(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}
static double ref_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double ref_e2m1(int c) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    return (c & 8) ? -mag[c & 7] : mag[c & 7];
}
static double ref_e4m3(int c) {
    int e = (c >> 3) & 15, m = c & 7;
    double v = (e == 15 && m == 7) ? NAN : e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return (c & 0x80) ? -v : v;
}
static double ref_e8m0(int e) { return ldexp(1.0, e - 127); }

/* Element j of a packed row: bits [j*bits, (j+1)*bits) of its little-endian bytes. */
static uint32_t ref_code(const uint32_t *row, int bits, int64_t j) {
    const uint8_t *p = (const uint8_t *)row;
    int64_t pos = j * bits;
    uint32_t v = p[pos / 8];
    if (pos % 8 + bits > 8) v |= (uint32_t)p[pos / 8 + 1] << 8;
    return (v >> (pos % 8)) & ((1u << bits) - 1);
}

static double ref_scale(const fmtcase *f, const void *s, int64_t g, double gs) {
    switch (f->mode) {
    case MNV_QMODE_AFFINE:
        if (f->sdt == MNV_DTYPE_F32) return ((const float *)s)[g];
        if (f->sdt == MNV_DTYPE_F16) return ref_half(((const uint16_t *)s)[g]);
        return ref_bf16(((const uint16_t *)s)[g]);
    case MNV_QMODE_NVFP4: return ref_e4m3(((const uint8_t *)s)[g]) * gs;
    default: return ref_e8m0(((const uint8_t *)s)[g]);
    }
}

static double ref_weight(const fmtcase *f, const uint32_t *row, const void *s, const void *b, double gs, int64_t j) {
    const int64_t g = j / f->G;
    const uint32_t q = ref_code(row, f->bits, j);
    switch (f->mode) {
    case MNV_QMODE_AFFINE: return ref_scale(f, s, g, gs) * q + ref_scale(f, b, g, gs);
    case MNV_QMODE_MXFP8: return ref_e4m3((int)q) * ref_scale(f, s, g, gs);
    default: return ref_e2m1((int)q) * ref_scale(f, s, g, gs);
    }
}

/* ---- a random problem ----------------------------------------------------------- */

/* bytes ending exactly at an inaccessible page, so reading past the end faults. */
typedef struct {
    void *base;
    size_t len;
} guarded;

static void *guarded_alloc(guarded *g, size_t bytes) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE), pages = (bytes + pg - 1) / pg + 1;
    g->len = pages * pg;
    g->base = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->base == MAP_FAILED) abort();
    mprotect((char *)g->base + (pages - 1) * pg, pg, PROT_NONE);
    return (char *)g->base + (pages - 1) * pg - bytes;
}

typedef struct {
    fmtcase f;
    int64_t m, n, k, ldx, ldw, lds, ldy;
    float *x, *y;
    uint32_t *w;
    void *s, *b;
    float gs;
    double *wref; /* (n, k) dequantized */
    guarded gx, gw, gs_, gb;
} problem;

static size_t sbytes(const fmtcase *f) { return f->mode == MNV_QMODE_AFFINE ? mnv_dtype_size(f->sdt) : 1; }

static void store_scale(const fmtcase *f, void *s, int64_t i, float v) {
    if (f->sdt == MNV_DTYPE_F32) ((float *)s)[i] = v;
    else if (f->sdt == MNV_DTYPE_F16) ((uint16_t *)s)[i] = mnv_f32_to_f16(v);
    else ((uint16_t *)s)[i] = mnv_f32_to_bf16(v);
}

static void problem_init(problem *p, const fmtcase *f, int64_t m, int64_t n, int64_t k) {
    *p = (problem){.f = *f, .m = m, .n = n, .k = k, .gs = 1.0f};
    const int64_t rw = k * f->bits / 32, ng = k / f->G;
    p->ldx = k + t_randint(0, 3);
    p->ldw = rw + t_randint(0, 2);
    p->lds = ng + t_randint(0, 2);
    p->ldy = n + t_randint(0, 3);
    p->x = guarded_alloc(&p->gx, sizeof(float) * (size_t)(m * p->ldx));
    p->y = malloc(sizeof(float) * (size_t)(m * p->ldy));
    p->w = guarded_alloc(&p->gw, 4 * (size_t)(n * p->ldw));
    p->s = guarded_alloc(&p->gs_, sbytes(f) * (size_t)(n * p->lds));
    p->b = guarded_alloc(&p->gb, sbytes(f) * (size_t)(n * p->lds));
    p->wref = malloc(sizeof(double) * (size_t)(n * k));
    for (int64_t i = 0; i < m * p->ldx; i++) p->x[i] = t_randf();
    for (int64_t i = 0; i < n * p->ldw; i++) p->w[i] = (uint32_t)t_rand64();
    if (f->mode == MNV_QMODE_MXFP8) { /* no NaN elements (0x7f, 0xff) */
        for (int64_t i = 0; i < n * p->ldw * 4; i++)
            if ((((uint8_t *)p->w)[i] & 0x7f) == 0x7f) ((uint8_t *)p->w)[i] ^= 1;
        /* and, whatever the draw, zeros, the smallest and largest subnormals,
         * the smallest normal and the largest value, of either sign, at a
         * random row and place */
        static const uint8_t edge[] = {0x00, 0x80, 0x01, 0x81, 0x07, 0x87, 0x08, 0x88, 0x7e, 0xfe};
        uint8_t *row = (uint8_t *)(p->w + t_randint(0, (int)n - 1) * p->ldw);
        const int64_t at = t_randint(0, (int)(k - (int64_t)sizeof edge));
        if (k >= (int64_t)sizeof edge) memcpy(row + at, edge, sizeof edge);
    }
    for (int64_t i = 0; i < n * p->lds; i++) {
        if (f->mode == MNV_QMODE_AFFINE) {
            store_scale(f, p->s, i, 0.02f * t_randf()); /* negative scales too */
            store_scale(f, p->b, i, 0.5f * t_randf());
        } else if (f->mode == MNV_QMODE_NVFP4) { /* E4M3 scales, either sign, no NaN; some subnormal */
            ((uint8_t *)p->s)[i] = (uint8_t)((t_randint(0, 7) ? t_randint(0x18, 0x50) : t_randint(1, 7)) |
                                             (t_randint(0, 1) << 7));
        } else {
            ((uint8_t *)p->s)[i] = (uint8_t)t_randint(120, 130);
        }
    }
    if (f->mode == MNV_QMODE_NVFP4) p->gs = t_randint(0, 1) ? 1.0f : 0.3f + 0.5f * (t_randf() + 1.0f);
    for (int64_t j = 0; j < n; j++)
        for (int64_t kk = 0; kk < k; kk++)
            p->wref[j * k + kk] = ref_weight(f, p->w + j * p->ldw, (const char *)p->s + j * p->lds * sbytes(f),
                                             (const char *)p->b + j * p->lds * sbytes(f), p->gs, kk);
}

static void problem_free(problem *p) {
    munmap(p->gx.base, p->gx.len), munmap(p->gw.base, p->gw.len), munmap(p->gs_.base, p->gs_.len);
    munmap(p->gb.base, p->gb.len);
    free(p->y), free(p->wref);
}

enum { X_EXACT, X_INT8, X_BF16 }; /* how an implementation rounds x */

/* x rounded to bf16, nearest even (finite x). */
static float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* y_ref = xs * wref^T in double, as floats; xs = x, or x rounded to int8 per
 * group the way the int8 paths document it (dx = max|x|/127 in f32, codes
 * rint(x * (127/max|x|))), or to bf16. bound, bound_bf16 (optional): per
 * output, the worst case of rounding x to int8, sum_g dx_g/2 * sum_{j in g}
 * |w_j|, or to bf16, sum_j 2^-8 |x_j w_j|, plus 1e-5 sum |x w| for f32
 * arithmetic. mag_out (optional): per output, sum |xs w|, the scale of its
 * f32 rounding. */
static void reference_mag(const problem *p, int xround, float *yref, double *bound, double *bound_bf16,
                          double *mag_out) {
    const int64_t G = p->f.G, k = p->k;
    double *xs = malloc(sizeof(double) * (size_t)k), *dxs = malloc(sizeof(double) * (size_t)(k / G));
    for (int64_t i = 0; i < p->m; i++) {
        const float *x = p->x + i * p->ldx;
        for (int64_t g = 0; g < k / G; g++) {
            float am = 0.0f;
            for (int64_t t = 0; t < G; t++) am = fmaxf(am, fabsf(x[g * G + t]));
            const float dx = am / 127.0f, inv = am > 0.0f ? 127.0f / am : 0.0f;
            dxs[g] = dx;
            for (int64_t t = 0; t < G; t++)
                xs[g * G + t] = xround == X_INT8   ? (double)dx * nearbyintf(x[g * G + t] * inv)
                                : xround == X_BF16 ? bf16_round(x[g * G + t])
                                                   : x[g * G + t];
        }
        for (int64_t j = 0; j < p->n; j++) {
            double acc = 0, b = 0, bb = 0, mag = 0;
            for (int64_t kk = 0; kk < k; kk++) {
                acc += xs[kk] * p->wref[j * k + kk];
                b += dxs[kk / G] / 2 * fabs(p->wref[j * k + kk]);
                bb += 0x1p-8 * fabs(x[kk] * p->wref[j * k + kk]);
                mag += fabs(xs[kk] * p->wref[j * k + kk]);
            }
            yref[i * p->n + j] = (float)acc;
            if (bound) bound[i * p->n + j] = b + 1e-5 * mag;
            if (bound_bf16) bound_bf16[i * p->n + j] = bb + 1e-5 * mag;
            if (mag_out) mag_out[i * p->n + j] = mag;
        }
    }
    free(xs), free(dxs);
}

/* ---- running with nth threads ----------------------------------------------------- */

typedef struct {
    const mnv_qmatmul_args *a;
    int ith, nth;
} job;

static void *job_main(void *v) {
    job *j = v;
    mnv_cpu_qmatmul(j->a, j->ith, j->nth);
    return NULL;
}

static void barrier_wait(void *ctx) { pthread_barrier_wait(ctx); }

static void run_threads(mnv_qmatmul_args *a, int nth, bool with_barrier) {
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)nth);
    a->barrier = with_barrier ? barrier_wait : NULL;
    a->barrier_ctx = with_barrier ? &bar : NULL;
    pthread_t tid[8];
    job jobs[8];
    for (int t = 0; t < nth; t++) jobs[t] = (job){a, t, nth};
    for (int t = 1; t < nth; t++) pthread_create(&tid[t], NULL, job_main, &jobs[t]);
    job_main(&jobs[0]);
    for (int t = 1; t < nth; t++) pthread_join(tid[t], NULL);
    pthread_barrier_destroy(&bar);
}

/* Does impl round x for this call, and how? (qmatmul_avx512.c: to int8 for
 * affine, mxfp4 and nvfp4 under avx512-vnni, to bf16 for mxfp8 above 16 rows
 * where the host has AVX-512 BF16; without scratch it falls back to f32, and
 * so does prefill (m > 4) when nth > 1 threads have no barrier to share x.
 * qmatmul_avx2.c, avx2-int8: int8 as avx512-vnni, except nvfp4 above m = 16
 * with k an odd multiple of 16, which runs the f32 prefill.) */
static bool impl_int8(const char *impl);

static int x_rounding(const char *impl, const fmtcase *f, int64_t m, int64_t k, bool scratch, bool barrier,
                      int nth) {
    if (!impl_int8(impl) || !scratch) return X_EXACT;
    if (m > MNV_QMATMUL_GEMV_MAX_M && nth > 1 && !barrier) return X_EXACT;
    if (f->mode == MNV_QMODE_MXFP8) /* bf16 dot products above 16 rows (qmatmul_avx512.c) */
        return strcmp(impl, "avx512-vnni") == 0 && m > 16 && mnv__cpu_has(MNV_CPU_AVX512_BF16) ? X_BF16 : X_EXACT;
    if (f->mode == MNV_QMODE_NVFP4)
        return strcmp(impl, "avx512-vnni") == 0 || (strcmp(impl, "avx2-int8") == 0 && (m <= 16 || k % 32 == 0))
                   ? X_INT8
                   : X_EXACT;
    return f->mode == MNV_QMODE_AFFINE || f->mode == MNV_QMODE_MXFP4 ? X_INT8 : X_EXACT;
}

/* Tolerances:
 *  f32 paths: relative L2 over y; products and sums in f32 over k up to a few
 *    thousand give ~1e-7..3e-7 (measured), limit 1e-5.
 *  int8 paths, against x rounded to int8 the documented way: the same f32
 *    limit (only the f32 sums of the group terms differ).
 *  int8 paths, against the exact product: y - y_exact = -sum_j e_j w_j with
 *    |e_j| <= dx_g/2, dx_g = max|x over group g|/127, so every output must be
 *    within sum_g dx_g/2 * sum_{j in g} |w_j| (a hard bound, checked per
 *    output). Statistically (e_j ~ uniform), the relative L2 error is
 *    dx/(sqrt(12) rms(x)) ~ (1/127)/sqrt(12)*sqrt(3) = 1/254 ~ 0.0039 for x
 *    uniform in [-1, 1): measured median 0.0038, but with one x row and one or
 *    two groups it is the ratio of two single random sums and its tail passes
 *    1e-2, so the statistical figure is reported, not checked.
 *  bf16 paths (x rounded to bf16, nearest even; weights exact): against that
 *    rounded x, the f32 limit; against the exact product, per output within
 *    sum_j 2^-8 |x_j w_j| (|e_j| <= 2^-8 |x_j|: 8 significant bits). */
#define TOL_F32 1e-5
static double i8_err[4096], bf_err[4096];
static int n_i8_err, n_bf_err;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The implementations this host runs (every row of the table whose level
 * and feature it has), filled by main. */
static mnv_cpu_impl_desc IMPLS[32];
static int N_IMPL;

static bool impl_int8(const char *impl) {
    for (int i = 0; i < N_IMPL; i++)
        if (strcmp(IMPLS[i].name, impl) == 0) return IMPLS[i].int8;
    return false;
}

static void check_case(const fmtcase *f, int64_t m, int64_t n, int64_t k, int nth) {
    problem p;
    problem_init(&p, f, m, n, k);
    float *yref = malloc(sizeof(float) * (size_t)(m * n)), *yq = malloc(sizeof(float) * (size_t)(m * n));
    double *magq = malloc(sizeof(double) * (size_t)(m * n)), *mag = malloc(sizeof(double) * (size_t)(m * n));
    float *ycmp = malloc(sizeof(float) * (size_t)(m * n));
    double *bound = malloc(sizeof(double) * (size_t)(m * n)), *bound_bf = malloc(sizeof(double) * (size_t)(m * n));
    reference_mag(&p, X_EXACT, yref, bound, bound_bf, mag);
    int have_q = X_EXACT; /* which rounding yq and magq hold */
    const mnv_qformat qf = to_qformat(f);
    const size_t ss = mnv_cpu_qmatmul_scratch_size(m, k, &qf, nth);
    void *scratch = malloc(ss + 1); /* deliberately not 64-byte aligned */
    char name[64];
    /* every implementation, each with the level cap at its own level, then
     * the automatic one (no cap) without scratch and without a barrier */
    for (int im = 0; im < N_IMPL + 2; im++) {
        const bool no_scratch = im == N_IMPL, no_barrier = im == N_IMPL + 1;
        const char *impl;
        if (im < N_IMPL) {
            impl = IMPLS[im].name;
            mnv__isa_set_cap(IMPLS[im].isa);
            if (!mnv_cpu_qmatmul_force(impl)) continue;
        } else {
            mnv__isa_set_cap(MNV_ISA_COUNT);
            mnv_cpu_qmatmul_force(NULL);
            impl = mnv_cpu_qmatmul_impl();
        }
        char label[64];
        snprintf(label, sizeof label, "%s%s", impl, no_scratch ? " (no scratch)" : no_barrier ? " (no barrier)" : "");
        for (int64_t i = 0; i < m * p.ldy; i++) p.y[i] = NAN;
        mnv_qmatmul_args a = {.x = p.x, .ldx = p.ldx, .w = p.w, .ldw = p.ldw, .scales = p.s,
                              .biases = f->mode == MNV_QMODE_AFFINE ? p.b : NULL, .lds = p.lds, .fmt = qf,
                              .global_scale = p.gs, .y = p.y, .ldy = p.ldy, .m = m, .n = n, .k = k,
                              .scratch = no_scratch ? NULL : (char *)scratch + 1};
        run_threads(&a, nth, !no_barrier);
        int unwritten = 0, overwritten = 0;
        for (int64_t i = 0; i < m; i++) {
            for (int64_t j = 0; j < p.ldy; j++) {
                const float v = p.y[i * p.ldy + j];
                if (j < n) {
                    unwritten += !isfinite(v);
                    ycmp[i * n + j] = v;
                } else {
                    overwritten += !isnan(v);
                }
            }
        }
        fmt_name(f, name);
        CHECKF(unwritten == 0 && overwritten == 0, "%s %s m=%lld n=%lld k=%lld nth=%d: %d outputs not written, %d "
               "written outside", label, name, (long long)m, (long long)n, (long long)k, nth, unwritten, overwritten);
        const int xr = x_rounding(impl, f, m, k, !no_scratch, !no_barrier, nth);
        const double err = t_rel_l2(ycmp, yref, (size_t)(m * n));
        if (xr == X_EXACT) { /* as against rounded x below: relative L2, or each output within f32
                              * rounding of its terms (a few outputs that cancel have no useful relative error) */
            int64_t far = 0;
            for (int64_t t = 0; t < m * n; t++) far += !(fabs((double)ycmp[t] - yref[t]) <= TOL_F32 * mag[t]);
            CHECKF(err < TOL_F32 || far == 0, "%s %s m=%lld n=%lld k=%lld nth=%d: rel L2 %.3g", label, name,
                   (long long)m, (long long)n, (long long)k, nth, err);
        } else {
            const char *how = xr == X_INT8 ? "int8" : "bf16";
            const double *bd = xr == X_INT8 ? bound : bound_bf;
            int64_t over = 0;
            for (int64_t t = 0; t < m * n; t++) over += !(fabs((double)ycmp[t] - yref[t]) <= bd[t]);
            CHECKF(over == 0, "%s %s m=%lld n=%lld k=%lld nth=%d: %lld outputs beyond the %s rounding bound",
                   label, name, (long long)m, (long long)n, (long long)k, nth, (long long)over, how);
            if (xr == X_INT8 && n_i8_err < 4096) i8_err[n_i8_err++] = err;
            if (xr == X_BF16 && n_bf_err < 4096) bf_err[n_bf_err++] = err;
            if (have_q != xr) reference_mag(&p, xr, yq, NULL, NULL, magq), have_q = xr;
            const double eq = t_rel_l2(ycmp, yq, (size_t)(m * n));
            /* relative L2, or per output within f32 rounding of its terms: a
             * single output that cancels to near zero has no useful relative error */
            int64_t far = 0;
            for (int64_t t = 0; t < m * n; t++) far += !(fabs((double)ycmp[t] - yq[t]) <= TOL_F32 * magq[t]);
            CHECKF(eq < TOL_F32 || far == 0, "%s %s m=%lld n=%lld k=%lld nth=%d: rel L2 vs %s-rounded x %.3g",
                   label, name, (long long)m, (long long)n, (long long)k, nth, how, eq);
        }
    }
    mnv_cpu_qmatmul_force(NULL);
    mnv__isa_set_cap(MNV_ISA_COUNT);
    free(scratch), free(yref), free(yq), free(ycmp), free(bound), free(bound_bf), free(magq), free(mag);
    problem_free(&p);
}

/* ---- embedding lookup: exact against the formulas in f32 ---------------------------- */

static float f32_weight(const problem *p, int64_t row, int64_t j) {
    const fmtcase *f = &p->f;
    const uint32_t *w = p->w + row * p->ldw;
    const char *s = (const char *)p->s + row * p->lds * sbytes(f), *b = (const char *)p->b + row * p->lds * sbytes(f);
    const int64_t g = j / f->G;
    const uint32_t q = ref_code(w, f->bits, j);
    switch (f->mode) {
    case MNV_QMODE_AFFINE: {
        const float sc = (float)ref_scale(f, s, g, 1), bi = (float)ref_scale(f, b, g, 1);
        const float prod = sc * (float)q;
        return prod + bi;
    }
    case MNV_QMODE_MXFP8: return (float)ref_e4m3((int)q) * (float)ref_scale(f, s, g, 1);
    case MNV_QMODE_NVFP4: return (float)ref_e2m1((int)q) * ((float)ref_e4m3(((const uint8_t *)s)[g]) * p->gs);
    default: return (float)ref_e2m1((int)q) * (float)ref_scale(f, s, g, 1);
    }
}

static void check_get_rows(const fmtcase *f) {
    problem p;
    const int64_t n = t_randint(1, 40), k = f->G * t_randint(1, 6), rows = t_randint(1, 9);
    problem_init(&p, f, 1, n, k);
    int32_t ids[9];
    for (int64_t r = 0; r < rows; r++) ids[r] = t_randint(0, (int)n - 1);
    float *y = malloc(sizeof(float) * (size_t)(rows * k));
    for (int64_t i = 0; i < rows * k; i++) y[i] = NAN;
    const mnv_qformat qf = to_qformat(f);
    mnv_cpu_qget_rows(p.w, p.ldw, p.s, f->mode == MNV_QMODE_AFFINE ? p.b : NULL, p.lds, &qf, p.gs, k, ids, y, rows);
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < k; j++) {
            const float want = f32_weight(&p, ids[r], j), got = y[r * k + j];
            bad += memcmp(&want, &got, 4) != 0;
        }
    char name[64];
    CHECKF(bad == 0, "qget_rows %s k=%lld: %lld elements differ", fmt_name(f, name), (long long)k, (long long)bad);
    free(y);
    problem_free(&p);
}

/* NaN codes (mxfp8 elements, nvfp4 scales: E4M3 0x7f and 0xff, which no
 * encoder writes) give NaN in their W row's outputs and nowhere else, in every
 * implementation, for decode, mid-size m and prefill. */
static void check_nan_codes(const fmtcase *f) {
    static const int64_t ms[] = {1, 3, 9, 40};
    for (int mi = 0; mi < 4; mi++) {
        const int64_t m = ms[mi], n = 13, k = 96, bad = t_randint(0, (int)n - 1);
        problem p;
        problem_init(&p, f, m, n, k);
        const uint8_t code = t_randint(0, 1) ? 0x7f : 0xff;
        if (f->mode == MNV_QMODE_MXFP8) ((uint8_t *)(p.w + bad * p.ldw))[t_randint(0, (int)k - 1)] = code;
        else ((uint8_t *)p.s)[bad * p.lds + t_randint(0, (int)(k / f->G) - 1)] = code;
        const mnv_qformat qf = to_qformat(f);
        void *scratch = malloc(mnv_cpu_qmatmul_scratch_size(m, k, &qf, 2));
        for (int im = 0; im <= N_IMPL; im++) {
            if (im < N_IMPL) {
                mnv__isa_set_cap(IMPLS[im].isa);
                if (!mnv_cpu_qmatmul_force(IMPLS[im].name)) continue;
            } else {
                mnv__isa_set_cap(MNV_ISA_COUNT);
                mnv_cpu_qmatmul_force(NULL);
            }
            for (int64_t i = 0; i < m * p.ldy; i++) p.y[i] = 0.0f;
            mnv_qmatmul_args a = {.x = p.x, .ldx = p.ldx, .w = p.w, .ldw = p.ldw, .scales = p.s, .lds = p.lds,
                                  .fmt = qf, .global_scale = p.gs, .y = p.y, .ldy = p.ldy, .m = m, .n = n, .k = k,
                                  .scratch = scratch};
            run_threads(&a, 2, true);
            int64_t wrong = 0;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) wrong += (j == bad) != (bool)isnan(p.y[i * p.ldy + j]);
            char name[64];
            CHECKF(wrong == 0, "%s %s NaN code 0x%02x in row %lld, m=%lld: %lld outputs wrong", mnv_cpu_qmatmul_impl(),
                   fmt_name(f, name), code, (long long)bad, (long long)m, (long long)wrong);
        }
        mnv_cpu_qmatmul_force(NULL);
        mnv__isa_set_cap(MNV_ISA_COUNT);
        free(scratch);
        problem_free(&p);
    }
}

/* Lists the paths (levels) the host runs, best first, with the automatic
 * choice under each cap and the implementations of that level; fills IMPLS. */
static void list_paths(void) {
    for (int l = MNV_ISA_COUNT - 1; l >= 0; l--) {
        const mnv_isa level = (mnv_isa)l;
        if (!mnv__isa_host(level)) {
            printf("path %-8s not available on this host\n", mnv__isa_name(level));
            continue;
        }
        mnv__isa_set_cap(level);
        printf("path %-8s automatic choice %s; implementations of this level:", mnv__isa_name(level),
               mnv_cpu_qmatmul_impl());
        mnv_cpu_impl_desc d;
        for (int i = 0; mnv_cpu_qmatmul_impl_at(i, &d); i++) {
            if (d.isa != level) continue;
            printf(" %s%s", d.name, d.host ? "" : " (not on this host: needs a feature)");
            if (d.host && N_IMPL < 32) IMPLS[N_IMPL++] = d;
        }
        printf("\n");
    }
    mnv__isa_set_cap(MNV_ISA_COUNT);
    printf("automatic choice: %s\n", mnv_cpu_qmatmul_impl());
}

int main(void) {
    t_seed();
    list_paths();
    CHECK(!mnv_cpu_qmatmul_force("no-such-impl"));

    fmtcase fmts[64];
    const int nf = all_formats(fmts);
    for (int fi = 0; fi < nf; fi++) {
        const fmtcase *f = &fmts[fi];
        const int maxg = f->G == 16 ? 40 : 2048 / f->G / 2;
        for (int nth = 1; nth <= 3; nth++) {
            /* decode (m <= 4) and prefill (odd and even m, several x tiles) */
            check_case(f, t_randint(1, 4), t_randint(1, 150), f->G * t_randint(1, maxg), nth);
            check_case(f, t_randint(5, 37), t_randint(1, 150), f->G * t_randint(1, maxg), nth);
        }
        /* decode over row counts that leave the decode kernels' 4 (one row of x) or 2 (two
         * rows) streams a remainder, on one thread and on two */
        check_case(f, 1 + fi % 2, 4 * t_randint(4, 12) + 1 + fi % 3, f->G * t_randint(1, maxg), 1 + fi % 2);
        /* every mid-size m (decode kernel over several x rows, then the x panel
         * of 16 or 32 rows) and the first prefill m, threads 1..3 in turn */
        for (int64_t m = MNV_QMATMUL_GEMV_MAX_M + 1; m <= MNV_QMATMUL_MID_MAX_M + 1; m++)
            check_case(f, m, t_randint(1, 70), f->G * t_randint(1, MNV_MIN(maxg, 24)), 1 + (int)(m % 3));
        check_get_rows(f);
        if (f->mode == MNV_QMODE_MXFP8 || f->mode == MNV_QMODE_NVFP4) check_nan_codes(f);
    }
    /* the 2, 3, 5 and 6-bit decode kernels (one instance per width and group
     * size, run by passes of up to 4 rows of x for m up to 16): every m in
     * 1..16 against odd n (never a multiple of the 4 or 2 rows a pass reads
     * side by side), k at 1..9 groups (so the rows end inside a kernel chunk:
     * 2 bits reads 128 codes at a time, 3 bits 64), scale dtypes in turn, on 1
     * and 2 threads */
    {
        static const int lbits[] = {2, 3, 5, 6}, lgroups[] = {32, 64, 128};
        static const mnv_dtype lsd[] = {MNV_DTYPE_BF16, MNV_DTYPE_F16, MNV_DTYPE_F32};
        for (int b = 0; b < 4; b++)
            for (int g = 0; g < 3; g++)
                for (int64_t m = 1; m <= 16; m++) {
                    const fmtcase f = {MNV_QMODE_AFFINE, lbits[b], lgroups[g], lsd[m % 3]};
                    const int64_t n = 4 * t_randint(1, 8) + (m % 2 ? 1 : 3), k = f.G * (1 + (m + b + g) % 9);
                    check_case(&f, m, n, k, 1 + (int)(m % 2));
                }
    }
    /* k longer than one int8 k block (1920 codes) and several panels per thread */
    const fmtcase big[] = {{MNV_QMODE_AFFINE, 4, 64, MNV_DTYPE_BF16}, {MNV_QMODE_AFFINE, 8, 128, MNV_DTYPE_F16},
                           {MNV_QMODE_MXFP4, 4, 32, MNV_DTYPE_U8}, {MNV_QMODE_NVFP4, 4, 16, MNV_DTYPE_U8},
                           {MNV_QMODE_MXFP8, 8, 32, MNV_DTYPE_U8}};
    for (int b = 0; b < 5; b++) {
        check_case(&big[b], 9, 203, 4096 + 2 * big[b].G, 2);
        check_case(&big[b], 14, 203, 4096 + 2 * big[b].G, 3);
        check_case(&big[b], 27, 203, 4096 + 2 * big[b].G, 2);
        check_case(&big[b], 3, 203, 4096 + 2 * big[b].G, 2);
    }
    if (n_i8_err) {
        qsort(i8_err, (size_t)n_i8_err, sizeof(double), cmp_double);
        printf("int8 paths vs exact: rel L2 median %.4f, 90%% %.4f, max %.4f over %d products\n",
               i8_err[n_i8_err / 2], i8_err[n_i8_err * 9 / 10], i8_err[n_i8_err - 1], n_i8_err);
    }
    if (n_bf_err) {
        qsort(bf_err, (size_t)n_bf_err, sizeof(double), cmp_double);
        printf("bf16 paths vs exact: rel L2 median %.4f, 90%% %.4f, max %.4f over %d products\n",
               bf_err[n_bf_err / 2], bf_err[n_bf_err * 9 / 10], bf_err[n_bf_err - 1], n_bf_err);
    }
    /* m, n = 0 and k = 0 */
    {
        const mnv_qformat qf = to_qformat(&fmts[0]);
        float y[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
        mnv_qmatmul_args a = {.x = y, .ldx = 1, .w = NULL, .ldw = 1, .scales = NULL, .lds = 1, .fmt = qf, .y = y,
                              .ldy = 3, .m = 2, .n = 3, .k = 0};
        mnv_cpu_qmatmul(&a, 0, 1);
        CHECK(y[0] == 0 && y[5] == 0);
        a.m = 0;
        y[0] = NAN;
        mnv_cpu_qmatmul(&a, 0, 1);
        CHECK(isnan(y[0]));
    }
    return t_done();
}
