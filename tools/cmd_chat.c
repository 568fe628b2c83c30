/* cmd_chat.c - `minerva chat`: a multi-turn conversation with a gpt-oss
 * model in the Harmony format, one user message per line of stdin.
 *
 * Each turn renders the whole conversation with the harmony API. When the
 * new rendering begins with every token the session already holds (the
 * previous prompt and reply), only the new suffix is evaluated; otherwise
 * (e.g. the reasoning of an answered turn was dropped from the history) the
 * session starts over. The reply is read with the harmony parser as it is
 * generated: reasoning (the analysis channel) is shown apart from the
 * answer, tool calls are printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_common.h"

#define CMD "chat"

typedef struct {
    const char *model_dir, *reasoning, *system, *developer, *date, *device;
    int n_threads, n_ctx, show_reasoning, hide_reasoning, stats, seed_given;
    cli_kv_flags kv;
    mnv_generate_params gp;
} chat_opts;

/* Everything one conversation needs. */
typedef struct {
    chat_opts *o;
    mnv_model *model;
    const mnv_tokenizer *tok;
    mnv_session *sess;
    mnv_chat *chat;
    mnv_chat_parser *parser;
    mnv_chat_tokens ht;
    int32_t n_ctx;
    int32_t *held;      /* the tokens the session holds, in order */
    size_t n_held, cap_held;
    int tty_out, tty_in, show_reasoning;
    int last_char;      /* last byte printed this turn, -1 if none */
    int styled;         /* a dim span is open on the terminal */
    int foreign;        /* the model began a message of another author: stop */
    int failed;         /* some turn failed */
} chat_state;

static const char USAGE[] =
    "Usage: minerva chat -m DIR [OPTIONS]\n\n"
    "Chat with a gpt-oss model in the Harmony format. Reads one user message per\n"
    "line from stdin (a terminal or a pipe); '/reset' starts a new conversation,\n"
    "'/exit' or the end of input quits. Replies stream to stdout. The model's\n"
    "reasoning (the analysis channel) is shown dimmed on a terminal, after\n"
    "'[reasoning] ' in a pipe; tool calls are printed, not run.\n\n"
    "Options:\n"
    "  -m, --model DIR        model directory; its tokenizer must have the harmony\n"
    "                         tokens (<|start|>, <|channel|>, <|message|>, ...)\n"
    "      --reasoning LEVEL  reasoning effort: low, medium or high (default medium)\n"
    "      --system TEXT      the model identity line of the system message (default\n"
    "                         'You are ChatGPT, a large language model trained by OpenAI.')\n"
    "      --developer TEXT   developer instructions (what other models call the\n"
    "                         system prompt)\n"
    "      --date TEXT        the system message's current date (default: today, as\n"
    "                         YYYY-MM-DD; '' leaves the line out)\n"
    "  -n, --n-predict N      most tokens per reply, reasoning included (default 2048)\n"
    "      --temp T           temperature, 0 = greedy (default 0.8)\n"
    "      --seed S           sampling seed (default: from the clock)\n"
    "      --show-reasoning   show the reasoning (default)\n"
    "      --hide-reasoning   do not show the reasoning\n"
    "  -t, --threads N        CPU threads, 0 = all cores (default 0)\n"
    "  -c, --ctx N            context length (default: the model's, at most 8192)\n"
    "      --kv-type T        KV cache element type: f32, f16, bf16, q8 or q4 (default f32)\n"
    "      --kv-type-k T      the K cache's type alone; --kv-type-v T: the V cache's\n"
    "      --kv-rotate R      Hadamard rotation of the K/V heads: auto (q4 sides), on, off\n"
    "      --device D         where to compute: cpu, cuda or cuda:N (default cpu)\n"
    "      --stats            tokens and speed of each turn on stderr\n"
    "  -h, --help             show this help\n";

