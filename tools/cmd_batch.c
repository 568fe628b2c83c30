/* cmd_batch.c - `minerva batch`: many prompts through one engine.
 *
 * Every prompt of the file becomes a request of one engine (continuous
 * batching: at most --parallel run at once, the others wait in its queue).
 * The command drives the engine's steps itself, which lets --stagger submit
 * the prompts one every K steps. Tokens are collected per request by the
 * on_token callback and printed in prompt order at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

#define CMD "batch"

typedef struct {
    const char *model_dir, *prompts_file;
    int parallel, stagger, prompt_ids, print_ids, json;
    int no_prefix_cache, step_tokens, kv_tokens;
    float kv_budget_mb;
    cli_gen_flags gen;
    cli_run_flags run;
} batch_opts;

/* One prompt and what its request produced. */
typedef struct {
    int32_t *prompt;
    size_t n_prompt;
    int32_t *tokens; /* generated ids */
    size_t n_tokens, cap_tokens;
    char *text;      /* generated text (text_len bytes, NUL-terminated) */
    size_t text_len, text_cap;
    int no_memory;   /* a buffer could not grow: the request was stopped */
    int done;        /* on_done has run, or the submission failed */
    mnv_status status;
    char *error;     /* the library's message when status is an error */
    mnv_request_result result;
} batch_req;

static void build_usage(char *buf, size_t cap, const cli_gen_flags *gen) {
    snprintf(buf, cap,
             "Usage: minerva batch [-m DIR] --prompts-file F [OPTIONS]\n\n"
             "Run every prompt of F (one a line; empty lines are skipped) through one engine:\n"
             "at most --parallel run at once, the others wait and join as earlier ones finish\n"
             "(continuous batching, with prompts processed in chunks of at most --step-tokens\n"
             "tokens per step). At the end, per prompt in file order, prints its index (from 0),\n"
             "a tab and its generated text (newlines, tabs and backslashes written as \\n, \\t\n"
             "and \\\\) or its ids; then the aggregate figures on stderr.\n\n"
             "Options:\n"
             "  -m, --model DIR         model directory (default: the bundled models/stories260K,\n"
             "                          or $MINERVA_DEFAULT_MODEL)\n"
             "      --prompts-file F    the prompts, one a line (\"-\" = stdin): text, tokenized as\n"
             "                          generate -p does, or ids with --prompt-ids (required)\n"
             "      --prompt-ids        each line holds token ids \"ID ID ...\" (or ID,ID,...)\n"
             "      --parallel N        requests running at once (default 8)\n"
             "      --stagger K         submit one more prompt every K steps; 0 = all at once\n"
             "                          (default 0)\n");
    cli_gen_usage(buf, cap, gen);
    cli_run_usage(buf, cap, "context length of each request");
    size_t len = strlen(buf);
    snprintf(buf + len, cap - len,
             "      --step-tokens N     tokens of one engine step (decodes and prompt chunks),\n"
             "                          0 = the engine's default (512)\n"
             "      --no-prefix-cache   do not reuse the K/V of cached prompt prefixes\n"
             "      --kv-budget-mb M    memory of the KV block pool in MiB (fractions allowed);\n"
             "                          0 = sized from --kv-tokens (default 0)\n"
             "      --kv-tokens N       tokens the KV pool holds for all requests together;\n"
             "                          0 = --parallel x --ctx, at most 65536 (default 0)\n"
             "      --print-ids         print generated token ids instead of text\n"
             "      --json              one JSON object per prompt (index, n_prompt, n_cached,\n"
             "                          tokens, text, stop, timings), then one of aggregates\n"
             "  -h, --help              show this help\n");
}

