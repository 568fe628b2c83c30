/* cancel.c - stopping a generation from another thread, as a desktop app's
 * "Stop" button does.
 *
 *   cancel MODEL_DIR [AFTER]
 *
 * The main thread generates; a second thread plays the user interface and
 * calls mnv_session_cancel once AFTER (default 10) tokens have streamed.
 * The token callback waits until that thread has cancelled, so the count is
 * exact: mnv_generate returns MNV_ERR_CANCELLED before the next token.
 * Prints "cancelled after N tokens" and exits 0 on that outcome. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "minerva.h"

typedef struct {
    mnv_session *session;
    int after, tokens;
    int asked, cancelled; /* guarded by lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
} ui_state;

/* The "user interface" thread: waits to be asked, then cancels. */
static void *ui_thread(void *arg) {
    ui_state *ui = arg;
    pthread_mutex_lock(&ui->lock);
    while (!ui->asked) pthread_cond_wait(&ui->cond, &ui->lock);
    mnv_session_cancel(ui->session); /* callable from any thread */
    ui->cancelled = 1;
    pthread_cond_broadcast(&ui->cond);
    pthread_mutex_unlock(&ui->lock);
    return NULL;
}

static int on_token(void *user_data, int32_t token, const char *text, size_t len) {
    ui_state *ui = user_data;
    (void)token;
    fwrite(text, 1, len, stdout);
    if (++ui->tokens == ui->after) {
        pthread_mutex_lock(&ui->lock);
        ui->asked = 1;
        pthread_cond_broadcast(&ui->cond);
        while (!ui->cancelled) pthread_cond_wait(&ui->cond, &ui->lock);
        pthread_mutex_unlock(&ui->lock);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: cancel MODEL_DIR [AFTER]\n");
        return 2;
    }
    ui_state ui = {.after = argc > 2 ? atoi(argv[2]) : 10};
    pthread_mutex_init(&ui.lock, NULL);
    pthread_cond_init(&ui.cond, NULL);
    mnv_model *model = NULL;
    mnv_status st = mnv_model_load(argv[1], NULL, &model);
    if (st == MNV_OK) st = mnv_session_create(model, NULL, &ui.session);
    if (st != MNV_OK) {
        char msg[512];
        mnv_last_error_copy(msg, sizeof msg);
        fprintf(stderr, "cancel: %s: %s\n", mnv_status_str(st), msg);
        mnv_model_free(model);
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, ui_thread, &ui);
    int32_t bos = mnv_tokenizer_bos(mnv_model_tokenizer(model));
    mnv_generate_params gp = mnv_generate_params_default();
    gp.max_tokens = 400;
    gp.sampler.temperature = 0.0f;
    gp.on_token = on_token;
    gp.user_data = &ui;
    mnv_generate_result res;
    st = mnv_generate(ui.session, &bos, 1, &gp, &res);
    if (ui.tokens < ui.after) { /* ended before the request: release the ui thread */
        pthread_mutex_lock(&ui.lock);
        ui.asked = 1;
        pthread_cond_broadcast(&ui.cond);
        pthread_mutex_unlock(&ui.lock);
    }
    pthread_join(th, NULL);
    printf("\n");
    int ok = st == MNV_ERR_CANCELLED && ui.tokens == ui.after;
    if (ok) printf("cancelled after %d tokens: %s\n", ui.tokens, mnv_last_error());
    else fprintf(stderr, "cancel: expected a cancellation after %d tokens, got %s after %d\n", ui.after,
                 mnv_status_str(st), ui.tokens);
    mnv_session_free(ui.session);
    mnv_model_free(model);
    return ok ? 0 : 1;
}