static int parse_args(chat_opts *o, int argc, char **argv, int *rc) {
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &o->model_dir, 0, 0, NULL},
        {NULL, "--reasoning", CLI_STR, &o->reasoning, 0, 0, NULL},
        {NULL, "--system", CLI_STR, &o->system, 0, 0, NULL},
        {NULL, "--developer", CLI_STR, &o->developer, 0, 0, NULL},
        {NULL, "--date", CLI_STR, &o->date, 0, 0, NULL},
        {"-n", "--n-predict", CLI_INT, &o->gp.max_tokens, 1, 1 << 30, NULL},
        {NULL, "--temp", CLI_FLOAT, &o->gp.sampler.temperature, 0, 1e6, NULL},
        {NULL, "--seed", CLI_U64, &o->gp.sampler.seed, 0, 0, &o->seed_given},
        {NULL, "--show-reasoning", CLI_FLAG, &o->show_reasoning, 0, 0, NULL},
        {NULL, "--hide-reasoning", CLI_FLAG, &o->hide_reasoning, 0, 0, NULL},
        {"-t", "--threads", CLI_INT, &o->n_threads, 0, 4096, NULL},
        {"-c", "--ctx", CLI_INT, &o->n_ctx, 0, 1 << 30, NULL},
        {NULL, "--kv-type", CLI_STR, &o->kv.all, 0, 0, NULL},
        {NULL, "--kv-type-k", CLI_STR, &o->kv.k, 0, 0, NULL},
        {NULL, "--kv-type-v", CLI_STR, &o->kv.v, 0, 0, NULL},
        {NULL, "--kv-rotate", CLI_STR, &o->kv.rotate, 0, 0, NULL},
        {NULL, "--stats", CLI_FLAG, &o->stats, 0, 0, NULL},
        {NULL, "--device", CLI_STR, &o->device, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], NULL};
    if (cli_parse(&spec, argc, argv, rc)) return 1;
    if (o->show_reasoning && o->hide_reasoning) {
        *rc = cli_usage(CMD, "give either --show-reasoning or --hide-reasoning, not both");
        return 1;
    }
    return 0;
}

static int parse_effort(const char *s, mnv_reasoning_effort *out) {
    if (!s || strcmp(s, "medium") == 0) *out = MNV_REASONING_MEDIUM;
    else if (strcmp(s, "low") == 0) *out = MNV_REASONING_LOW;
    else if (strcmp(s, "high") == 0) *out = MNV_REASONING_HIGH;
    else return cli_usage(CMD, "--reasoning: expected low, medium or high, got '%s'", s);
    return 0;
}

/* ---- output ----------------------------------------------------------------------------- */

static void out_text(chat_state *c, const char *s, size_t n) {
    if (!n) return;
    fwrite(s, 1, n, stdout);
    c->last_char = (unsigned char)s[n - 1];
}

static void out_str(chat_state *c, const char *s) { out_text(c, s, strlen(s)); }

/* Start a line for a labelled block unless one is already at its start. */
static void out_newline_if_needed(chat_state *c) {
    if (c->last_char >= 0 && c->last_char != '\n') out_str(c, "\n");
}

static int is_reasoning(const mnv_chat_event *ev) {
    return !ev->is_tool_call && ev->msg->channel && strcmp(ev->msg->channel, "analysis") == 0;
}

static void on_header(chat_state *c, const mnv_chat_event *ev) {
    const mnv_chat_message *m = ev->msg;
    if (m->role != MNV_ROLE_ASSISTANT) { /* the model is writing someone else's turn */
        c->foreign = 1;
        return;
    }
    if (ev->is_tool_call) return; /* printed whole at its end */
    if (is_reasoning(ev)) {
        if (!c->show_reasoning) return;
        out_newline_if_needed(c);
        if (c->tty_out) {
            fputs("\033[2m", stdout);
            c->styled = 1;
        } else {
            out_str(c, "[reasoning] ");
        }
    } else if (m->channel && strcmp(m->channel, "commentary") == 0) {
        out_newline_if_needed(c);
        out_str(c, "[commentary] ");
    } else {
        out_newline_if_needed(c);
    }
}