static int parse_args(batch_opts *o, int argc, char **argv, int *rc) {
    static char usage[6144];
    enum { N_OWN = 11 };
    cli_opt opts[N_OWN + CLI_GEN_N_OPTS + CLI_RUN_N_OPTS] = {
        {"-m", "--model", CLI_STR, &o->model_dir, 0, 0, NULL},
        {NULL, "--prompts-file", CLI_STR, &o->prompts_file, 0, 0, NULL},
        {NULL, "--prompt-ids", CLI_FLAG, &o->prompt_ids, 0, 0, NULL},
        {NULL, "--parallel", CLI_INT, &o->parallel, 1, 4096, NULL},
        {NULL, "--stagger", CLI_INT, &o->stagger, 0, 1 << 30, NULL},
        {NULL, "--step-tokens", CLI_INT, &o->step_tokens, 0, 1 << 20, NULL},
        {NULL, "--no-prefix-cache", CLI_FLAG, &o->no_prefix_cache, 0, 0, NULL},
        {NULL, "--kv-budget-mb", CLI_FLOAT, &o->kv_budget_mb, 0, 1 << 24, NULL},
        {NULL, "--kv-tokens", CLI_INT, &o->kv_tokens, 0, 1 << 30, NULL},
        {NULL, "--print-ids", CLI_FLAG, &o->print_ids, 0, 0, NULL},
        {NULL, "--json", CLI_FLAG, &o->json, 0, 0, NULL},
    };
    cli_gen_opts(&o->gen, opts + N_OWN);
    cli_run_opts(&o->run, opts + N_OWN + CLI_GEN_N_OPTS);
    build_usage(usage, sizeof usage, &o->gen);
    cli_spec spec = {CMD, usage, opts, sizeof opts / sizeof opts[0], NULL};
    if (cli_parse(&spec, argc, argv, rc)) return 1;
    if (!o->prompts_file) {
        *rc = cli_usage(CMD, "--prompts-file is required");
        return 1;
    }
    return 0;
}

/* ---- prompts ------------------------------------------------------------------ */

static void reqs_free(batch_req *r, size_t n) {
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].prompt);
        free(r[i].tokens);
        free(r[i].text);
        free(r[i].error);
    }
    free(r);
}

/* The prompt of one line (NUL-terminated, without its newline). */
static int line_prompt(const batch_opts *o, const mnv_model *model, const char *line, size_t line_no,
                       batch_req *r) {
    if (!o->prompt_ids) {
        int rc = cli_prompt_ids(CMD, model, line, &r->prompt, &r->n_prompt);
        if (rc != 0) fprintf(stderr, "minerva %s: (the prompt of line %zu of --prompts-file)\n", CMD, line_no);
        return rc;
    }
    char what[64];
    snprintf(what, sizeof what, "--prompts-file line %zu", line_no);
    int rc = cli_parse_ids(CMD, what, line, &r->prompt, &r->n_prompt);
    if (rc == 0 && r->n_prompt == 0) rc = cli_usage(CMD, "%s: no token ids", what);
    return rc;
}

/* Read F: one request per non-empty line. */
static int read_prompts(const batch_opts *o, const mnv_model *model, batch_req **out, size_t *n_out) {
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    *n_out = 0;
    if (cli_read_file(CMD, o->prompts_file, &data, &len) != 0) return CLI_EXIT_FAIL;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += data[i] == '\n';
    batch_req *reqs = calloc(cap, sizeof *reqs);
    if (!reqs) {
        free(data);
        return cli_error(CMD, "out of memory");
    }
    size_t n = 0, line_no = 0;
    int rc = 0;
    for (char *p = data; rc == 0 && p < data + len;) {
        char *end = memchr(p, '\n', (size_t)(data + len - p));
        if (!end) end = data + len;
        size_t n_line = (size_t)(end - p);
        if (n_line > 0 && p[n_line - 1] == '\r') n_line--;
        int has_nul = memchr(p, '\0', n_line) != NULL;
        p[n_line] = '\0';
        line_no++;
        if (has_nul)
            rc = cli_error(CMD, "'%s' line %zu: a NUL byte in the prompt", o->prompts_file, line_no);
        else if (n_line > 0)
            rc = line_prompt(o, model, p, line_no, &reqs[n++]);
        p = end + 1;
    }
    free(data);
    if (rc == 0 && n == 0) rc = cli_error(CMD, "'%s' holds no prompt", o->prompts_file);
    if (rc != 0) {
        reqs_free(reqs, n);
        return rc;
    }
    *out = reqs;
    *n_out = n;
    return 0;
}

/* ---- the engine's callbacks (on the thread that steps) ------------------------------- */

