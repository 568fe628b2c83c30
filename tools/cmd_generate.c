/* cmd_generate.c - `minerva generate`: stream generated text to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_common.h"

#define CMD "generate"

typedef struct {
    const char *model_dir;
    const char *prompt;     /* -p TEXT; NULL when not given */
    const char *prompt_ids; /* --prompt-ids "ID ID ..." */
    int n_threads, n_ctx, print_ids, ignore_eos, seed_given;
    const char *kv_type;
    int exact_quant;
    mnv_generate_params gp; /* max_tokens and sampler are set by the options */
    cli_strv stops;
} gen_opts;

typedef struct {
    int print_ids;
    size_t n_tokens;
    int last_char; /* last byte written in text mode, -1 if none */
} gen_stream;

static const char *stop_reason_str(mnv_stop_reason r) {
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

static void build_usage(char *buf, size_t cap, const mnv_generate_params *d) {
    const mnv_sampler_params *s = &d->sampler;
    snprintf(buf, cap,
             "Usage: minerva generate [OPTIONS]\n\n"
             "Generate text and stream it to stdout; statistics go to stderr.\n\n"
             "Options:\n"
             "  -m, --model DIR         model directory (default: the bundled models/stories260K,\n"
             "                          or $MINERVA_DEFAULT_MODEL)\n"
             "  -p, --prompt TEXT       prompt text, tokenized with BOS when the tokenizer asks\n"
             "                          for it; \"\" (the default) means BOS alone\n"
             "      --prompt-ids IDS    prompt as token ids \"ID ID ...\", used as given\n"
             "  -n, --n-predict N       tokens to generate (default %d)\n"
             "      --temp T            temperature, 0 = greedy (default %g)\n"
             "      --top-k K           top-k, 0 = off (default %d)\n"
             "      --top-p P           top-p, 1 = off (default %g)\n"
             "      --min-p P           min-p, 0 = off (default %g)\n"
             "      --repeat-penalty R  repetition penalty, 1 = off (default %g)\n"
             "      --repeat-last-n N   penalty window, -1 = whole context (default %d)\n"
             "      --seed S            sampling seed (default: from the clock, printed)\n"
             "  -t, --threads N         CPU threads, 0 = all cores (default 0)\n"
             "  -c, --ctx N             context length, 0 = min(model's, 4096) (default 0)\n"
             "      --kv-type T         KV cache element type: f32, bf16 or f16 (default f32)\n"
             "      --exact-quant       quantized weights: keep f32 activations (MLX's numerics,\n"
             "                          slower) instead of rounding them to int8\n"
             "      --stop STR          stop before STR (repeatable)\n"
             "      --print-ids         print generated token ids instead of text\n"
             "      --ignore-eos        keep generating past end-of-sequence tokens\n"
             "  -h, --help              show this help\n",
             d->max_tokens, (double)s->temperature, s->top_k, (double)s->top_p,
             (double)s->min_p, (double)s->repeat_penalty, s->repeat_last_n);
}

static int parse_args(gen_opts *o, int argc, char **argv, int *rc) {
    static char usage[4096];
    mnv_sampler_params *s = &o->gp.sampler;
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &o->model_dir, 0, 0, NULL},
        {"-p", "--prompt", CLI_STR, &o->prompt, 0, 0, NULL},
        {NULL, "--prompt-ids", CLI_STR, &o->prompt_ids, 0, 0, NULL},
        {"-n", "--n-predict", CLI_INT, &o->gp.max_tokens, 0, 1 << 30, NULL},
        {NULL, "--temp", CLI_FLOAT, &s->temperature, 0, 1e6, NULL},
        {NULL, "--top-k", CLI_INT, &s->top_k, 0, 1 << 30, NULL},
        {NULL, "--top-p", CLI_FLOAT, &s->top_p, 0, 1, NULL},
        {NULL, "--min-p", CLI_FLOAT, &s->min_p, 0, 1, NULL},
        {NULL, "--repeat-penalty", CLI_FLOAT, &s->repeat_penalty, 1e-6, 1e6, NULL},
        {NULL, "--repeat-last-n", CLI_INT, &s->repeat_last_n, -1, 1 << 30, NULL},
        {NULL, "--seed", CLI_U64, &s->seed, 0, 0, &o->seed_given},
        {"-t", "--threads", CLI_INT, &o->n_threads, 0, 4096, NULL},
        {"-c", "--ctx", CLI_INT, &o->n_ctx, 0, 1 << 30, NULL},
        {NULL, "--kv-type", CLI_STR, &o->kv_type, 0, 0, NULL},
        {NULL, "--exact-quant", CLI_FLAG, &o->exact_quant, 0, 0, NULL},
        {NULL, "--stop", CLI_MULTI, &o->stops, 0, 0, NULL},
        {NULL, "--print-ids", CLI_FLAG, &o->print_ids, 0, 0, NULL},
        {NULL, "--ignore-eos", CLI_FLAG, &o->ignore_eos, 0, 0, NULL},
    };
    build_usage(usage, sizeof usage, &o->gp);
    cli_spec spec = {CMD, usage, opts, sizeof opts / sizeof opts[0], NULL};
    if (cli_parse(&spec, argc, argv, rc)) return 1;
    if (o->prompt && o->prompt_ids) {
        *rc = cli_usage(CMD, "give either --prompt or --prompt-ids, not both");
        return 1;
    }
    return 0;
}

