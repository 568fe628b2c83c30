/* cmd_generate.c - `minerva generate`: stream generated text to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

#define CMD "generate"

typedef struct {
    const char *model_dir;
    const char *prompt;     /* -p TEXT; NULL when not given */
    const char *prompt_ids; /* --prompt-ids "ID ID ..." */
    int print_ids;
    cli_gen_flags gen;
    cli_run_flags run;
} gen_opts;

typedef struct {
    int print_ids;
    size_t n_tokens;
    int last_char; /* last byte written in text mode, -1 if none */
} gen_stream;

static void build_usage(char *buf, size_t cap, const cli_gen_flags *gen) {
    snprintf(buf, cap,
             "Usage: minerva generate [OPTIONS]\n\n"
             "Generate text and stream it to stdout; statistics go to stderr.\n\n"
             "Options:\n"
             "  -m, --model DIR         model directory (default: the bundled models/stories260K,\n"
             "                          or $MINERVA_DEFAULT_MODEL)\n"
             "  -p, --prompt TEXT       prompt text, tokenized with BOS when the tokenizer asks\n"
             "                          for it; \"\" (the default) means BOS alone\n"
             "      --prompt-ids IDS    prompt as token ids \"ID ID ...\", used as given\n");
    cli_gen_usage(buf, cap, gen);
    cli_run_usage(buf, cap, "context length");
    size_t len = strlen(buf);
    snprintf(buf + len, cap - len,
             "      --print-ids         print generated token ids instead of text\n"
             "  -h, --help              show this help\n");
}

static int parse_args(gen_opts *o, int argc, char **argv, int *rc) {
    static char usage[4096];
    cli_opt opts[4 + CLI_GEN_N_OPTS + CLI_RUN_N_OPTS] = {
        {"-m", "--model", CLI_STR, &o->model_dir, 0, 0, NULL},
        {"-p", "--prompt", CLI_STR, &o->prompt, 0, 0, NULL},
        {NULL, "--prompt-ids", CLI_STR, &o->prompt_ids, 0, 0, NULL},
        {NULL, "--print-ids", CLI_FLAG, &o->print_ids, 0, 0, NULL},
    };
    cli_gen_opts(&o->gen, opts + 4);
    cli_run_opts(&o->run, opts + 4 + CLI_GEN_N_OPTS);
    build_usage(usage, sizeof usage, &o->gen);
    cli_spec spec = {CMD, usage, opts, sizeof opts / sizeof opts[0], NULL};
    if (cli_parse(&spec, argc, argv, rc)) return 1;
    if (o->prompt && o->prompt_ids) {
        *rc = cli_usage(CMD, "give either --prompt or --prompt-ids, not both");
        return 1;
    }
    return 0;
}

/* The prompt ids: --prompt-ids as given, else the text as cli_prompt_ids makes it. */
static int build_prompt(const gen_opts *o, const mnv_model *model, int32_t **ids, size_t *n) {
    if (!o->prompt_ids) return cli_prompt_ids(CMD, model, o->prompt, ids, n);
    int rc = cli_parse_ids(CMD, "--prompt-ids", o->prompt_ids, ids, n);
    if (rc == 0 && *n == 0) rc = cli_usage(CMD, "--prompt-ids: the list is empty");
    return rc;
}

static int on_token(void *user_data, int32_t token, const char *text, size_t len) {
    gen_stream *g = user_data;
    if (g->print_ids) {
        printf(g->n_tokens ? " %d" : "%d", (int)token);
    } else if (len > 0) {
        fwrite(text, 1, len, stdout);
        g->last_char = (unsigned char)text[len - 1];
    }
    g->n_tokens++;
    fflush(stdout);
    return 0;
}

static void print_stats(const mnv_generate_result *r) {
    double pt = r->prompt_seconds, gt = r->gen_seconds;
    fprintf(stderr, "prompt:      %d tokens, %.3f s, %.1f tok/s\n", r->n_prompt, pt,
            pt > 0 ? r->n_prompt / pt : 0.0);
    fprintf(stderr, "generated:   %d tokens, %.3f s, %.1f tok/s (stop: %s)\n", r->n_generated, gt,
            gt > 0 ? r->n_generated / gt : 0.0, cli_stop_reason_str(r->stop_reason));
    fprintf(stderr, "peak memory: %.1f MiB\n", cli_peak_rss_mb());
}

static int run(gen_opts *o, mnv_model *model, const int32_t *prompt, size_t n_prompt) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = o->run.n_ctx;
    sp.n_threads = o->run.n_threads;
    if (cli_kv_types(CMD, &o->run.kv, &sp.kv_type_k, &sp.kv_type_v) ||
        cli_kv_rotate(CMD, &o->run.kv, &sp.kv_rotate))
        return CLI_EXIT_USAGE;
    sp.exact_quant = o->run.exact_quant;
    sp.deterministic = o->run.deterministic;
    sp.device = o->run.device;
    mnv_session *sess = NULL;
    mnv_status st = mnv_session_create(model, &sp, &sess);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create a session");
    if (cli_load_weights(CMD, sess, NULL)) {
        mnv_session_free(sess);
        return CLI_EXIT_FAIL;
    }
    gen_stream g = {o->print_ids, 0, -1};
    o->gen.gp.on_token = on_token;
    o->gen.gp.user_data = &g;
    mnv_generate_result res;
    memset(&res, 0, sizeof res);
    st = mnv_generate(sess, prompt, n_prompt, &o->gen.gp, &res);
    if (o->print_ids) {
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        cli_print_text_end(g.last_char);
    }
    mnv_session_free(sess);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "generation failed");
    print_stats(&res);
    return 0;
}

static int load_and_run(gen_opts *o) {
    cli_gen_flags_finish(&o->gen);
    mnv_model *model = NULL;
    int rc = cli_load_model(CMD, o->model_dir, o->run.n_threads, &model);
    if (rc != 0) return rc;
    if (!o->print_ids && !mnv_model_tokenizer(model)) {
        fprintf(stderr, "minerva generate: the model has no tokenizer.json; printing token ids\n");
        o->print_ids = 1;
    }
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    rc = build_prompt(o, model, &prompt, &n_prompt);
    if (rc == 0) rc = run(o, model, prompt, n_prompt);
    free(prompt);
    mnv_model_free(model);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    memset(&o, 0, sizeof o);
    cli_gen_flags_init(&o.gen);
    int rc = 0;
    if (!parse_args(&o, argc, argv, &rc)) rc = load_and_run(&o);
    cli_gen_flags_free(&o.gen);
    return rc;
}