/* Room for one more id and len more bytes of text (and a NUL). */
static int reserve(batch_req *r, size_t len) {
    if (r->n_tokens == r->cap_tokens) {
        size_t cap = r->cap_tokens ? 2 * r->cap_tokens : 64;
        int32_t *t = realloc(r->tokens, cap * sizeof *t);
        if (!t) return -1;
        r->tokens = t;
        r->cap_tokens = cap;
    }
    if (r->text_len + len + 1 > r->text_cap) {
        size_t cap = r->text_cap ? 2 * r->text_cap : 256;
        while (cap < r->text_len + len + 1) cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t) return -1;
        r->text = t;
        r->text_cap = cap;
    }
    return 0;
}

static int on_token(void *user_data, int32_t token, const char *text, size_t len) {
    batch_req *r = user_data;
    if (reserve(r, len) != 0) {
        r->no_memory = 1;
        return 1; /* stop this request */
    }
    r->tokens[r->n_tokens++] = token;
    memcpy(r->text + r->text_len, text, len);
    r->text_len += len;
    r->text[r->text_len] = '\0';
    return 0;
}

static void on_done(void *user_data, uint64_t id, mnv_status status, const mnv_request_result *result) {
    (void)id;
    batch_req *r = user_data;
    r->done = 1;
    r->status = status;
    if (result) r->result = *result;
    if (status != MNV_OK) {
        const char *msg = mnv_last_error();
        r->error = msg && *msg ? strdup(msg) : NULL;
    }
}

/* ---- the step loop ---------------------------------------------------------------- */

typedef struct {
    mnv_engine *e;
    batch_req *reqs;
    size_t n, next;  /* prompts, and the next one to submit */
    uint64_t steps;  /* steps this command ran */
    double seconds;  /* wall time from the first submission to the last step */
} batch_run;

static void submit_next(const batch_opts *o, batch_run *b) {
    batch_req *r = &b->reqs[b->next++];
    mnv_request_params rp = mnv_request_params_default();
    rp.prompt = r->prompt;
    rp.n_prompt = r->n_prompt;
    rp.gen = o->gen.gp;
    rp.gen.on_token = on_token;
    rp.gen.user_data = r;
    rp.on_done = on_done;
    rp.detached = 1; /* on_done keeps what we need */
    uint64_t id = 0;
    mnv_status st = mnv_engine_submit(b->e, &rp, &id);
    if (st != MNV_OK) {
        const char *msg = mnv_last_error();
        r->done = 1;
        r->status = st;
        r->error = msg && *msg ? strdup(msg) : NULL;
    }
}

/* Submit (all at once, or one every --stagger steps) and step until every
 * request has ended. A request that ends at once (a failed submission)
 * lets the next one in without waiting for its turn. */
static int drive(const batch_opts *o, batch_run *b) {
    int32_t active = 0;
    uint64_t next_at = 0;
    double t0 = cli_now();
    while (b->next < b->n || active > 0) {
        if (o->stagger == 0) {
            while (b->next < b->n) submit_next(o, b);
        } else if (b->next < b->n && (active == 0 || b->steps >= next_at)) {
            submit_next(o, b);
            next_at = b->steps + (uint64_t)o->stagger;
        }
        mnv_status st = mnv_engine_step(b->e, &active);
        b->steps++;
        if (st != MNV_OK)
            return cli_lib_error(CMD, st, "step %llu of the engine failed", (unsigned long long)b->steps);
    }
    b->seconds = cli_now() - t0;
    return 0;
}

/* ---- output ------------------------------------------------------------------------ */

static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else putchar(c);
    }
}

static double decode_rate(const mnv_request_result *res) {
    /* gen_seconds runs from the first token to the end: the later tokens */
    const mnv_generate_result *g = &res->gen;
    return g->gen_seconds > 0 && g->n_generated > 1 ? (g->n_generated - 1) / g->gen_seconds : 0.0;
}

static void print_json_req(size_t i, const batch_req *r) {
    const mnv_request_result *res = &r->result;
    printf("{\"index\": %zu, \"status\": ", i);
    const char *st = r->no_memory ? "out of memory" : r->status == MNV_OK ? "ok" : mnv_status_str(r->status);
    cli_json_string(stdout, st, strlen(st));
    if (r->error) {
        printf(", \"error\": ");
        cli_json_string(stdout, r->error, strlen(r->error));
    }
    printf(", \"n_prompt\": %zu, \"n_cached\": %d, \"tokens\": [", r->n_prompt, (int)res->n_cached);
    for (size_t t = 0; t < r->n_tokens; t++) printf(t ? ", %d" : "%d", (int)r->tokens[t]);
    printf("], \"text\": ");
    cli_json_string(stdout, r->text ? r->text : "", r->text_len);
    const char *stop = cli_stop_reason_str(res->gen.stop_reason);
    printf(", \"stop\": ");
    cli_json_string(stdout, stop, strlen(stop));
    printf(", \"queue_s\": %.6f, \"first_token_s\": %.6f, \"prompt_s\": %.6f, \"gen_s\": %.6f"
           ", \"decode_tok_s\": %.3f}\n",
           res->queue_seconds, res->first_token_seconds, res->gen.prompt_seconds, res->gen.gen_seconds,
           decode_rate(res));
}

