/* chats.c - several conversations on one model at once, as a desktop app
 * with a few chat windows (or a small server) runs them: one engine, one
 * thread per conversation.
 *
 *   chats MODEL_DIR [N]
 *
 * The engine runs its steps on a thread of its own and batches every
 * running request into each step. Each of the N (default 3) conversation
 * threads submits its prompt, which all begin with the same words (the
 * engine's prefix cache shares their K/V with a request that arrives
 * after an earlier one computed them), and waits for its answer; the
 * text streams into a per-conversation buffer from the engine's thread.
 * Prints each answer and the engine's figures; exits 0 when every request
 * finished. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minerva.h"

#define MAX_CHATS 8

typedef struct {
    mnv_engine *engine;
    const mnv_tokenizer *tok;
    const char *prompt;
    char answer[2048]; /* written by the engine's thread, read after the wait */
    size_t len;
    mnv_status status;
    mnv_request_result result;
} chat;

/* Called on the engine's thread for every generated token. */
static int on_token(void *user_data, int32_t token, const char *text, size_t len) {
    chat *c = user_data;
    (void)token;
    if (c->len + len < sizeof c->answer) {
        memcpy(c->answer + c->len, text, len);
        c->len += len;
        c->answer[c->len] = 0;
    }
    return 0; /* non-zero would end this request alone */
}

static void *conversation(void *arg) {
    chat *c = arg;
    size_t n = 0;
    int add_bos = mnv_tokenizer_add_bos(c->tok);
    c->status = mnv_tokenize(c->tok, c->prompt, strlen(c->prompt), add_bos, NULL, 0, &n);
    int32_t *ids = c->status == MNV_ERR_BUFFER_TOO_SMALL ? malloc(n * sizeof *ids) : NULL;
    if (!ids) {
        if (c->status == MNV_ERR_BUFFER_TOO_SMALL) c->status = MNV_ERR_NOMEM;
        return NULL;
    }
    c->status = mnv_tokenize(c->tok, c->prompt, strlen(c->prompt), add_bos, ids, n, &n);
    mnv_request_params rp = mnv_request_params_default();
    rp.prompt = ids;
    rp.n_prompt = n;
    rp.gen.max_tokens = 48;
    rp.gen.sampler.seed = 42;
    rp.gen.on_token = on_token;
    rp.gen.user_data = c;
    uint64_t id = 0;
    if (c->status == MNV_OK) c->status = mnv_engine_submit(c->engine, &rp, &id); /* copies the prompt */
    free(ids);
    if (c->status == MNV_OK) c->status = mnv_engine_wait(c->engine, id, &c->result);
    if (c->status != MNV_OK) fprintf(stderr, "chats: request failed: %s\n", mnv_last_error());
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: chats MODEL_DIR [N]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 3;
    if (n < 1 || n > MAX_CHATS) {
        fprintf(stderr, "chats: N must be 1 to %d\n", MAX_CHATS);
        return 2;
    }
    mnv_model *model = NULL;
    mnv_status st = mnv_model_load(argv[1], NULL, &model);
    if (st != MNV_OK) {
        fprintf(stderr, "chats: mnv_model_load failed: %s\n", mnv_last_error());
        return 1;
    }
    const mnv_tokenizer *tok = mnv_model_tokenizer(model);
    mnv_engine_params ep = mnv_engine_params_default(); /* its own step thread */
    ep.max_seqs = n;
    mnv_engine *engine = NULL;
    if (!tok || (st = mnv_engine_create(model, &ep, &engine)) != MNV_OK) {
        fprintf(stderr, "chats: %s\n", tok ? mnv_last_error() : "the model has no tokenizer");
        mnv_model_free(model);
        return 1;
    }
    static const char *topics[MAX_CHATS] = {"a cat", "the sea", "a red ball", "a big tree",
                                            "the moon", "a small dog", "a birthday", "the rain"};
    char prompts[MAX_CHATS][128];
    chat chats[MAX_CHATS];
    pthread_t threads[MAX_CHATS];
    for (int i = 0; i < n; i++) {
        snprintf(prompts[i], sizeof prompts[i], "Once upon a time, in a little town, there was a story about %s.",
                 topics[i]);
        chats[i] = (chat){.engine = engine, .tok = tok, .prompt = prompts[i]};
        pthread_create(&threads[i], NULL, conversation, &chats[i]);
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        failed += chats[i].status != MNV_OK;
        printf("[%d] %s%s\n", i, chats[i].prompt, chats[i].answer);
        printf("    %d prompt tokens (%d from the prefix cache), %d generated, first token after %.3f s\n",
               chats[i].result.gen.n_prompt, chats[i].result.n_cached, chats[i].result.gen.n_generated,
               chats[i].result.first_token_seconds);
    }
    mnv_engine_stats es;
    mnv_engine_get_stats(engine, &es);
    printf("engine: %llu steps, %llu tokens decoded, %llu prompt tokens from the prefix cache, "
           "KV peak %.1f of %.1f MiB\n",
           (unsigned long long)es.steps, (unsigned long long)es.tokens_decoded,
           (unsigned long long)es.prefix_hit_tokens, (double)es.kv_bytes_peak / 1048576.0,
           (double)es.kv_bytes_total / 1048576.0);
    mnv_engine_free(engine); /* the engine goes before the model it uses */
    mnv_model_free(model);
    return failed ? 1 : 0;
}
