/* cmd_serve.c - `minerva serve`: the OpenAI-compatible HTTP server.
 *
 * Loads the model, creates one engine (its step thread runs every request
 * in one batch) and serves it over HTTP until SIGINT or SIGTERM; then it
 * cancels what runs, closes the connections and frees everything. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"

#define CMD "serve"

#ifdef MNV_HAVE_SERVER
#include "server.h"

typedef struct {
    const char *model_dir, *host, *api_key, *api_key_file, *alias;
    int port, parallel, max_queue, max_body_kb, timeout_s, max_depth, scripted;
    cli_strv cors;
    cli_run_flags run;
} serve_opts;

static const char USAGE_HEAD[] =
    "Usage: minerva serve [-m DIR] [OPTIONS]\n\n"
    "Serve the model over HTTP with OpenAI's API: point any OpenAI client's base URL\n"
    "at http://HOST:PORT/v1. Endpoints: GET /v1/models, POST /v1/completions,\n"
    "POST /v1/chat/completions, POST /v1/responses (stateless), GET /health,\n"
    "GET /metrics (Prometheus), POST /tokenize, POST /detokenize. Requests run\n"
    "together in one batch (continuous batching, shared prompt prefixes). One line\n"
    "per request goes to stderr. While the model loads, /health answers 503\n"
    "{\"status\": \"loading\"}. SIGINT or SIGTERM cancels what runs and stops (while\n"
    "the model loads: at once).\n\n"
    "Options:\n"
    "  -m, --model DIR         model directory (default: the bundled stories260K)\n"
    "      --host ADDR         address to listen on (default 127.0.0.1; 0.0.0.0: all)\n"
    "      --port N            port (default 8080; 0: any free port, printed)\n"
    "      --api-key KEY       require 'Authorization: Bearer KEY' (not for /health)\n"
    "      --api-key-file F    the key from the first line of F\n"
    "      --alias NAME        the model's name in the API (default: the directory's name)\n"
    "      --parallel N        requests generating at once (default 8); more wait\n"
    "      --max-queue N       requests waiting beyond those; more get 503 (default 256)\n"
    "      --cors-origin O     answer browser requests from origin O (repeatable; '*': any)\n"
    "      --max-body-kb N     largest request body in KiB (default 8192)\n"
    "      --max-json-depth N  deepest nesting of a JSON body (default 64)\n"
    "      --timeout S         close a connection idle for S seconds, or whose request\n"
    "                          body takes longer to arrive (default 600)\n"
    "      --test-scripted-output  for tests: a request's \"x_scripted_output\" text is\n"
    "                          the start of its reply (the model's output made known)\n";

static int parse_args(serve_opts *o, int argc, char **argv, int *rc) {
    enum { N_OWN = 13 };
    cli_opt opts[N_OWN + CLI_RUN_N_OPTS] = {
        {"-m", "--model", CLI_STR, &o->model_dir, 0, 0, NULL},
        {NULL, "--host", CLI_STR, &o->host, 0, 0, NULL},
        {NULL, "--port", CLI_INT, &o->port, 0, 65535, NULL},
        {NULL, "--api-key", CLI_STR, &o->api_key, 0, 0, NULL},
        {NULL, "--api-key-file", CLI_STR, &o->api_key_file, 0, 0, NULL},
        {NULL, "--alias", CLI_STR, &o->alias, 0, 0, NULL},
        {NULL, "--parallel", CLI_INT, &o->parallel, 1, 1024, NULL},
        {NULL, "--max-queue", CLI_INT, &o->max_queue, 0, 1 << 20, NULL},
        {NULL, "--cors-origin", CLI_MULTI, &o->cors, 0, 0, NULL},
        {NULL, "--max-body-kb", CLI_INT, &o->max_body_kb, 1, 1 << 20, NULL},
        {NULL, "--timeout", CLI_INT, &o->timeout_s, 1, 1 << 20, NULL},
        {NULL, "--max-json-depth", CLI_INT, &o->max_depth, 1, 1000, NULL},
        {NULL, "--test-scripted-output", CLI_FLAG, &o->scripted, 0, 0, NULL},
    };
    cli_run_opts(&o->run, opts + N_OWN);
    char usage[4096];
    snprintf(usage, sizeof usage, "%s", USAGE_HEAD);
    cli_run_usage(usage + strlen(usage), sizeof usage - strlen(usage), "context of one request");
    cli_spec spec = {CMD, usage, opts, N_OWN + CLI_RUN_N_OPTS, NULL};
    if (cli_parse(&spec, argc, argv, rc)) return 1;
    if (o->api_key && o->api_key_file) {
        *rc = cli_usage(CMD, "--api-key and --api-key-file exclude each other");
        return 1;
    }
    return 0;
}

/* The key of --api-key-file: its first line, without the line end. */
static int read_key(const char *path, char **key) {
    size_t len = 0;
    if (cli_read_file(CMD, path, key, &len) != 0) return CLI_EXIT_FAIL;
    (*key)[strcspn(*key, "\r\n")] = 0;
    if (!**key) return cli_error(CMD, "'%s': the key is empty", path);
    return 0;
}

