/* cmd_bench.c - `minerva bench`: prefill and decode speed, llama-bench style.
 *
 * pp test: evaluate p random (valid) token ids in one call from an empty
 * context. tg test: from an empty context, evaluate one token at a time, n
 * times. Each test runs one warm-up repetition, then --reps timed ones; the
 * reported rate is the median. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"

#define CMD "bench"

static const char USAGE[] =
    "Usage: minerva bench [-m DIR] [OPTIONS]\n\n"
    "Measure prompt processing (pp: p tokens in one evaluation from an empty context)\n"
    "and token generation (tg: n evaluations of one token each from an empty context)\n"
    "with random valid token ids. Rates are medians over --reps runs after one\n"
    "warm-up run. Also prints the implied decode bandwidth (weight bytes x tok/s).\n\n"
    "Options:\n"
    "  -m, --model DIR     model directory (default: the bundled models/stories260K)\n"
    "  -p, --prefill N     prompt tokens for the pp test, 0 = skip (default 512)\n"
    "  -n, --decode N      tokens for the tg test, 0 = skip (default 128)\n"
    "  -r, --reps R        timed repetitions (default 3)\n"
    "  -t, --threads N     CPU threads, 0 = all cores (default 0)\n"
    "      --kv-type T     KV cache element type: f32, bf16 or f16 (default f32)\n"
    "      --exact-quant   quantized weights: f32 activations instead of int8\n"
    "      --json          print one JSON object instead of text\n"
    "  -h, --help          show this help\n";

typedef struct {
    const char *model_dir;
    int n_prefill, n_decode, reps, n_threads, json;
    const char *kv_type;
    int exact_quant;
} bench_opts;

typedef struct {
    double pp_tok_s, tg_tok_s; /* 0 when the test was skipped */
    mnv_session_stats last;    /* figures of the last decode step */
    double first_token_s;      /* first evaluation of a fresh session */
    uint64_t weight_bytes, active_bytes;
    int threads;
} bench_result;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Runs one test (one_by_one: the tg test) reps+1 times; *tok_s gets the median rate. */
static mnv_status time_test(mnv_session *s, const int32_t *ids, int n, int one_by_one, int reps,
                            double *tok_s) {
    double *rates = malloc((size_t)reps * sizeof *rates);
    if (!rates) return MNV_ERR_NOMEM;
    mnv_status st = MNV_OK;
    for (int r = 0; r <= reps && st == MNV_OK; r++) {
        mnv_session_reset(s);
        double t0 = cli_now();
        if (one_by_one)
            for (int i = 0; i < n && st == MNV_OK; i++) st = mnv_session_eval(s, ids + i, 1, NULL);
        else
            st = mnv_session_eval(s, ids, (size_t)n, NULL);
        double dt = cli_now() - t0;
        if (r > 0) rates[r - 1] = dt > 0 ? n / dt : 0.0; /* r == 0 is the warm-up */
    }
    if (st == MNV_OK) *tok_s = median(rates, reps);
    free(rates);
    return st;
}

static void json_rate(const char *key, double v, int ran) {
    printf(", \"%s\": ", key);
    if (ran) printf("%.3f", v);
    else printf("null");
}

static void print_result(const bench_opts *o, const char *model, const bench_result *r) {
    double gbs = (double)r->active_bytes * r->tg_tok_s / 1e9, rss = cli_peak_rss_mb();
    if (o->json) {
        printf("{\"model\": ");
        cli_json_string(stdout, model, strlen(model));
        mnv_cpu_info ci;
        mnv_cpu_get_info(&ci);
        printf(", \"cpu\": \"%s\", \"matmul\": \"%s\", \"qmatmul\": \"%s\", \"attention\": \"%s\"", ci.level,
               ci.matmul, o->exact_quant ? ci.qmatmul_exact : ci.qmatmul, ci.attention);
        printf(", \"threads\": %d, \"prefill_tokens\": %d", r->threads, o->n_prefill);
        json_rate("prefill_tok_s", r->pp_tok_s, o->n_prefill > 0);
        printf(", \"decode_tokens\": %d", o->n_decode);
        json_rate("decode_tok_s", r->tg_tok_s, o->n_decode > 0);
        printf(", \"peak_rss_mb\": %.1f, \"weight_bytes\": %llu, \"bytes_per_token\": %llu", rss,
               (unsigned long long)r->weight_bytes, (unsigned long long)r->active_bytes);
        json_rate("decode_gb_s", gbs, o->n_decode > 0);
        printf(", \"host_ms_per_token\": %.4f", (r->last.build_seconds + r->last.plan_seconds) * 1e3);
        printf("}\n");
        return;
    }
    cli_print_cpu(stdout);
    printf("model: %s (weights %.2f MiB), threads: %d, reps: %d\n", model,
           (double)r->weight_bytes / (1024.0 * 1024.0), r->threads, o->reps);
    printf("first token after load: %.2f s\n", r->first_token_s);
    if (o->n_prefill > 0) printf("pp%-5d %10.1f tok/s\n", o->n_prefill, r->pp_tok_s);
    if (o->n_decode > 0) {
        printf("tg%-5d %10.1f tok/s\n", o->n_decode, r->tg_tok_s);
        printf("weight bytes read per decoded token: %.1f MB; decode bandwidth (bytes x tok/s): %.2f GB/s\n",
               (double)r->active_bytes / 1e6, gbs);
        const mnv_session_stats *l = &r->last;
        double host = (l->build_seconds + l->plan_seconds) * 1e3, step = host + l->compute_seconds * 1e3;
        printf("host cost per decoded token: graph build %.3f ms + plan %.3f ms of a %.2f ms step (%.2f%%), %d nodes\n",
               l->build_seconds * 1e3, l->plan_seconds * 1e3, step, step > 0 ? 100.0 * host / step : 0.0, l->n_nodes);
    }
    printf("peak memory: %.1f MiB\n", rss);
}

