/* Fuzz target: a request body as the server reads it. The JSON nesting
 * check, the parse, the model check, every sampling field, and the chat
 * messages rendered to prompt ids (plain text, or Harmony when the
 * tokenizer has its tokens and the first byte is odd), as a job that is then
 * freed. A failure must come with a 4xx/5xx status and a message; a success
 * with a prompt of at least one id of the vocabulary.
 * The tokenizer is loaded once from $MNV_FUZZ_TOKENIZER (exit 77 without it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static mnv__server srv;
static mnv_tokenizer *tok;
static int has_harmony;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *path = getenv("MNV_FUZZ_TOKENIZER");
    if (!path || mnv_tokenizer_load(path, &tok) != MNV_OK) {
        fprintf(stderr, "fuzz_server_request: set MNV_FUZZ_TOKENIZER to a loadable tokenizer.json\n");
        exit(77);
    }
    srv.tok = tok;
    srv.n_vocab = mnv_tokenizer_n_vocab(tok);
    srv.model_id = "fuzz-model";
    srv.p.max_seq_tokens = 256;
    srv.p.max_depth = 16;
    has_harmony = mnv_chat_tokens_lookup(tok, &srv.ht) == MNV_OK;
    pthread_mutex_init(&srv.mu, NULL);
    srv_metrics_init(&srv.metrics);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    if (mnv__json_depth(text, size, srv.p.max_depth) < 0) return 0;
    cJSON *body = cJSON_ParseWithLength(text, size);
    if (!cJSON_IsObject(body)) {
        cJSON_Delete(body);
        return 0;
    }
    srv.fmt = has_harmony && size && (data[0] & 1) ? SRV_FMT_HARMONY : SRV_FMT_PLAIN;
    srv_err e = {0};
    srv_job *j = srv_job_new(&srv, SRV_CHAT, 1);
    int32_t *ids = NULL;
    size_t n = 0;
    bool ok = srv_check_model(&srv, body, &e) && srv_parse_sampling(&srv, body, j, &e) &&
              srv_chat_prompt(&srv, body, cJSON_GetObjectItemCaseSensitive(body, "messages"), j, &ids, &n, &e);
    if (ok) {
        if (n < 1 || !ids) __builtin_trap();
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= srv.n_vocab) __builtin_trap();
        if (j->gp.max_tokens < 1 || j->gp.max_tokens > srv.p.max_seq_tokens) __builtin_trap();
        /* the error object of a failure must print, too */
        cJSON_Delete(srv_error_json(&e));
    } else {
        if (e.status < 400 || e.status > 599 || !e.msg[0]) __builtin_trap();
        cJSON *o = srv_error_json(&e);
        char *t = cJSON_PrintUnformatted(o);
        if (!t) __builtin_trap();
        free(t);
        cJSON_Delete(o);
    }
    free(ids);
    srv_job_release(j);
    cJSON_Delete(body);
    return 0;
}
