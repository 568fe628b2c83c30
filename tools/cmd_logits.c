/* cmd_logits.c - `minerva logits`: the logits of every position as JSON. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

#define CMD "logits"

static const char USAGE[] =
    "Usage: minerva logits [-m DIR] --ids \"ID ID ...\" [OPTIONS]\n\n"
    "Evaluate the ids from an empty context and print a JSON array holding, for\n"
    "each position, the array of its n_vocab float32 logits (printed with %.9g so\n"
    "they round-trip exactly).\n\n"
    "Options:\n"
    "  -m, --model DIR   model directory (default: the bundled models/stories260K)\n"
    "      --ids IDS     the token ids, separated by spaces (required)\n"
    "  -t, --threads N   CPU threads, 0 = all cores (default 0)\n"
    "  -c, --ctx N       context length (default: the number of ids)\n"
    "      --kv-type T   KV cache element type: f32, f16, bf16, q8 or q4 (default f32)\n"
    "      --kv-type-k T the K cache's type alone; --kv-type-v T: the V cache's\n"
    "      --kv-rotate R Hadamard rotation of the K/V heads: auto (q4 sides), on, off\n"
    "  -h, --help        show this help\n";

typedef struct {
    const char *model_dir, *ids;
    int n_threads, n_ctx;
    cli_kv_flags kv;
} logits_opts;

static void print_json(const float *logits, size_t n, size_t n_vocab) {
    size_t n_bad = 0;
    fputs("[\n", stdout);
    for (size_t i = 0; i < n; i++) {
        const float *row = logits + i * n_vocab;
        fputs("  [", stdout);
        for (size_t j = 0; j < n_vocab; j++) {
            if (j) fputs(", ", stdout);
            if (isfinite(row[j])) {
                printf("%.9g", (double)row[j]);
            } else {
                fputs("null", stdout); /* JSON has no inf/nan */
                n_bad++;
            }
        }
        fputs(i + 1 < n ? "],\n" : "]\n", stdout);
    }
    fputs("]\n", stdout);
    if (n_bad) fprintf(stderr, "minerva logits: warning: %zu non-finite logits printed as null\n", n_bad);
}

static int eval_and_print(const logits_opts *o, mnv_model *model, const int32_t *ids, size_t n) {
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(model, &info);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot read model info");
    size_t n_vocab = (size_t)info.n_vocab;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_threads = o->n_threads;
    sp.n_ctx = o->n_ctx ? o->n_ctx : (int32_t)n;
    if (cli_kv_types(CMD, &o->kv, &sp.kv_type_k, &sp.kv_type_v) ||
        cli_kv_rotate(CMD, &o->kv, &sp.kv_rotate))
        return CLI_EXIT_USAGE;
    float *logits = malloc(n * n_vocab * sizeof *logits);
    if (!logits) return cli_error(CMD, "out of memory for %zu x %zu logits", n, n_vocab);
    mnv_session *s = NULL;
    st = mnv_session_create(model, &sp, &s);
    int rc = 0;
    if (st != MNV_OK) rc = cli_lib_error(CMD, st, "cannot create a session");
    if (rc == 0 && (st = cli_eval(s, ids, n, logits, n_vocab, 0)) != MNV_OK)
        rc = cli_lib_error(CMD, st, "evaluation failed");
    if (rc == 0) print_json(logits, n, n_vocab);
    mnv_session_free(s);
    free(logits);
    return rc;
}

int cmd_logits(int argc, char **argv) {
    logits_opts o;
    memset(&o, 0, sizeof o);
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &o.model_dir, 0, 0, NULL},
        {NULL, "--ids", CLI_STR, &o.ids, 0, 0, NULL},
        {"-t", "--threads", CLI_INT, &o.n_threads, 0, 4096, NULL},
        {"-c", "--ctx", CLI_INT, &o.n_ctx, 0, 1 << 30, NULL},
        {NULL, "--kv-type", CLI_STR, &o.kv.all, 0, 0, NULL},
        {NULL, "--kv-type-k", CLI_STR, &o.kv.k, 0, 0, NULL},
        {NULL, "--kv-type-v", CLI_STR, &o.kv.v, 0, 0, NULL},
        {NULL, "--kv-rotate", CLI_STR, &o.kv.rotate, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], NULL};
    int rc = 0;
    if (cli_parse(&spec, argc, argv, &rc)) return rc;
    if (!o.ids) return cli_usage(CMD, "--ids is required");
    int32_t *ids = NULL;
    size_t n = 0;
    if ((rc = cli_parse_ids(CMD, "--ids", o.ids, &ids, &n)) != 0) return rc;
    if (n == 0) {
        free(ids);
        return cli_usage(CMD, "--ids: the list is empty");
    }
    mnv_model *model = NULL;
    rc = cli_load_model(CMD, o.model_dir, o.n_threads, &model);
    if (rc == 0) rc = eval_and_print(&o, model, ids, n);
    mnv_model_free(model);
    free(ids);
    return rc;
}
