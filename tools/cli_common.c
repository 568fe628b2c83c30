/* cli_common.c - option parsing, messages, files and measurement for the CLI. */
#include "cli_common.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- messages ----------------------------------------------------------------- */

static void vmsg(const char *cmd, const char *fmt, va_list ap) {
    fprintf(stderr, "minerva %s: ", cmd);
    vfprintf(stderr, fmt, ap);
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(cmd, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'minerva %s --help' for more information.\n", cmd);
    return CLI_EXIT_USAGE;
}

int cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(cmd, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_EXIT_FAIL;
}

int cli_lib_error(const char *cmd, mnv_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vmsg(cmd, fmt, ap);
    va_end(ap);
    const char *detail = mnv_last_error();
    fprintf(stderr, ": %s", mnv_status_str(st));
    if (detail && *detail) fprintf(stderr, ": %s", detail);
    fputc('\n', stderr);
    return CLI_EXIT_FAIL;
}

/* ---- value parsers ------------------------------------------------------------ */

int cli_parse_int(const char *cmd, const char *opt, const char *s, long long min, long long max,
                  int *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return cli_usage(cmd, "%s: expected an integer, got '%s'", opt, s);
    if (errno == ERANGE || v < min || v > max)
        return cli_usage(cmd, "%s: %s is out of range [%lld, %lld]", opt, s, min, max);
    *out = (int)v;
    return 0;
}

int cli_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    if (*s < '0' || *s > '9') /* strtoull would accept blanks, '+' and '-' */
        return cli_usage(cmd, "%s: expected a non-negative integer, got '%s'", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0') return cli_usage(cmd, "%s: expected a non-negative integer, got '%s'", opt, s);
    if (errno == ERANGE) return cli_usage(cmd, "%s: %s is out of range [0, %llu]", opt, s, ULLONG_MAX);
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max,
                    float *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || isspace((unsigned char)*s))
        return cli_usage(cmd, "%s: expected a number, got '%s'", opt, s);
    if (errno == ERANGE || !isfinite(v) || v < min || v > max)
        return cli_usage(cmd, "%s: %s is out of range [%g, %g]", opt, s, min, max);
    *out = (float)v;
    return 0;
}

static int is_id_sep(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',';
}

int cli_parse_ids(const char *cmd, const char *opt, const char *s, int32_t **ids, size_t *n) {
    size_t cap = 0, cnt = 0;
    int32_t *v = NULL;
    const char *p = s;
    for (;;) {
        while (is_id_sep(*p)) p++;
        if (!*p) break;
        const char *start = p;
        while (*p && !is_id_sep(*p)) p++;
        char tok[32];
        size_t len = (size_t)(p - start);
        int bad = len >= sizeof tok;
        if (!bad) {
            memcpy(tok, start, len);
            tok[len] = '\0';
            char *end = NULL;
            errno = 0;
            long long x = (tok[0] >= '0' && tok[0] <= '9') ? strtoll(tok, &end, 10) : -1;
            bad = x < 0 || x > INT32_MAX || errno == ERANGE || *end != '\0';
            if (!bad && cnt == cap) {
                cap = cap ? cap * 2 : 64;
                int32_t *nv = realloc(v, cap * sizeof *v);
                if (!nv) {
                    free(v);
                    return cli_error(cmd, "out of memory");
                }
                v = nv;
            }
            if (!bad) v[cnt++] = (int32_t)x;
        }
        if (bad) {
            free(v);
            return cli_usage(cmd, "%s: expected token ids (non-negative integers), got '%.*s'", opt,
                             (int)len, start);
        }
    }
    *ids = v;
    *n = cnt;
    return 0;
}

/* ---- option parsing ------------------------------------------------------------ */

void cli_strv_free(cli_strv *v) {
    free(v->items);
    v->items = NULL;
    v->n = v->cap = 0;
}

static int strv_push(cli_strv *v, const char *s) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        const char **items = realloc(v->items, cap * sizeof *items);
        if (!items) return -1;
        v->items = items;
        v->cap = cap;
    }
    v->items[v->n++] = s;
    return 0;
}

/* Find the option named by arg ("--top-k" or "--top-k=5"); *inline_val gets
 * the text after '=' when present. */
