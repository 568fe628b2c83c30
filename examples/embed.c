/* embed.c - the desktop-app contract of libminerva in one short program.
 *
 *   embed [MODEL_DIR]      (default: models/stories260K, relative to the cwd)
 *
 * It uses nothing but minerva.h and libc, and shows the whole life of an
 * embedding: load a model, read its description, tokenize a prompt, create a
 * session, generate with a streaming callback and stop strings, then free
 * everything. Every fallible call returns an mnv_status; on failure we print
 * mnv_status_str() and mnv_last_error() and unwind, never exit() mid-way:
 * a host application must survive a broken model file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minerva.h"

/* Print a failed call's status and the library's detailed message. */
static int report(const char *what, mnv_status st) {
    fprintf(stderr, "embed: %s failed: %s: %s\n", what, mnv_status_str(st), mnv_last_error());
    return 1;
}

/* The streaming callback: called once per token with the text it completes
 * (complete UTF-8 only; text that might begin a stop string is held back by
 * the library until it cannot). Return non-zero to stop early. */
static int on_token(void *user_data, int32_t token, const char *text, size_t len) {
    int *n_tokens = user_data;
    (*n_tokens)++;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout); /* show each token as it arrives */
    return 0;
}

static void print_info(const mnv_model *model) {
    mnv_model_info info;
    if (mnv_model_get_info(model, &info) != MNV_OK) return;
    printf("model: %s, %d layers, hidden %d, vocab %d, %.2f M parameters, %llu weight bytes\n",
           info.arch, info.n_layer, info.n_embd, info.n_vocab, (double)info.n_params / 1e6,
           (unsigned long long)info.weight_bytes);
}

/* Tokenize with BOS when the tokenizer asks for it. The first call sizes the
 * buffer: MNV_ERR_BUFFER_TOO_SMALL with *n set means "call again with n slots". */
static mnv_status tokenize(const mnv_tokenizer *tok, const char *text, int32_t **ids, size_t *n) {
    int add_bos = mnv_tokenizer_add_bos(tok);
    mnv_status st = mnv_tokenize(tok, text, strlen(text), add_bos, NULL, 0, n);
    if (st != MNV_OK && st != MNV_ERR_BUFFER_TOO_SMALL) return st;
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    if (!*ids) return MNV_ERR_NOMEM;
    return mnv_tokenize(tok, text, strlen(text), add_bos, *ids, *n, n);
}

/* Generate 32 tokens greedily from the prompt, streaming them to stdout. */
static int generate(mnv_model *model, const int32_t *prompt, size_t n_prompt) {
    mnv_session_params sp = mnv_session_params_default(); /* defaults, then override */
    sp.n_ctx = 256;
    mnv_session *session = NULL;
    mnv_status st = mnv_session_create(model, &sp, &session);
    if (st != MNV_OK) return report("mnv_session_create", st);

    static const char *const stops[] = {"The end", "\n\n"};
    int n_tokens = 0;
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = 32;
    gp.sampler.temperature = 0.0f; /* greedy: deterministic output */
    gp.stop_strings = stops;       /* generation stops before either string */
    gp.n_stop = sizeof stops / sizeof stops[0];
    gp.on_token = on_token;
    gp.user_data = &n_tokens;

    mnv_generate_result res;
    st = mnv_generate(session, prompt, n_prompt, &gp, &res);
    printf("\n");
    mnv_session_free(session); /* the session goes before the model it uses */
    if (st != MNV_OK) return report("mnv_generate", st);
    printf("[%d tokens streamed, %d generated, %.1f tok/s, stop reason %d]\n", n_tokens,
           res.n_generated, res.gen_seconds > 0 ? res.n_generated / res.gen_seconds : 0.0,
           (int)res.stop_reason);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/stories260K";
    const char *prompt_text = "Once upon a time";
    printf("libminerva %s\n", mnv_version());

    mnv_model_params mp = mnv_model_params_default(); /* defaults, then override */
    mp.n_threads = 0;                                  /* all cores */
    mnv_model *model = NULL;
    mnv_status st = mnv_model_load(dir, &mp, &model);
    if (st != MNV_OK) return report("mnv_model_load", st);
    print_info(model);

    /* The tokenizer is borrowed from the model: never free it separately. */
    const mnv_tokenizer *tok = mnv_model_tokenizer(model);
    if (!tok) {
        fprintf(stderr, "embed: %s has no tokenizer.json\n", dir);
        mnv_model_free(model);
        return 1;
    }
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    st = tokenize(tok, prompt_text, &prompt, &n_prompt);
    int rc = st != MNV_OK ? report("mnv_tokenize", st) : 0;
    if (rc == 0) {
        printf("prompt: \"%s\" = %zu tokens\n%s", prompt_text, n_prompt, prompt_text);
        rc = generate(model, prompt, n_prompt);
    }
    free(prompt);
    mnv_model_free(model);
    return rc;
}
