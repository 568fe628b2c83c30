/* cmd_perplexity.c - `minerva perplexity`: perplexity of a text file.
 *
 * Definition: the token stream (BOS first when the tokenizer asks for it) is
 * cut into consecutive chunks of ctx tokens. Each chunk is evaluated from an
 * empty context, and tokens 1..end of the chunk are scored by
 * -log softmax(logits of the previous position)[token]. The perplexity is
 * exp(mean of those scores) over all chunks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

#define CMD "perplexity"

static const char USAGE[] =
    "Usage: minerva perplexity [-m DIR] --text-file F [OPTIONS]\n\n"
    "Tokenize F (BOS first when the tokenizer asks for it), cut the tokens into\n"
    "consecutive chunks of --ctx tokens, evaluate each chunk from an empty context and\n"
    "score its tokens 1..end by the log-softmax of the previous position's logits.\n"
    "Per-chunk progress goes to stderr; the last line on stdout is\n"
    "'perplexity: X over N tokens'.\n\n"
    "Options:\n"
    "  -m, --model DIR     model directory (default: the bundled models/stories260K)\n"
    "  -f, --text-file F   the text to score ('-' = stdin) (required)\n"
    "  -c, --ctx N         chunk length in tokens (default: min(model's n_ctx_train, 512))\n"
    "  -t, --threads N     CPU threads, 0 = all cores (default 0)\n"
    "      --kv-type T     KV cache element type: f32, f16, bf16, q8 or q4 (default f32)\n"
    "      --kv-type-k T   the K cache's type alone; --kv-type-v T: the V cache's\n"
    "      --kv-rotate R   Hadamard rotation of the K/V heads: auto (q4 sides), on, off\n"
    "  -h, --help          show this help\n";

typedef struct {
    const char *model_dir, *text_file;
    int n_ctx, n_threads;
    cli_kv_flags kv;
} ppl_opts;

typedef struct {
    double nll;      /* sum of -log p over scored tokens */
    size_t n_scored;
} ppl_acc;

/* -log softmax(row)[target], computed in double with the max subtracted. */
static double neg_log_prob(const float *row, size_t n_vocab, int32_t target) {
    double mx = row[0];
    for (size_t j = 1; j < n_vocab; j++) mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (size_t j = 0; j < n_vocab; j++) sum += exp((double)row[j] - mx);
    return -((double)row[target] - mx - log(sum));
}

static mnv_status score_chunk(mnv_session *s, const int32_t *ids, size_t n, float *logits,
                              size_t n_vocab, ppl_acc *acc) {
    mnv_session_reset(s);
    mnv_status st = cli_eval(s, ids, n, logits, n_vocab, 0);
    if (st != MNV_OK) return st;
    for (size_t i = 1; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= n_vocab) continue; /* eval would have failed */
        acc->nll += neg_log_prob(logits + (i - 1) * n_vocab, n_vocab, ids[i]);
        acc->n_scored++;
    }
    return MNV_OK;
}

static int run_chunks(const ppl_opts *o, mnv_model *model, const int32_t *ids, size_t n,
                      size_t ctx, size_t n_vocab) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = (int32_t)ctx;
    if (cli_kv_types(CMD, &o->kv, &sp.kv_type_k, &sp.kv_type_v) ||
        cli_kv_rotate(CMD, &o->kv, &sp.kv_rotate))
        return CLI_EXIT_USAGE;
    sp.n_threads = o->n_threads;
    mnv_session *s = NULL;
    mnv_status st = mnv_session_create(model, &sp, &s);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create a session");
    float *logits = malloc(ctx * n_vocab * sizeof *logits);
    if (!logits) {
        mnv_session_free(s);
        return cli_error(CMD, "out of memory for %zu x %zu logits", ctx, n_vocab);
    }
    ppl_acc acc = {0.0, 0};
    size_t n_chunks = (n + ctx - 1) / ctx;
    double t0 = cli_now();
    int rc = 0;
    for (size_t c = 0; c < n_chunks && rc == 0; c++) {
        size_t off = c * ctx, m = n - off < ctx ? n - off : ctx;
        st = score_chunk(s, ids + off, m, logits, n_vocab, &acc);
        if (st != MNV_OK) {
            rc = cli_lib_error(CMD, st, "evaluation of chunk %zu failed", c + 1);
            break;
        }
        fprintf(stderr, "[%zu/%zu] %zu tokens, perplexity so far %.4f (%.1f tok/s)\n", c + 1,
                n_chunks, m, acc.n_scored ? exp(acc.nll / (double)acc.n_scored) : NAN,
                (double)(off + m) / (cli_now() - t0));
    }
    if (rc == 0 && acc.n_scored == 0) rc = cli_error(CMD, "no token to score (the text is too short)");
    if (rc == 0) printf("perplexity: %.6f over %zu tokens\n", exp(acc.nll / (double)acc.n_scored),
                        acc.n_scored);
    free(logits);
    mnv_session_free(s);
    return rc;
}

static int tokenize_file(const ppl_opts *o, const mnv_model *model, int32_t **ids, size_t *n) {
    const mnv_tokenizer *tok = mnv_model_tokenizer(model);
    if (!tok) return cli_error(CMD, "the model has no tokenizer.json");
    char *text = NULL;
    size_t len = 0;
    int rc = cli_read_file(CMD, o->text_file, &text, &len);
    if (rc) return rc;
    mnv_status st = cli_tokenize(tok, text, len, mnv_tokenizer_add_bos(tok), ids, n);
    free(text);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot tokenize '%s'", o->text_file);
    return 0;
}

static int perplexity_main(const ppl_opts *o, mnv_model *model) {
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(model, &info);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot read model info");
    size_t ctx = (size_t)o->n_ctx;
    if (ctx == 0) ctx = info.n_ctx_train > 0 && info.n_ctx_train < 512 ? (size_t)info.n_ctx_train : 512;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tokenize_file(o, model, &ids, &n);
    if (rc) return rc;
    fprintf(stderr, "%zu tokens, %zu chunks of up to %zu tokens\n", n, (n + ctx - 1) / ctx, ctx);
    rc = run_chunks(o, model, ids, n, ctx, (size_t)info.n_vocab);
    free(ids);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    ppl_opts o;
    memset(&o, 0, sizeof o);
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &o.model_dir, 0, 0, NULL},
        {"-f", "--text-file", CLI_STR, &o.text_file, 0, 0, NULL},
        {"-c", "--ctx", CLI_INT, &o.n_ctx, 2, 1 << 24, NULL},
        {"-t", "--threads", CLI_INT, &o.n_threads, 0, 4096, NULL},
        {NULL, "--kv-type", CLI_STR, &o.kv.all, 0, 0, NULL},
        {NULL, "--kv-type-k", CLI_STR, &o.kv.k, 0, 0, NULL},
        {NULL, "--kv-type-v", CLI_STR, &o.kv.v, 0, 0, NULL},
        {NULL, "--kv-rotate", CLI_STR, &o.kv.rotate, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], NULL};
    int rc = 0;
    if (cli_parse(&spec, argc, argv, &rc)) return rc;
    if (!o.text_file) return cli_usage(CMD, "--text-file is required");
    mnv_model *model = NULL;
    rc = cli_load_model(CMD, o.model_dir, o.n_threads, &model);
    if (rc == 0) rc = perplexity_main(&o, model);
    mnv_model_free(model);
    return rc;
}