static const cli_opt *find_opt(const cli_spec *spec, const char *arg, const char **inline_val) {
    *inline_val = NULL;
    for (size_t i = 0; i < spec->n_opts; i++) {
        const cli_opt *o = &spec->opts[i];
        if (o->short_name && strcmp(arg, o->short_name) == 0) return o;
        size_t len = strlen(o->long_name);
        if (strncmp(arg, o->long_name, len) != 0) continue;
        if (arg[len] == '\0') return o;
        if (arg[len] == '=') {
            *inline_val = arg + len + 1;
            return o;
        }
    }
    return NULL;
}

static int store_value(const cli_spec *spec, const cli_opt *o, const char *name, const char *val) {
    const char *cmd = spec->cmd;
    switch (o->kind) {
    case CLI_INT:
        return cli_parse_int(cmd, name, val, (long long)o->min, (long long)o->max, o->dst);
    case CLI_U64: return cli_parse_u64(cmd, name, val, o->dst);
    case CLI_FLOAT: return cli_parse_float(cmd, name, val, o->min, o->max, o->dst);
    case CLI_STR: *(const char **)o->dst = val; return 0;
    case CLI_MULTI:
        if (strv_push(o->dst, val) != 0) return cli_error(cmd, "out of memory");
        return 0;
    case CLI_FLAG: break;
    }
    return cli_usage(cmd, "internal error: bad option kind for %s", name);
}

/* Handle one option at argv[*i]; advances *i past a separate value. */
static int parse_option(const cli_spec *spec, int argc, char **argv, int *i) {
    const char *arg = argv[*i], *val = NULL;
    const cli_opt *o = find_opt(spec, arg, &val);
    if (!o) return cli_usage(spec->cmd, "unknown option '%s'", arg);
    /* name the option as it was typed: "-n" or "--n-predict" */
    const char *name = o->short_name && strcmp(arg, o->short_name) == 0 ? o->short_name : o->long_name;
    if (o->kind == CLI_FLAG) {
        if (val) return cli_usage(spec->cmd, "option '%s' takes no value", name);
        *(int *)o->dst = 1;
    } else {
        if (!val) {
            if (*i + 1 >= argc) return cli_usage(spec->cmd, "option '%s' needs a value", name);
            val = argv[++*i];
        }
        int rc = store_value(spec, o, name, val);
        if (rc) return rc;
    }
    if (o->seen) *o->seen = 1;
    return 0;
}

int cli_parse(const cli_spec *spec, int argc, char **argv, int *rc) {
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int is_opt = !only_positional && arg[0] == '-' && arg[1] != '\0';
        if (is_opt && strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (is_opt && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            fputs(spec->usage, stdout);
            *rc = CLI_EXIT_OK;
            return 1;
        }
        if (is_opt) {
            *rc = parse_option(spec, argc, argv, &i);
            if (*rc) return 1;
            continue;
        }
        if (!spec->positional) {
            *rc = cli_usage(spec->cmd, "unexpected argument '%s'", arg);
            return 1;
        }
        if (strv_push(spec->positional, arg) != 0) {
            *rc = cli_error(spec->cmd, "out of memory");
            return 1;
        }
    }
    return 0;
}

/* ---- options shared by the commands that generate ------------------------------------ */

void cli_gen_flags_init(cli_gen_flags *f) {
    memset(f, 0, sizeof *f);
    f->gp = mnv_generate_params_default();
    f->gp.sampler = mnv_sampler_params_default();
}

void cli_gen_flags_free(cli_gen_flags *f) { cli_strv_free(&f->stops); }

void cli_gen_opts(cli_gen_flags *f, cli_opt *out) {
    mnv_sampler_params *s = &f->gp.sampler;
    const cli_opt opts[CLI_GEN_N_OPTS] = {
        {"-n", "--n-predict", CLI_INT, &f->gp.max_tokens, 0, 1 << 30, NULL},
        {NULL, "--temp", CLI_FLOAT, &s->temperature, 0, 1e6, NULL},
        {NULL, "--top-k", CLI_INT, &s->top_k, 0, 1 << 30, NULL},
        {NULL, "--top-p", CLI_FLOAT, &s->top_p, 0, 1, NULL},
        {NULL, "--min-p", CLI_FLOAT, &s->min_p, 0, 1, NULL},
        {NULL, "--repeat-penalty", CLI_FLOAT, &s->repeat_penalty, 1e-6, 1e6, NULL},
        {NULL, "--repeat-last-n", CLI_INT, &s->repeat_last_n, -1, 1 << 30, NULL},
        {NULL, "--seed", CLI_U64, &s->seed, 0, 0, &f->seed_given},
        {NULL, "--stop", CLI_MULTI, &f->stops, 0, 0, NULL},
        {NULL, "--ignore-eos", CLI_FLAG, &f->ignore_eos, 0, 0, NULL},
    };
    memcpy(out, opts, sizeof opts);
}