/* The first token of a fresh session: what a user waits for after loading
 * (pages of the mapped weights come in from the page cache or the disk). */
static double first_token_seconds(mnv_session *s, const int32_t *ids) {
    double t0 = cli_now();
    mnv_status st = mnv_session_eval(s, ids, 1, NULL);
    mnv_session_reset(s);
    return st == MNV_OK ? cli_now() - t0 : -1.0;
}

static int run_tests(const bench_opts *o, mnv_model *model, const int32_t *ids, bench_result *r) {
    int n_max = o->n_prefill > o->n_decode ? o->n_prefill : o->n_decode;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = n_max > 0 ? n_max : 1;
    sp.n_batch = o->n_prefill > 0 ? o->n_prefill : 1;
    if (o->kv_type && cli_parse_kv_type(CMD, o->kv_type, &sp.kv_dtype)) return 2;
    sp.exact_quant = o->exact_quant;
    sp.n_threads = o->n_threads;
    mnv_session *s = NULL;
    mnv_status st = mnv_session_create(model, &sp, &s);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create a session");
    r->first_token_s = first_token_seconds(s, ids);
    if (o->n_prefill > 0) st = time_test(s, ids, o->n_prefill, 0, o->reps, &r->pp_tok_s);
    int rc = st != MNV_OK ? cli_lib_error(CMD, st, "prefill test failed") : 0;
    if (rc == 0 && o->n_decode > 0) {
        st = time_test(s, ids, o->n_decode, 1, o->reps, &r->tg_tok_s);
        if (st != MNV_OK) rc = cli_lib_error(CMD, st, "decode test failed");
        else mnv_session_get_stats(s, &r->last);
    }
    mnv_session_free(s);
    return rc;
}

static int bench_main(const bench_opts *o, mnv_model *model, const char *model_name) {
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(model, &info);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot read model info");
    int n_max = o->n_prefill > o->n_decode ? o->n_prefill : o->n_decode;
    int32_t *ids = malloc((size_t)(n_max > 0 ? n_max : 1) * sizeof *ids);
    if (!ids) return cli_error(CMD, "out of memory");
    uint64_t x = 0x9E3779B97F4A7C15ull; /* xorshift64: fixed, so runs are comparable */
    for (int i = 0; i < n_max; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(x % (uint64_t)info.n_vocab);
    }
    bench_result r = {.weight_bytes = info.weight_bytes, .active_bytes = info.active_bytes_per_token,
                      .threads = o->n_threads};
    int rc = run_tests(o, model, ids, &r);
    mnv_cpu_info ci;
    mnv_cpu_get_info(&ci);
    if (r.threads <= 0 || r.threads > ci.n_cpus) r.threads = ci.n_cpus; /* the library's clamp */
    if (rc == 0) print_result(o, model_name, &r);
    free(ids);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = {NULL, 512, 128, 3, 0, 0, NULL, 0};
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &o.model_dir, 0, 0, NULL},
        {"-p", "--prefill", CLI_INT, &o.n_prefill, 0, 1 << 20, NULL},
        {"-n", "--decode", CLI_INT, &o.n_decode, 0, 1 << 20, NULL},
        {"-r", "--reps", CLI_INT, &o.reps, 1, 1000, NULL},
        {"-t", "--threads", CLI_INT, &o.n_threads, 0, 4096, NULL},
        {NULL, "--json", CLI_FLAG, &o.json, 0, 0, NULL},
        {NULL, "--kv-type", CLI_STR, &o.kv_type, 0, 0, NULL},
        {NULL, "--exact-quant", CLI_FLAG, &o.exact_quant, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], NULL};
    int rc = 0;
    if (cli_parse(&spec, argc, argv, &rc)) return rc;
    char def[4096];
    if (!o.model_dir) {
        if (cli_default_model_dir(CMD, def, sizeof def) != 0) return CLI_EXIT_FAIL;
        o.model_dir = def;
    }
    mnv_model *model = NULL;
    double t0 = cli_now();
    rc = cli_load_model(CMD, o.model_dir, o.n_threads, &model);
    if (rc == 0 && !o.json) printf("load: %.2f s (weights mapped, not read)\n", cli_now() - t0);
    if (rc == 0) rc = bench_main(&o, model, o.model_dir);
    mnv_model_free(model);
    return rc;
}