static void on_message_end(chat_state *c, const mnv_chat_event *ev) {
    const mnv_chat_message *m = ev->msg;
    if (m->role != MNV_ROLE_ASSISTANT) return;
    if (ev->is_tool_call) {
        out_newline_if_needed(c);
        out_str(c, "[tool call] ");
        out_str(c, m->recipient);
        if (m->content_type) {
            out_str(c, " ");
            out_str(c, m->content_type);
        }
        out_str(c, ": ");
        out_text(c, m->content, m->content_len);
        out_str(c, "\n");
        return;
    }
    if (c->styled) {
        fputs("\033[0m", stdout);
        c->styled = 0;
    }
    if (is_reasoning(ev) && !c->show_reasoning) return;
    out_newline_if_needed(c);
}

static void on_event(void *user_data, const mnv_chat_event *ev) {
    chat_state *c = user_data;
    switch (ev->kind) {
    case MNV_CHAT_EVENT_HEADER: on_header(c, ev); break;
    case MNV_CHAT_EVENT_CONTENT:
        if (ev->msg->role != MNV_ROLE_ASSISTANT || ev->is_tool_call) break;
        if (is_reasoning(ev) && !c->show_reasoning) break;
        out_text(c, ev->delta, ev->delta_len);
        break;
    case MNV_CHAT_EVENT_MESSAGE: on_message_end(c, ev); break;
    }
    fflush(stdout);
}

/* ---- one turn ------------------------------------------------------------------------------ */

static int held_push(chat_state *c, int32_t id) {
    if (c->n_held == c->cap_held) {
        size_t cap = c->cap_held ? c->cap_held * 2 : 1024;
        int32_t *v = realloc(c->held, cap * sizeof *v);
        if (!v) return -1;
        c->held = v;
        c->cap_held = cap;
    }
    c->held[c->n_held++] = id;
    return 0;
}

static int on_token(void *user_data, int32_t token, const char *text, size_t len) {
    chat_state *c = user_data;
    if (held_push(c, token) != 0) return 1;
    if (mnv_chat_parser_push(c->parser, token) != MNV_OK) return 1;
    return c->foreign || mnv_chat_parser_stopped(c->parser);
}

/* The rendered conversation, as a heap array. */
static mnv_status render(chat_state *c, int32_t **ids, size_t *n) {
    size_t need = 0;
    *ids = NULL;
    mnv_status st = mnv_chat_render_ids(c->chat, c->tok, NULL, NULL, 0, &need);
    if (st != MNV_OK && st != MNV_ERR_BUFFER_TOO_SMALL) return st;
    if (!(*ids = malloc((need ? need : 1) * sizeof **ids))) return MNV_ERR_NOMEM;
    st = mnv_chat_render_ids(c->chat, c->tok, NULL, *ids, need, n);
    if (st != MNV_OK) {
        free(*ids);
        *ids = NULL;
    }
    return st;
}

/* How many leading tokens of ids the session holds already: the common
 * prefix of what it holds and the new rendering (0: start over). */
static size_t reusable(chat_state *c, const int32_t *ids, size_t n) {
    size_t h = c->n_held, p = 0;
    if (h == 0 || (int32_t)h != mnv_session_n_past(c->sess)) return 0;
    while (p < h && p + 1 < n && c->held[p] == ids[p]) p++;
    return p;
}

/* Append the assistant messages the parser read to the conversation. */
static mnv_status keep_reply(chat_state *c) {
    for (size_t i = 0; i < mnv_chat_parser_n_messages(c->parser); i++) {
        mnv_chat_message m;
        mnv_status st = mnv_chat_parser_message(c->parser, i, &m, NULL);
        if (st == MNV_OK && m.role == MNV_ROLE_ASSISTANT) st = mnv_chat_add_message(c->chat, &m);
        if (st != MNV_OK) return st;
    }
    return MNV_OK;
}