static void append(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t cap, const char *fmt, ...) {
    size_t len = strlen(buf);
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

void cli_gen_usage(char *buf, size_t cap, const cli_gen_flags *f) {
    const mnv_sampler_params *s = &f->gp.sampler;
    append(buf, cap,
           "  -n, --n-predict N       tokens to generate (default %d)\n"
           "      --temp T            temperature, 0 = greedy (default %g)\n"
           "      --top-k K           top-k, 0 = off (default %d)\n"
           "      --top-p P           top-p, 1 = off (default %g)\n"
           "      --min-p P           min-p, 0 = off (default %g)\n"
           "      --repeat-penalty R  repetition penalty, 1 = off (default %g)\n"
           "      --repeat-last-n N   penalty window, -1 = whole context (default %d)\n"
           "      --seed S            sampling seed (default: from the clock, printed)\n"
           "      --stop STR          stop before STR (repeatable)\n"
           "      --ignore-eos        keep generating past end-of-sequence tokens\n",
           f->gp.max_tokens, (double)s->temperature, s->top_k, (double)s->top_p, (double)s->min_p,
           (double)s->repeat_penalty, s->repeat_last_n);
}

void cli_gen_flags_finish(cli_gen_flags *f) {
    if (!f->seed_given) {
        f->gp.sampler.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        fprintf(stderr, "seed: %llu\n", (unsigned long long)f->gp.sampler.seed);
    }
    f->gp.stop_strings = f->stops.items;
    f->gp.n_stop = f->stops.n;
    f->gp.ignore_eos = f->ignore_eos;
}

void cli_kv_opts(cli_kv_flags *f, cli_opt *out) {
    const cli_opt opts[CLI_KV_N_OPTS] = {
        {NULL, "--kv-type", CLI_STR, &f->all, 0, 0, NULL},
        {NULL, "--kv-type-k", CLI_STR, &f->k, 0, 0, NULL},
        {NULL, "--kv-type-v", CLI_STR, &f->v, 0, 0, NULL},
        {NULL, "--kv-rotate", CLI_STR, &f->rotate, 0, 0, NULL},
    };
    memcpy(out, opts, sizeof opts);
}

void cli_kv_usage(char *buf, size_t cap) {
    append(buf, cap,
           "      --kv-type T         KV cache element type: f32, f16, bf16, q8 or q4 (8/4-bit\n"
           "                          per group of 32 with a scale and a bias) (default f32)\n"
           "      --kv-type-k T       the K cache's type alone (default: --kv-type)\n"
           "      --kv-type-v T       the V cache's type alone (default: --kv-type)\n"
           "      --kv-rotate R       Hadamard rotation of the K/V heads: auto (the q4 sides),\n"
           "                          on (both sides, any type) or off (default auto)\n");
}

static int parse_kv(const char *cmd, const char *opt, const char *s, int32_t *out) {
    for (int t = MNV_KV_F32; t < MNV_KV_TYPE_COUNT; t++)
        if (!strcmp(s, mnv_kv_type_name((mnv_kv_type)t))) {
            *out = t;
            return 0;
        }
    return cli_usage(cmd, "%s: expected f32, f16, bf16, q8 or q4, got '%s'", opt, s);
}

int cli_kv_types(const char *cmd, const cli_kv_flags *f, int32_t *k, int32_t *v) {
    int32_t all = MNV_KV_F32;
    if (f->all && parse_kv(cmd, "--kv-type", f->all, &all)) return CLI_EXIT_USAGE;
    *k = *v = all;
    if (f->k && parse_kv(cmd, "--kv-type-k", f->k, k)) return CLI_EXIT_USAGE;
    if (f->v && parse_kv(cmd, "--kv-type-v", f->v, v)) return CLI_EXIT_USAGE;
    return 0;
}

int cli_kv_rotate(const char *cmd, const cli_kv_flags *f, int32_t *rot) {
    *rot = MNV_KV_ROTATE_AUTO;
    if (!f->rotate) return 0;
    for (int r = 0; r < MNV_KV_ROTATE_COUNT; r++)
        if (!strcmp(f->rotate, mnv_kv_rotate_name((mnv_kv_rotate)r))) {
            *rot = r;
            return 0;
        }
    return cli_usage(cmd, "--kv-rotate: expected auto, on or off, got '%s'", f->rotate);
}

const char *cli_kv_rotated(const cli_kv_flags *f) {
    const char *all = f->all ? f->all : "f32", *k = f->k ? f->k : all, *v = f->v ? f->v : all;
    bool on = f->rotate && !strcmp(f->rotate, "on"), off = f->rotate && !strcmp(f->rotate, "off");
    bool rk = !off && (on || !strcmp(k, "q4")), rv = !off && (on || !strcmp(v, "q4"));
    return rk && rv ? "K and V" : rk ? "K" : rv ? "V" : "none";
}

void cli_kv_name(const cli_kv_flags *f, char *buf, size_t cap) {
    const char *all = f->all ? f->all : "f32", *k = f->k ? f->k : all, *v = f->v ? f->v : all;
    if (!strcmp(k, v))
        snprintf(buf, cap, "%s", k);
    else
        snprintf(buf, cap, "%s/%s", k, v);
}

void cli_run_opts(cli_run_flags *f, cli_opt *out) {
    const cli_opt opts[5] = {
        {"-t", "--threads", CLI_INT, &f->n_threads, 0, 4096, NULL},
        {"-c", "--ctx", CLI_INT, &f->n_ctx, 0, 1 << 30, NULL},
        {NULL, "--exact-quant", CLI_FLAG, &f->exact_quant, 0, 0, NULL},
        {NULL, "--deterministic", CLI_FLAG, &f->deterministic, 0, 0, NULL},
        {NULL, "--device", CLI_STR, &f->device, 0, 0, NULL},
    };
    memcpy(out, opts, sizeof opts);
    cli_kv_opts(&f->kv, out + 5);
}

void cli_run_usage(char *buf, size_t cap, const char *ctx_what) {
    append(buf, cap,
           "  -t, --threads N         CPU threads, 0 = all cores (default 0)\n"
           "  -c, --ctx N             %s, 0 = min(model's, 4096) (default 0)\n"
           "      --exact-quant       quantized weights: keep f32 activations (MLX's numerics,\n"
           "                          slower) instead of rounding them to int8\n"
           "      --deterministic     compute every token as if it were alone in its batch: the\n"
           "                          same tokens whatever the chunking or batching (slower\n"
           "                          prompt processing)\n"
           "      --device D          where to compute: cpu, cuda or cuda:N (default cpu)\n",
           ctx_what);
    cli_kv_usage(buf, cap);
}

const char *cli_stop_reason_str(mnv_stop_reason r) {
    switch (r) {
    case MNV_STOP_NONE: return "none";
    case MNV_STOP_MAX_TOKENS: return "max tokens";
    case MNV_STOP_EOS: return "end of sequence";
    case MNV_STOP_STRING: return "stop string";
    case MNV_STOP_CALLBACK: return "callback";
    case MNV_STOP_CONTEXT_FULL: return "context full";
    }
    return "unknown";
}

/* ---- files ----------------------------------------------------------------------- */

static int read_stream(FILE *f, char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return ENOMEM;
    for (;;) {
        if (cap - n < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return EIO;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int cli_read_file(const char *cmd, const char *path, char **data, size_t *len) {
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) return cli_error(cmd, "cannot read '%s': %s", path, strerror(errno));
    int err = read_stream(f, data, len);
    if (!is_stdin) fclose(f);
    if (err) return cli_error(cmd, "cannot read '%s': %s", path, strerror(err));
    return 0;
}

/* ---- the bundled default model ------------------------------------------------------ */

#define CLI_MODEL_SUBDIR "models/stories260K"

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Directory of the running executable, from /proc/self/exe; "" if unknown. */
static void exe_dir(char *buf, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0) n = 0;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
    else buf[0] = '\0';
}

/* Resolve order: $MINERVA_DEFAULT_MODEL; installed, <exe dir>/../share/minerva/
 * models/stories260K; a build inside the source tree, <exe dir>/../models/... and
 * <exe dir>/../../models/...; then MNV_DEFAULT_MODEL_DIR, which the build
 * defines at configure time so that a build tree anywhere finds the source's
 * model. When none is a directory, every place tried is named. */
int cli_default_model_dir(const char *cmd, char *buf, size_t cap) {
    char exe[PATH_MAX], cand[5][PATH_MAX + 64];
    int n = 0;
    const char *env = getenv("MINERVA_DEFAULT_MODEL");
    if (env && *env) snprintf(cand[n++], sizeof cand[0], "%s", env);
    exe_dir(exe, sizeof exe);
    if (exe[0]) {
        snprintf(cand[n++], sizeof cand[0], "%s/../share/minerva/%s", exe, CLI_MODEL_SUBDIR);
        snprintf(cand[n++], sizeof cand[0], "%s/../%s", exe, CLI_MODEL_SUBDIR);
        snprintf(cand[n++], sizeof cand[0], "%s/../../%s", exe, CLI_MODEL_SUBDIR);
    }
#ifdef MNV_DEFAULT_MODEL_DIR
    snprintf(cand[n++], sizeof cand[0], "%s", MNV_DEFAULT_MODEL_DIR);
#endif
    for (int i = 0; i < n; i++) {
        char real[PATH_MAX];
        if (is_dir(cand[i]) && realpath(cand[i], real) && strlen(real) < cap) {
            snprintf(buf, cap, "%s", real);
            return 0;
        }
    }
    cli_error(cmd, "no model given (-m DIR) and the bundled model '%s' was not found; tried:",
              CLI_MODEL_SUBDIR);
    for (int i = 0; i < n; i++) fprintf(stderr, "  %s\n", cand[i]);
    fprintf(stderr, "Set MINERVA_DEFAULT_MODEL or pass -m DIR.\n");
    return CLI_EXIT_FAIL;
}

void cli_print_cpu(FILE *f) {
    mnv_cpu_info ci;
    if (mnv_cpu_get_info(&ci) != MNV_OK) return;
    fprintf(f, "cpu: %s (matmul %s, qmatmul %s, exact qmatmul %s, attention %s, vec %s)", ci.level, ci.matmul,
            ci.qmatmul, ci.qmatmul_exact, ci.attention, ci.vec);
    if (strcmp(ci.level, ci.host_level) != 0) fprintf(f, ", capped by MINERVA_CPU (host: %s)", ci.host_level);
    fprintf(f, "; threads: %d by default (the CPUs this process may run on)\n", ci.n_cpus);
}

/* Progress on a terminal, for models of a gigabyte or more: reading the
 * weights at load, copying them to a device. */
typedef struct {
    const char *what;
    int pct, quiet;
} load_progress;

static void on_load_progress(void *user_data, uint64_t done, uint64_t total) {
    load_progress *lp = user_data;
    if (done == 0) lp->pct = -1, lp->quiet = total < (1ull << 30);
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    if (lp->quiet || pct == lp->pct) return;
    lp->pct = pct;
    fprintf(stderr, "\r%s: %3d%% of %.1f GB", lp->what, pct, (double)total / 1e9);
    if (done >= total) fputc('\n', stderr);
}

int cli_load_weights(const char *cmd, mnv_session *s, mnv_engine *e) {
    load_progress lp = {"copying the weights to the device", -1, 0};
    const bool tty = isatty(fileno(stderr));
    mnv_status st = s ? mnv_session_load_weights(s, tty ? on_load_progress : NULL, &lp)
                      : mnv_engine_load_weights(e, tty ? on_load_progress : NULL, &lp);
    return st == MNV_OK ? 0 : cli_lib_error(cmd, st, "cannot copy the weights to the device");
}

int cli_load_model(const char *cmd, const char *dir, int n_threads, mnv_model **out) {
    char def[PATH_MAX + 64];
    *out = NULL;
    if (!dir) {
        if (cli_default_model_dir(cmd, def, sizeof def) != 0) return CLI_EXIT_FAIL;
        dir = def;
    }
    mnv_cpu_info ci;
    if (n_threads > 0 && mnv_cpu_get_info(&ci) == MNV_OK && n_threads > ci.n_cpus)
        fprintf(stderr, "%s: warning: --threads %d is more than the CPUs this process may run on (%d); using %d\n",
                cmd, n_threads, ci.n_cpus, ci.n_cpus);
    mnv_model_params mp = mnv_model_params_default();
    mp.n_threads = n_threads;
    load_progress lp = {"reading the weights", -1, 0};
    /* a terminal sees big loads read every page (the first evaluation then
     * waits on no disk); inspect reads no weights */
    if (isatty(fileno(stderr)) && strcmp(cmd, "inspect") != 0)
        mp.progress = on_load_progress, mp.progress_user_data = &lp;
    mnv_status st = mnv_model_load(dir, &mp, out);
    if (st != MNV_OK) return cli_lib_error(cmd, st, "cannot load model '%s'", dir);
    return 0;
}

/* ---- text -------------------------------------------------------------------------- */

mnv_status cli_tokenize(const mnv_tokenizer *tok, const char *text, size_t len, int add_bos,
                        int32_t **ids, size_t *n) {
    size_t cap = len + 16, need = 0;
    *ids = NULL;
    *n = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *buf = malloc(cap * sizeof *buf);
        if (!buf) return MNV_ERR_NOMEM;
        mnv_status st = mnv_tokenize(tok, text, len, add_bos, buf, cap, &need);
        if (st == MNV_OK) {
            *ids = buf;
            *n = need;
            return MNV_OK;
        }
        free(buf);
        if (st != MNV_ERR_BUFFER_TOO_SMALL || need <= cap) return st;
        cap = need;
    }
    return MNV_ERR_INTERNAL;
}

int cli_prompt_ids(const char *cmd, const mnv_model *model, const char *text, int32_t **ids, size_t *n) {
    const mnv_tokenizer *tok = mnv_model_tokenizer(model);
    *ids = NULL;
    *n = 0;
    if (!text || text[0] == '\0') {
        mnv_model_info info;
        mnv_status st = mnv_model_get_info(model, &info);
        if (st != MNV_OK) return cli_lib_error(cmd, st, "cannot read model info");
        int32_t bos = tok ? mnv_tokenizer_bos(tok) : info.bos_id;
        if (bos < 0)
            return cli_error(cmd, "empty prompt and the model defines no BOS token; "
                                  "give a text or token ids");
        *ids = malloc(sizeof **ids);
        if (!*ids) return cli_error(cmd, "out of memory");
        (*ids)[0] = bos;
        *n = 1;
        return 0;
    }
    if (!tok) return cli_error(cmd, "the model has no tokenizer.json; give token ids");
    mnv_status st = cli_tokenize(tok, text, strlen(text), mnv_tokenizer_add_bos(tok), ids, n);
    if (st != MNV_OK) return cli_lib_error(cmd, st, "cannot tokenize the prompt");
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return cli_error(cmd, "the prompt produced no tokens (the tokenizer has no token for its "
                              "text and no BOS to add); give another prompt or token ids");
    }
    return 0;
}

