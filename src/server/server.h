/* The OpenAI-compatible HTTP server over an engine (`minerva serve`).
 *
 * HTTP threads (libmicrohttpd, one per connection) parse requests and
 * submit them to the engine; the engine's own thread runs every request in
 * its batch and hands tokens back through callbacks. The server owns
 * neither the model nor the engine: the caller creates them, starts the
 * server, and frees them after mnv__server_stop. */
#ifndef MNV_SERVER_H
#define MNV_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "minerva.h"

typedef struct mnv__server mnv__server;

typedef struct {
    mnv_model *model;
    mnv_engine *engine;
    const char *model_dir;      /* where chat templates are looked for */
    const char *model_id;       /* the name /v1/models lists and requests must use */
    const char *host;           /* address to bind, "127.0.0.1" by default */
    int port;
    const char *api_key;        /* NULL: no authentication */
    const char *const *cors_origins; /* origins answered with CORS headers */
    size_t n_cors;
    int32_t max_seq_tokens;     /* the engine's context of one request */
    int32_t parallel;           /* requests the engine runs at once */
    int32_t max_queue;          /* requests waiting beyond those: more get 503 */
    size_t max_body;            /* bytes of a request body (413 beyond) */
    int max_depth;              /* nesting of a JSON body (400 beyond) */
    unsigned timeout_s;         /* an idle connection is closed after this; so is one
                                   whose request body takes longer to arrive */
    int scripted_output;        /* 1: a request's "x_scripted_output" text is the reply's
                                   first tokens (tests of the output path); 0: ignored */
} mnv__server_params;

/* Bind and start serving on threads of the server's own. MNV_ERR_IO when the
 * address cannot be bound; MNV_ERR_UNSUPPORTED when the model has no
 * tokenizer. With p->model NULL the server starts "loading": /health
 * answers 503 {"status": "loading"}, every other endpoint 503, until
 * mnv__server_ready gives it the model and the engine. */
mnv_status mnv__server_start(const mnv__server_params *p, mnv__server **out);
/* The model is loaded: serve it (its chat format is read now; a broken chat
 * template fails here, naming the file). Call once, from one thread. */
mnv_status mnv__server_ready(mnv__server *s, mnv_model *model, mnv_engine *engine, int32_t max_seq_tokens);
/* Stop accepting, cancel every running request (their clients see the
 * stream end), wait for the connections to close, free the server. */
void mnv__server_stop(mnv__server *s);
/* The port actually bound (useful with port 0). */
int mnv__server_port(const mnv__server *s);

/* The JSON nesting depth of text (objects and arrays; strings skipped), or
 * -1 when it exceeds limit (the scan stops there). */
int mnv__json_depth(const char *text, size_t len, int limit);

#endif