/* Per prompt, in file order; returns the number of failed requests. */
static size_t print_requests(const batch_opts *o, const batch_run *b) {
    size_t failed = 0;
    for (size_t i = 0; i < b->n; i++) {
        const batch_req *r = &b->reqs[i];
        int ok = r->done && r->status == MNV_OK && !r->no_memory;
        if (!ok) {
            failed++;
            if (r->no_memory) fprintf(stderr, "minerva %s: prompt %zu: out of memory for its output\n", CMD, i);
            else if (!r->done) fprintf(stderr, "minerva %s: prompt %zu: did not end\n", CMD, i);
            else
                fprintf(stderr, "minerva %s: prompt %zu: %s%s%s\n", CMD, i, mnv_status_str(r->status),
                        r->error ? ": " : "", r->error ? r->error : "");
        }
        if (o->json) {
            print_json_req(i, r);
            continue;
        }
        printf("%zu\t", i);
        if (o->print_ids)
            for (size_t t = 0; t < r->n_tokens; t++) printf(t ? " %d" : "%d", (int)r->tokens[t]);
        else
            print_escaped(r->text ? r->text : "", r->text_len);
        putchar('\n');
    }
    fflush(stdout);
    return failed;
}

static void print_summary(const batch_opts *o, const batch_run *b, size_t failed) {
    mnv_engine_stats s;
    memset(&s, 0, sizeof s);
    mnv_engine_get_stats(b->e, &s);
    uint64_t prompt = 0, generated = 0;
    for (size_t i = 0; i < b->n; i++) {
        prompt += b->reqs[i].n_prompt;
        generated += b->reqs[i].n_tokens;
    }
    double rate = b->seconds > 0 ? (double)generated / b->seconds : 0.0, mib = 1024.0 * 1024.0;
    double steps = s.steps ? (double)s.steps : 1.0;
    if (o->json) {
        printf("{\"summary\": true, \"requests\": %zu, \"failed\": %zu, \"parallel\": %d, \"stagger\": %d"
               ", \"prompt_tokens\": %llu, \"generated_tokens\": %llu, \"seconds\": %.6f"
               ", \"decode_tok_s\": %.3f, \"steps\": %llu, \"tokens_decoded\": %llu"
               ", \"tokens_prefilled\": %llu, \"prefix_hit_tokens\": %llu, \"kv_bytes_total\": %llu"
               ", \"kv_bytes_peak\": %llu, \"kv_blocks_total\": %lld, \"kv_block_tokens\": %d"
               ", \"graph_cache_hits\": %llu, \"graph_cache_misses\": %llu, \"host_s\": %.6f"
               ", \"compute_s\": %.6f, \"peak_rss_mb\": %.1f}\n",
               b->n, failed, o->parallel, o->stagger, (unsigned long long)prompt,
               (unsigned long long)generated, b->seconds, rate, (unsigned long long)s.steps,
               (unsigned long long)s.tokens_decoded, (unsigned long long)s.tokens_prefilled,
               (unsigned long long)s.prefix_hit_tokens, (unsigned long long)s.kv_bytes_total,
               (unsigned long long)s.kv_bytes_peak, (long long)s.kv_blocks_total, (int)s.kv_block_tokens,
               (unsigned long long)s.graph_cache_hits, (unsigned long long)s.graph_cache_misses,
               s.host_seconds, s.compute_seconds, cli_peak_rss_mb());
        fflush(stdout);
        return;
    }
    fprintf(stderr, "requests:    %zu (%zu failed), at most %d at once, ", b->n, failed, o->parallel);
    if (o->stagger) fprintf(stderr, "one submitted every %d steps\n", o->stagger);
    else fprintf(stderr, "all submitted at once\n");
    fprintf(stderr, "prompts:     %llu tokens: %llu evaluated, %llu from the prefix cache\n",
            (unsigned long long)prompt, (unsigned long long)s.tokens_prefilled,
            (unsigned long long)s.prefix_hit_tokens);
    fprintf(stderr, "generated:   %llu tokens in %.3f s: %.1f tok/s aggregate (prompts included)\n",
            (unsigned long long)generated, b->seconds, rate);
    fprintf(stderr, "steps:       %llu (graph cache: %llu hits, %llu misses); per step: host %.3f ms, "
                    "compute %.3f ms\n",
            (unsigned long long)s.steps, (unsigned long long)s.graph_cache_hits,
            (unsigned long long)s.graph_cache_misses, s.host_seconds * 1e3 / steps,
            s.compute_seconds * 1e3 / steps);
    fprintf(stderr, "KV pool:     peak %.3f MiB of %.3f MiB (%lld blocks of %d tokens)\n",
            (double)s.kv_bytes_peak / mib, (double)s.kv_bytes_total / mib, (long long)s.kv_blocks_total,
            (int)s.kv_block_tokens);
    fprintf(stderr, "peak memory: %.1f MiB\n", cli_peak_rss_mb());
}