static void print_turn_stats(const chat_state *c, size_t reused, const mnv_generate_result *r) {
    double gt = r->gen_seconds;
    fprintf(stderr, "[prompt %d tokens (%zu reused) in %.2f s; reply %d tokens, %.1f tok/s; context %zu/%d]\n",
            r->n_prompt, reused, r->prompt_seconds, r->n_generated, gt > 0 ? r->n_generated / gt : 0.0,
            c->n_held, c->n_ctx);
}

/* Generate the reply to the conversation as it stands. *reported is set
 * when the failure was already explained to the user. */
static mnv_status reply(chat_state *c, int *reported) {
    int32_t *ids = NULL;
    size_t n = 0;
    mnv_status st = render(c, &ids, &n);
    if (st != MNV_OK) return st;
    if (n + 1 >= (size_t)c->n_ctx) {
        free(ids);
        cli_error(CMD, "the conversation (%zu tokens) fills the context (%d); /reset starts over", n,
                  c->n_ctx);
        *reported = 1;
        return MNV_ERR_RANGE;
    }
    size_t reuse = reusable(c, ids, n);
    if (!reuse) mnv_session_reset(c->sess);
    else if ((st = mnv_session_truncate(c->sess, (int32_t)reuse)) != MNV_OK) {
        free(ids);
        return st;
    }
    c->n_held = reuse;
    for (size_t i = reuse; i < n; i++) held_push(c, ids[i]);
    mnv_chat_parser_reset(c->parser);
    c->last_char = -1;
    c->foreign = 0;
    mnv_generate_params gp = c->o->gp;
    gp.eos_ids = c->ht.stop_ids;
    gp.n_eos = 2;
    gp.on_token = on_token;
    gp.user_data = c;
    if ((size_t)gp.max_tokens > (size_t)c->n_ctx - n) gp.max_tokens = (int32_t)((size_t)c->n_ctx - n);
    mnv_generate_result res;
    memset(&res, 0, sizeof res);
    st = mnv_generate(c->sess, ids + reuse, n - reuse, &gp, &res);
    free(ids);
    if (st == MNV_OK) st = mnv_chat_parser_finish(c->parser);
    if (c->styled) fputs("\033[0m", stdout);
    c->styled = 0;
    out_newline_if_needed(c);
    fflush(stdout);
    /* the session holds every token but the last one sampled */
    int32_t past = mnv_session_n_past(c->sess);
    c->n_held = past >= 0 && (size_t)past <= c->n_held ? (size_t)past : 0;
    if (st == MNV_OK) st = keep_reply(c);
    if (st == MNV_OK && c->o->stats) print_turn_stats(c, reuse, &res);
    return st;
}

static void new_conversation(chat_state *c) {
    mnv_chat_truncate(c->chat, 0);
    mnv_session_reset(c->sess);
    c->n_held = 0;
}

static int user_turn(chat_state *c, const char *line) {
    size_t before = mnv_chat_n_messages(c->chat);
    mnv_chat_message m = {0};
    m.role = MNV_ROLE_USER;
    m.content = line;
    int reported = 0;
    mnv_status st = mnv_chat_add_message(c->chat, &m);
    if (st == MNV_OK) st = reply(c, &reported);
    if (st == MNV_OK) return 0;
    if (!reported) cli_lib_error(CMD, st, "the turn failed");
    mnv_chat_truncate(c->chat, before); /* forget the failed turn */
    mnv_session_reset(c->sess);
    c->n_held = 0;
    c->failed = 1;
    return st == MNV_ERR_NOMEM ? -1 : 0;
}

static void chomp(char *s, ssize_t *n) {
    while (*n > 0 && (s[*n - 1] == '\n' || s[*n - 1] == '\r')) s[--*n] = 0;
}