mnv_status cli_detokenize(const mnv_tokenizer *tok, const int32_t *ids, size_t n,
                          int skip_special, char **text, size_t *len) {
    size_t cap = 16 * n + 64, need = 0;
    *text = NULL;
    *len = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *buf = malloc(cap);
        if (!buf) return MNV_ERR_NOMEM;
        mnv_status st = mnv_detokenize(tok, ids, n, skip_special, buf, cap, &need);
        if (st == MNV_OK && need < cap) {
            buf[need] = '\0';
            *text = buf;
            *len = need;
            return MNV_OK;
        }
        free(buf);
        if (st != MNV_ERR_BUFFER_TOO_SMALL || need < cap) return st;
        cap = need + 1;
    }
    return MNV_ERR_INTERNAL;
}

mnv_status cli_eval(mnv_session *s, const int32_t *ids, size_t n, float *logits, size_t n_vocab,
                    size_t batch) {
    if (batch == 0) batch = n ? n : 1;
    for (size_t off = 0; off < n; off += batch) {
        size_t m = n - off < batch ? n - off : batch;
        mnv_status st = mnv_session_eval(s, ids + off, m, logits ? logits + off * n_vocab : NULL);
        if (st != MNV_OK) return st;
    }
    return MNV_OK;
}

void cli_print_text_end(int last_char) {
    if (last_char >= 0 && last_char != '\n' && isatty(STDOUT_FILENO)) fputc('\n', stdout);
    fflush(stdout);
}

/* Length of the valid UTF-8 sequence at s (at most len bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t len) {
    size_t n = s[0] < 0x80 ? 1 : s[0] >= 0xC2 && s[0] <= 0xDF ? 2 : s[0] >= 0xE0 && s[0] <= 0xEF ? 3
             : s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : 0;
    if (n == 0 || n > len) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0))) return 0;
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90))) return 0;
    return n;
}

void cli_json_string(FILE *f, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        size_t n = utf8_len(p + i, len - i);
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else fwrite(p + i, 1, n, f);
        i += n;
    }
    fputc('"', f);
}

/* ---- measurement --------------------------------------------------------------------- */

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double cli_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

