/* Several sessions on one model from several threads at once: the model is
 * shared read-only (minerva.h, "Thread safety"), each thread owns a session
 * with its own compute threads, and every thread's greedy output equals the
 * same generation run alone. Built under ThreadSanitizer by `make test-tsan`
 * so that a data race in loading, sessions or kernels is reported. */
#include <pthread.h>
#include <stdbool.h>

#include "minerva.h"
#include "test.h"

#define N_WORKERS 4
#define N_TOKENS 12
#define N_PROMPT 5

typedef struct {
    mnv_model *model;
    int32_t prompt[N_PROMPT];
    int32_t ids[N_TOKENS];
    char text[1024];
    size_t text_len;
    int n_ids;
    mnv_status st;
} job;

static int on_token(void *ud, int32_t token, const char *text, size_t len) {
    job *j = ud;
    if (j->n_ids < N_TOKENS) j->ids[j->n_ids++] = token;
    if (len && j->text_len + len < sizeof j->text) {
        memcpy(j->text + j->text_len, text, len);
        j->text_len += len;
    }
    return 0;
}

/* One session, one greedy generation of N_TOKENS ids from j->prompt. */
static void *run_job(void *arg) {
    job *j = arg;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = 64;
    sp.n_threads = 2;
    mnv_session *s = NULL;
    j->st = mnv_session_create(j->model, &sp, &s);
    if (j->st != MNV_OK) return NULL;
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = N_TOKENS;
    gp.sampler.temperature = 0;
    gp.ignore_eos = 1;
    gp.on_token = on_token;
    gp.user_data = j;
    j->st = mnv_generate(s, j->prompt, N_PROMPT, &gp, NULL);
    mnv_session_free(s);
    return NULL;
}

static void make_prompt(job *j, int k, int32_t n_vocab, int32_t bos) {
    j->prompt[0] = bos >= 0 ? bos : 1;
    for (int i = 1; i < N_PROMPT; i++) j->prompt[i] = (int32_t)((7 + 31 * k + 13 * i) % n_vocab);
}

static void test_model(const char *dir) {
    mnv_model_params mp = mnv_model_params_default();
    mp.n_threads = 2;
    mnv_model *m = NULL;
    if (mnv_model_load(dir, &mp, &m) != MNV_OK) {
        CHECKF(false, "cannot load %s: %s", dir, mnv_last_error());
        return;
    }
    mnv_model_info info;
    CHECK(mnv_model_get_info(m, &info) == MNV_OK);

    /* references, one at a time; two workers share each prompt */
    job ref[N_WORKERS / 2], jobs[N_WORKERS];
    memset(ref, 0, sizeof ref);
    memset(jobs, 0, sizeof jobs);
    for (int k = 0; k < N_WORKERS / 2; k++) {
        ref[k].model = m;
        make_prompt(&ref[k], k, info.n_vocab, info.bos_id);
        run_job(&ref[k]);
        CHECKF(ref[k].st == MNV_OK && ref[k].n_ids == N_TOKENS, "%s: reference %d: %s", dir, k, mnv_last_error());
    }
    /* the same generations, all at once */
    pthread_t th[N_WORKERS];
    bool started[N_WORKERS];
    for (int k = 0; k < N_WORKERS; k++) {
        jobs[k].model = m;
        make_prompt(&jobs[k], k % (N_WORKERS / 2), info.n_vocab, info.bos_id);
        started[k] = pthread_create(&th[k], NULL, run_job, &jobs[k]) == 0;
        CHECK(started[k]);
    }
    for (int k = 0; k < N_WORKERS; k++) {
        if (!started[k]) continue;
        pthread_join(th[k], NULL);
        const job *r = &ref[k % (N_WORKERS / 2)];
        CHECKF(jobs[k].st == MNV_OK, "%s: worker %d: status %d", dir, k, (int)jobs[k].st);
        CHECKF(jobs[k].n_ids == r->n_ids && memcmp(jobs[k].ids, r->ids, sizeof r->ids) == 0,
               "%s: worker %d's ids differ from the single-threaded run", dir, k);
        CHECKF(jobs[k].text_len == r->text_len && memcmp(jobs[k].text, r->text, r->text_len) == 0,
               "%s: worker %d's text differs from the single-threaded run", dir, k);
    }
    mnv_model_free(m);
}

int main(void) {
    t_seed();
    test_model("../models/stories260K");          /* with a tokenizer: text as well as ids */
    test_model("fixtures/models/tiny-llama");
    test_model("fixtures/models/tiny-qwen3-bf16");
    test_model("fixtures/models/tiny-gptoss-mxfp4"); /* quantized experts */
    return t_done();
}