static int loop(chat_state *c) {
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (c->tty_in) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        chomp(line, &n);
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            new_conversation(c);
            if (c->tty_in) fputs("[new conversation]\n", stdout);
            continue;
        }
        if (n == 0) continue;
        if (user_turn(c, line) < 0) break;
    }
    free(line);
    return c->failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

/* ---- setup -------------------------------------------------------------------------------- */

static int make_chat(chat_state *c, char *date_buf, size_t date_cap) {
    chat_opts *o = c->o;
    mnv_chat_params cp = mnv_chat_params_default();
    int rc = parse_effort(o->reasoning, &cp.reasoning);
    if (rc) return rc;
    if (o->system) cp.model_identity = o->system;
    cp.instructions = o->developer;
    if (o->date) {
        cp.current_date = o->date[0] ? o->date : NULL;
    } else {
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm) && strftime(date_buf, date_cap, "%Y-%m-%d", &tm))
            cp.current_date = date_buf;
    }
    mnv_status st = mnv_chat_create(&cp, &c->chat);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create the conversation");
    mnv_chat_parser_params pp = mnv_chat_parser_params_default();
    pp.on_event = on_event;
    pp.user_data = c;
    st = mnv_chat_parser_create(c->tok, &pp, &c->parser);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create the reply parser");
    return 0;
}

static int make_session(chat_state *c) {
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(c->model, &info);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot read model info");
    int32_t n_ctx = c->o->n_ctx;
    if (n_ctx == 0) n_ctx = info.n_ctx_train > 0 && info.n_ctx_train < 8192 ? info.n_ctx_train : 8192;
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = n_ctx;
    sp.n_threads = c->o->n_threads;
    if (cli_kv_types(CMD, &c->o->kv, &sp.kv_type_k, &sp.kv_type_v) ||
        cli_kv_rotate(CMD, &c->o->kv, &sp.kv_rotate))
        return CLI_EXIT_USAGE;
    sp.device = c->o->device;
    st = mnv_session_create(c->model, &sp, &c->sess);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot create a session");
    if (cli_load_weights(CMD, c->sess, NULL)) return CLI_EXIT_FAIL;
    mnv_session_stats ss;
    c->n_ctx = mnv_session_get_stats(c->sess, &ss) == MNV_OK && ss.n_ctx > 0 ? ss.n_ctx : n_ctx;
    return 0;
}

static int run(chat_opts *o) {
    chat_state c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.tty_out = isatty(STDOUT_FILENO);
    c.tty_in = isatty(STDIN_FILENO);
    c.show_reasoning = !o->hide_reasoning;
    char date[32];
    int rc = cli_load_model(CMD, o->model_dir, o->n_threads, &c.model);
    if (rc == 0 && !(c.tok = mnv_model_tokenizer(c.model)))
        rc = cli_error(CMD, "the model has no tokenizer.json");
    if (rc == 0) {
        mnv_status st = mnv_chat_tokens_lookup(c.tok, &c.ht);
        if (st != MNV_OK) rc = cli_lib_error(CMD, st, "this model cannot chat in the Harmony format");
    }
    if (rc == 0) rc = make_chat(&c, date, sizeof date);
    if (rc == 0) rc = make_session(&c);
    if (rc == 0) rc = loop(&c);
    free(c.held);
    mnv_chat_parser_free(c.parser);
    mnv_chat_free(c.chat);
    mnv_session_free(c.sess);
    mnv_model_free(c.model);
    return rc;
}

int cmd_chat(int argc, char **argv) {
    chat_opts o;
    memset(&o, 0, sizeof o);
    o.gp = mnv_generate_params_default();
    o.gp.sampler = mnv_sampler_params_default();
    o.gp.max_tokens = 2048;
    int rc = 0;
    if (parse_args(&o, argc, argv, &rc)) return rc;
    if (!o.seed_given) o.gp.sampler.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    if (o.stats) fprintf(stderr, "seed: %llu\n", (unsigned long long)o.gp.sampler.seed);
    return run(&o);
}