/* The prompt ids: --prompt-ids as given, BOS alone for an empty prompt, else
 * the tokenized text (with BOS when the tokenizer says add_bos). */
static int build_prompt(const gen_opts *o, const mnv_model *model, int32_t **ids, size_t *n) {
    if (o->prompt_ids) return cli_parse_ids(CMD, "--prompt-ids", o->prompt_ids, ids, n);
    const mnv_tokenizer *tok = mnv_model_tokenizer(model);
    const char *text = o->prompt ? o->prompt : "";
    if (text[0] == '\0') {
        mnv_model_info info;
        mnv_status st = mnv_model_get_info(model, &info);
        if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot read model info");
        int32_t bos = tok ? mnv_tokenizer_bos(tok) : info.bos_id;
        if (bos < 0)
            return cli_error(CMD, "empty prompt and the model defines no BOS token; "
                                  "give -p TEXT or --prompt-ids");
        *ids = malloc(sizeof **ids);
        if (!*ids) return cli_error(CMD, "out of memory");
        (*ids)[0] = bos;
        *n = 1;
        return 0;
    }
    if (!tok) return cli_error(CMD, "the model has no tokenizer.json; use --prompt-ids");
    mnv_status st = cli_tokenize(tok, text, strlen(text), mnv_tokenizer_add_bos(tok), ids, n);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot tokenize the prompt");
    return 0;
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
            gt > 0 ? r->n_generated / gt : 0.0, stop_reason_str(r->stop_reason));
    fprintf(stderr, "peak memory: %.1f MiB\n", cli_peak_rss_mb());
}

static int run(gen_opts *o, mnv_model *model, const int32_t *prompt, size_t n_prompt) {
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = o->n_ctx;
    sp.n_threads = o->n_threads;
    if (o->kv_type && cli_parse_kv_type(CMD, o->kv_type, &sp.kv_dtype)) return 2;
    sp.exact_quant = o->exact_quant;
    mnv_session *sess = NULL;
    mnv_status st = mnv_session_create(model, &sp, &sess);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create a session");
    gen_stream g = {o->print_ids, 0, -1};
    o->gp.stop_strings = o->stops.items;
    o->gp.n_stop = o->stops.n;
    o->gp.ignore_eos = o->ignore_eos;
    o->gp.on_token = on_token;
    o->gp.user_data = &g;
    mnv_generate_result res;
    memset(&res, 0, sizeof res);
    st = mnv_generate(sess, prompt, n_prompt, &o->gp, &res);
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
    if (!o->seed_given) {
        o->gp.sampler.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        fprintf(stderr, "seed: %llu\n", (unsigned long long)o->gp.sampler.seed);
    }
    mnv_model *model = NULL;
    int rc = cli_load_model(CMD, o->model_dir, o->n_threads, &model);
    if (rc != 0) return rc;
    if (!o->print_ids && !mnv_model_tokenizer(model)) {
        fprintf(stderr, "minerva generate: the model has no tokenizer.json; printing token ids\n");
        o->print_ids = 1;
    }
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    rc = build_prompt(o, model, &prompt, &n_prompt);
    if (rc == 0 && n_prompt == 0)
        rc = o->prompt_ids ? cli_usage(CMD, "--prompt-ids: the list is empty")
                           : cli_error(CMD, "the prompt produced no tokens (the tokenizer has no token "
                                            "for its text and no BOS to add); give another prompt or "
                                            "--prompt-ids");
    if (rc == 0) rc = run(o, model, prompt, n_prompt);
    free(prompt);
    mnv_model_free(model);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    memset(&o, 0, sizeof o);
    o.gp = mnv_generate_params_default();
    o.gp.sampler = mnv_sampler_params_default();
    int rc = 0;
    if (!parse_args(&o, argc, argv, &rc)) rc = load_and_run(&o);
    cli_strv_free(&o.stops);
    return rc;
}