static const char *base_name(const char *dir, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", dir);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

/* Load the model and create its engine; the server answers "loading" meanwhile. */
static int load(serve_opts *o, int32_t kv_k, int32_t kv_v, mnv_model **model, mnv_engine **engine,
                mnv_engine_params *ep) {
    if (cli_load_model(CMD, o->model_dir, o->run.n_threads, model) != 0) return CLI_EXIT_FAIL;
    mnv_model_info info;
    mnv_model_get_info(*model, &info);
    *ep = mnv_engine_params_default();
    ep->n_threads = o->run.n_threads;
    ep->kv_type_k = kv_k;
    ep->kv_type_v = kv_v;
    cli_kv_rotate(CMD, &o->run.kv, &ep->kv_rotate); /* checked before loading */
    ep->device = o->run.device;
    ep->max_seqs = o->parallel;
    int32_t train = info.n_ctx_train > 0 && info.n_ctx_train < 4096 ? info.n_ctx_train : 4096;
    ep->max_seq_tokens = o->run.n_ctx > 0 ? o->run.n_ctx : train;
    ep->exact_quant = o->run.exact_quant;
    ep->deterministic = o->run.deterministic;
    mnv_status st = mnv_engine_create(*model, ep, engine);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create the engine");
    if (cli_load_weights(CMD, NULL, *engine)) return CLI_EXIT_FAIL;
    fprintf(stderr, "minerva serve: model %s (%s), %d parallel, context %d: ready\n", o->model_dir, info.arch,
            o->parallel, ep->max_seq_tokens);
    return 0;
}

/* SIGINT and SIGTERM come to one thread (every other thread blocks them).
 * While the model loads, a signal ends the process at once (status 0, a log
 * line): the load itself cannot be interrupted, and nothing is running yet
 * that needs stopping (every request answers 503 "loading"). Once loaded, the
 * signal is handed to the main thread, which stops the server in order. */
typedef struct {
    sigset_t sigs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool loaded;
    int sig; /* received once loaded; 0 while none */
} sig_watch;

static const char *sig_name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

static void *watch_signals(void *arg) {
    sig_watch *w = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&w->sigs, &sig) != 0) continue;
        pthread_mutex_lock(&w->mu);
        if (!w->loaded) {
            fprintf(stderr, "minerva serve: %s while loading the model: stopping\n", sig_name(sig));
            _exit(0);
        }
        w->sig = sig;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        return NULL;
    }
}

static int serve(serve_opts *o) {
    char *key = NULL, name[1024], def[4096];
    if (o->api_key_file && read_key(o->api_key_file, &key) != 0) return CLI_EXIT_FAIL;
    int32_t kv_k = 0, kv_v = 0, rot = 0;
    if (cli_kv_types(CMD, &o->run.kv, &kv_k, &kv_v) || cli_kv_rotate(CMD, &o->run.kv, &rot)) {
        free(key);
        return CLI_EXIT_USAGE;
    }
    if (!o->model_dir) {
        if (cli_default_model_dir(CMD, def, sizeof def) != 0) {
            free(key);
            return CLI_EXIT_FAIL;
        }
        o->model_dir = def;
    }
    /* every thread the server starts inherits this mask: the signals come to watch_signals */
    sig_watch w = {.loaded = false};
    sigemptyset(&w.sigs);
    sigaddset(&w.sigs, SIGINT);
    sigaddset(&w.sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &w.sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    mnv__server_params sp = {0};
    sp.model_dir = o->model_dir;
    sp.model_id = o->alias ? o->alias : base_name(o->model_dir, name, sizeof name);
    sp.host = o->host;
    sp.port = o->port;
    sp.api_key = key ? key : o->api_key;
    sp.cors_origins = o->cors.items;
    sp.n_cors = o->cors.n;
    sp.parallel = o->parallel;
    sp.max_queue = o->max_queue;
    sp.max_body = (size_t)o->max_body_kb * 1024;
    sp.max_depth = o->max_depth;
    sp.timeout_s = (unsigned)o->timeout_s;
    sp.scripted_output = o->scripted;
    mnv__server *srv = NULL;
    mnv_status st = mnv__server_start(&sp, &srv);
    free(key); /* the server keeps its copy */
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot start the server");
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_signals, &w) != 0) {
        mnv__server_stop(srv);
        return cli_error(CMD, "cannot start the signal thread");
    }
    fprintf(stderr, "minerva serve: '%s' on http://%s:%d (loading the model)\n", sp.model_id,
            o->host ? o->host : "127.0.0.1", mnv__server_port(srv));
    mnv_model *model = NULL;
    mnv_engine *engine = NULL;
    mnv_engine_params ep;
    int rc = load(o, kv_k, kv_v, &model, &engine, &ep);
    if (rc == 0 && (st = mnv__server_ready(srv, model, engine, ep.max_seq_tokens)) != MNV_OK)
        rc = cli_lib_error(CMD, st, "cannot serve '%s'", o->model_dir);
    pthread_mutex_lock(&w.mu);
    w.loaded = true; /* from here a signal stops the server in order */
    while (rc == 0 && !w.sig) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (rc == 0) {
        fprintf(stderr, "minerva serve: %s: cancelling running requests and stopping\n", sig_name(w.sig));
        pthread_join(watcher, NULL);
    } else {
        pthread_cancel(watcher); /* in sigwait, a cancellation point */
        pthread_join(watcher, NULL);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    mnv__server_stop(srv);
    mnv_engine_free(engine);
    mnv_model_free(model);
    return rc;
}

int cmd_serve(int argc, char **argv) {
    serve_opts o = {0};
    o.port = 8080;
    o.parallel = 8;
    o.max_queue = 256;
    o.max_body_kb = 8192;
    o.timeout_s = 600;
    o.max_depth = 64;
    int rc = 0;
    if (parse_args(&o, argc, argv, &rc) == 0) rc = serve(&o);
    cli_strv_free(&o.cors);
    return rc;
}

#else

int cmd_serve(int argc, char **argv) {
    (void)argc, (void)argv;
    return cli_error(CMD, "this build has no server: libmicrohttpd was not found when it was configured "
                          "(install libmicrohttpd-dev, or run scripts/bootstrap.sh, and configure again)");
}

#endif