/* ---- the command -------------------------------------------------------------------- */

static int make_engine(const batch_opts *o, mnv_model *model, mnv_engine **e) {
    mnv_engine_params ep = mnv_engine_params_default();
    ep.n_threads = o->run.n_threads;
    if (cli_kv_types(CMD, &o->run.kv, &ep.kv_type_k, &ep.kv_type_v) ||
        cli_kv_rotate(CMD, &o->run.kv, &ep.kv_rotate))
        return CLI_EXIT_USAGE;
    ep.exact_quant = o->run.exact_quant;
    ep.deterministic = o->run.deterministic;
    ep.device = o->run.device;
    ep.kv_budget_bytes = (uint64_t)((double)o->kv_budget_mb * 1024.0 * 1024.0);
    ep.kv_max_tokens = o->kv_tokens;
    ep.max_seqs = o->parallel;
    ep.max_seq_tokens = o->run.n_ctx;
    ep.step_tokens = o->step_tokens;
    ep.prefix_cache = !o->no_prefix_cache;
    ep.run_thread = 0;
    mnv_status st = mnv_engine_create(model, &ep, e);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create the engine");
    if (cli_load_weights(CMD, NULL, *e)) return CLI_EXIT_FAIL;
    return 0;
}

static int run_batch(const batch_opts *o, mnv_model *model) {
    batch_run b;
    memset(&b, 0, sizeof b);
    int rc = read_prompts(o, model, &b.reqs, &b.n);
    if (rc == 0) rc = make_engine(o, model, &b.e);
    if (rc == 0) rc = drive(o, &b);
    if (rc == 0) {
        size_t failed = print_requests(o, &b);
        print_summary(o, &b, failed);
        if (failed) rc = CLI_EXIT_FAIL;
    }
    if (b.e) mnv_engine_free(b.e);
    reqs_free(b.reqs, b.n);
    return rc;
}

static int load_and_run(batch_opts *o) {
    int32_t kt, vt;
    int32_t rot;
    if (cli_kv_types(CMD, &o->run.kv, &kt, &vt) ||
        cli_kv_rotate(CMD, &o->run.kv, &rot))
        return CLI_EXIT_USAGE;
    cli_gen_flags_finish(&o->gen);
    mnv_model *model = NULL;
    int rc = cli_load_model(CMD, o->model_dir, o->run.n_threads, &model);
    if (rc != 0) return rc;
    if (!o->print_ids && !mnv_model_tokenizer(model)) {
        fprintf(stderr, "minerva %s: the model has no tokenizer.json; printing token ids\n", CMD);
        o->print_ids = 1;
    }
    rc = run_batch(o, model);
    mnv_model_free(model);
    return rc;
}

int cmd_batch(int argc, char **argv) {
    batch_opts o;
    memset(&o, 0, sizeof o);
    o.parallel = 8;
    cli_gen_flags_init(&o.gen);
    int rc = 0;
    if (!parse_args(&o, argc, argv, &rc)) rc = load_and_run(&o);
    cli_gen_flags_free(&o.gen);
    return rc;
}
