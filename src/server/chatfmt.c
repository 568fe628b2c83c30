/* Chat formats of the server: a request's messages into prompt ids, and
 * the model's output back into content, reasoning and tool calls.
 *
 * gpt-oss speaks Harmony: system and developer messages become the
 * developer instructions, tools are declared in the "functions" namespace,
 * an assistant's reasoning_content goes back on the analysis channel, its
 * tool calls as commentary messages to functions.NAME, tool results as
 * messages from functions.NAME. Its output is read by the Harmony parser:
 * analysis -> reasoning_content, final (and commentary preambles) ->
 * content, messages to a tool -> tool_calls. A model without a chat format
 * gets the message texts, one per line (a base model continues them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "server/server_int.h"

mnv_status srv_formats_load(mnv__server *s) {
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(s->p.model, &info);
    if (st != MNV_OK) return st;
    s->fmt = SRV_FMT_PLAIN;
    if (info.chat_format && strcmp(info.chat_format, "harmony") == 0 &&
        mnv_chat_tokens_lookup(s->tok, &s->ht) == MNV_OK)
        s->fmt = SRV_FMT_HARMONY;
    return MNV_OK;
}

void srv_formats_free(mnv__server *s) { (void)s; }

/* ---- messages in ------------------------------------------------------------------- */

/* The text of a message's content: a string, null, or an array of text parts. */
static bool content_text(const cJSON *msg, const char *field, srv_buf *out, srv_err *e) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, field);
    if (!c || cJSON_IsNull(c)) return true;
    if (cJSON_IsString(c)) {
        srv_buf_puts(out, c->valuestring);
        return true;
    }
    if (!cJSON_IsArray(c)) return srv_err_set(e, 400, "messages", "invalid_type", "a message's %s must be a string or an array of parts", field);
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(part)) srv_buf_puts(out, part->valuestring);
        else if (cJSON_IsString(t)) srv_buf_puts(out, t->valuestring);
        else return srv_err_set(e, 400, "messages", "unsupported_content", "%s", "only text content parts are supported");
    }
    return true;
}

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool plain_prompt(mnv__server *s, const cJSON *messages, int32_t **ids, size_t *n, srv_err *e) {
    srv_buf text = {0};
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        if (text.len) srv_buf_puts(&text, "\n");
        if (!content_text(m, "content", &text, e)) {
            srv_buf_free(&text);
            return false;
        }
    }
    size_t need = 0;
    int bos = mnv_tokenizer_add_bos(s->tok);
    mnv_status st = mnv_tokenize(s->tok, text.p ? text.p : "", text.len, bos, NULL, 0, &need);
    if (need == 0) need = 1;
    *ids = malloc(need * sizeof(int32_t));
    if (*ids && text.len) st = mnv_tokenize(s->tok, text.p, text.len, bos, *ids, need, n);
    else if (*ids) st = MNV_OK, *n = 1, (*ids)[0] = mnv_tokenizer_bos(s->tok) >= 0 ? mnv_tokenizer_bos(s->tok) : 0;
    srv_buf_free(&text);
    if (!*ids || st != MNV_OK) return srv_err_set(e, 500, NULL, NULL, "tokenizing the messages failed: %s", mnv_last_error());
    if (*n == 0) (*ids)[0] = mnv_tokenizer_bos(s->tok) >= 0 ? mnv_tokenizer_bos(s->tok) : 0, *n = 1;
    return true;
}

/* The function name a tool message answers: its name, or the call its tool_call_id names. */
static const char *tool_name(const cJSON *messages, const cJSON *msg) {
    const char *name = str_field(msg, "name"), *id = str_field(msg, "tool_call_id");
    if (name || !id) return name;
    const cJSON *m, *tc;
    cJSON_ArrayForEach(m, messages) {
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
            const char *tid = str_field(tc, "id");
            if (tid && strcmp(tid, id) == 0) return str_field(cJSON_GetObjectItemCaseSensitive(tc, "function"), "name");
        }
    }
    return NULL;
}

static bool add(mnv_chat *chat, mnv_chat_role role, const char *channel, const char *recipient, const char *name,
                const char *ctype, const char *content, srv_err *e) {
    mnv_chat_message m = {0};
    m.role = role, m.channel = channel, m.recipient = recipient, m.name = name, m.content_type = ctype;
    m.content = content;
    if (mnv_chat_add_message(chat, &m) != MNV_OK)
        return srv_err_set(e, 400, "messages", "invalid_message", "%s", mnv_last_error());
    return true;
}

static bool harmony_message(mnv_chat *chat, const cJSON *messages, const cJSON *m, srv_err *e) {
    const char *role = str_field(m, "role");
    srv_buf text = {0};
    bool ok = content_text(m, "content", &text, e);
    const char *body = text.p ? text.p : "";
    char fn[256];
    if (!ok) {
    } else if (strcmp(role, "user") == 0) {
        ok = add(chat, MNV_ROLE_USER, NULL, NULL, NULL, NULL, body, e);
    } else if (strcmp(role, "assistant") == 0) {
        const char *r = str_field(m, "reasoning_content");
        if (!r) r = str_field(m, "reasoning");
        if (r && *r) ok = add(chat, MNV_ROLE_ASSISTANT, "analysis", NULL, NULL, NULL, r, e);
        const cJSON *tc;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, "function");
            const char *name = str_field(f, "name"), *args = str_field(f, "arguments");
            if (!name) {
                ok = srv_err_set(e, 400, "messages", "invalid_tool_call", "%s", "a tool call without function.name");
                break;
            }
            snprintf(fn, sizeof fn, "functions.%s", name);
            if (ok) ok = add(chat, MNV_ROLE_ASSISTANT, "commentary", fn, NULL, "<|constrain|>json", args ? args : "{}", e);
        }
        if (ok && text.len) ok = add(chat, MNV_ROLE_ASSISTANT, "final", NULL, NULL, NULL, body, e);
    } else if (strcmp(role, "tool") == 0) {
        const char *name = tool_name(messages, m);
        if (!name) ok = srv_err_set(e, 400, "messages", "invalid_tool_message", "%s", "a tool message names no tool (name or a known tool_call_id)");
        snprintf(fn, sizeof fn, "functions.%s", name ? name : "");
        if (ok) ok = add(chat, MNV_ROLE_TOOL, "commentary", "assistant", fn, NULL, body, e);
    }
    srv_buf_free(&text);
    return ok;
}

static bool harmony_tools(mnv_chat *chat, const cJSON *tools, srv_err *e) {
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const char *name = str_field(f, "name");
        if (!name) return srv_err_set(e, 400, "tools", "invalid_tool", "%s", "a tool without function.name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        char *pj = params ? cJSON_PrintUnformatted(params) : NULL;
        mnv_chat_tool tool = {name, str_field(f, "description"), pj};
        mnv_status st = mnv_chat_add_tool(chat, NULL, &tool);
        free(pj);
        if (st != MNV_OK) return srv_err_set(e, 400, "tools", "invalid_tool", "%s", mnv_last_error());
    }
    return true;
}

static bool harmony_prompt(mnv__server *s, const cJSON *body, const cJSON *messages, srv_job *j, int32_t **ids,
                           size_t *n, srv_err *e) {
    mnv_chat_params cp = mnv_chat_params_default();
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(body, "chat_template_kwargs");
    const char *effort = str_field(body, "reasoning_effort");
    if (!effort) effort = str_field(kw, "reasoning_effort");
    const cJSON *reasoning = cJSON_GetObjectItemCaseSensitive(body, "reasoning"); /* responses */
    if (!effort) effort = str_field(reasoning, "effort");
    if (effort) {
        if (strcmp(effort, "low") == 0) cp.reasoning = MNV_REASONING_LOW;
        else if (strcmp(effort, "medium") == 0) cp.reasoning = MNV_REASONING_MEDIUM;
        else if (strcmp(effort, "high") == 0) cp.reasoning = MNV_REASONING_HIGH;
        else return srv_err_set(e, 400, "reasoning_effort", "invalid_value", "reasoning_effort '%s' is not low, medium or high", effort);
    }
    srv_buf instr = {0};
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const char *role = str_field(m, "role");
        if (!role) {
            srv_buf_free(&instr);
            return srv_err_set(e, 400, "messages", "invalid_message", "%s", "a message without a role");
        }
        if (strcmp(role, "system") && strcmp(role, "developer")) continue;
        if (instr.len) srv_buf_puts(&instr, "\n\n");
        if (!content_text(m, "content", &instr, e)) {
            srv_buf_free(&instr);
            return false;
        }
    }
    cp.instructions = instr.p;
    mnv_chat *chat = NULL;
    if (mnv_chat_create(&cp, &chat) != MNV_OK) {
        srv_buf_free(&instr);
        return srv_err_set(e, 500, NULL, NULL, "%s", mnv_last_error());
    }
    srv_buf_free(&instr);
    bool ok = harmony_tools(chat, cJSON_GetObjectItemCaseSensitive(body, "tools"), e);
    cJSON_ArrayForEach(m, messages) {
        if (!ok) break;
        const char *role = str_field(m, "role");
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) continue;
        if (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "tool"))
            ok = srv_err_set(e, 400, "messages", "invalid_role", "unknown message role '%s'", role);
        else
            ok = harmony_message(chat, messages, m, e);
    }
    size_t need = 0;
    if (ok) {
        mnv_chat_render_ids(chat, s->tok, NULL, NULL, 0, &need);
        *ids = malloc(MNV_MAX(need, 1) * sizeof(int32_t));
        if (!*ids || mnv_chat_render_ids(chat, s->tok, NULL, *ids, need, n) != MNV_OK)
            ok = srv_err_set(e, 500, NULL, NULL, "rendering the conversation failed: %s", mnv_last_error());
    }
    mnv_chat_free(chat);
    j->gp.eos_ids = s->ht.stop_ids;
    j->gp.n_eos = 2;
    return ok;
}

bool srv_chat_prompt(mnv__server *s, const cJSON *body, const cJSON *messages, srv_job *j, int32_t **ids, size_t *n,
                     srv_err *e) {
    *ids = NULL;
    *n = 0;
    if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)
        return srv_err_set(e, 400, "messages", "invalid_type", "%s", "messages must be a non-empty array");
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m) || !str_field(m, "role"))
            return srv_err_set(e, 400, "messages", "invalid_message", "%s", "each message must be an object with a role");
    }
    bool ok = s->fmt == SRV_FMT_HARMONY ? harmony_prompt(s, body, messages, j, ids, n, e)
                                         : plain_prompt(s, messages, ids, n, e);
    if (!ok) {
        free(*ids);
        *ids = NULL;
    }
    return ok;
}

/* ---- output out -------------------------------------------------------------------------- */

static bool is_tool_recipient(const char *r) {
    return r && *r && strcmp(r, "all") && strcmp(r, "user") && strcmp(r, "assistant");
}

static void warn_once(srv_choice *c, const char *what) {
    if (c->warned) return;
    c->warned = true;
    fprintf(stderr, "warning: %s: %s; returned as text\n", c->job->id, what);
}

static void on_event(void *ud, const mnv_chat_event *ev) {
    srv_choice *c = ud;
    const mnv_chat_message *m = ev->msg;
    if (ev->kind == MNV_CHAT_EVENT_CONTENT) {
        if (is_tool_recipient(m->recipient)) return; /* whole at the message's end */
        bool analysis = m->channel && strcmp(m->channel, "analysis") == 0;
        srv_buf_put(analysis ? &c->reasoning : &c->content, ev->delta, ev->delta_len);
        srv_buf_put(analysis ? &c->delta_reasoning : &c->delta_content, ev->delta, ev->delta_len);
        if (!m->channel) warn_once(c, "a model message without a channel");
    } else if (ev->kind == MNV_CHAT_EVENT_MESSAGE) {
        if (m->role != MNV_ROLE_ASSISTANT) warn_once(c, "the model wrote a message of another role");
        if (!is_tool_recipient(m->recipient)) return;
        if (!c->tool_calls && !(c->tool_calls = cJSON_CreateArray())) return;
        const char *name = strncmp(m->recipient, "functions.", 10) == 0 ? m->recipient + 10 : m->recipient;
        char id[48];
        snprintf(id, sizeof id, "call_%s_%d_%d", c->job->id + 9, c->index, cJSON_GetArraySize(c->tool_calls));
        cJSON *tc = cJSON_CreateObject(), *f = cJSON_CreateObject();
        char *args = srv_utf8_clean(m->content ? m->content : "", m->content_len);
        cJSON *parsed = cJSON_Parse(args ? args : "");
        if (!parsed) fprintf(stderr, "warning: %s: tool call %s: arguments are not valid JSON\n", c->job->id, name);
        cJSON_Delete(parsed);
        cJSON_AddStringToObject(tc, "id", id);
        cJSON_AddStringToObject(tc, "type", "function");
        cJSON_AddStringToObject(f, "name", name);
        cJSON_AddStringToObject(f, "arguments", args ? args : "");
        cJSON_AddItemToObject(tc, "function", f);
        cJSON_AddItemToArray(c->tool_calls, tc);
        free(args);
    }
}

bool srv_chat_reader_init(srv_job *j, srv_choice *c) {
    if (j->fmt != SRV_FMT_HARMONY) return true;
    mnv_chat_parser_params pp = mnv_chat_parser_params_default();
    pp.on_event = on_event;
    pp.user_data = c;
    return mnv_chat_parser_create(j->srv->tok, &pp, &c->parser) == MNV_OK;
}

void srv_chat_reader_feed(srv_job *j, srv_choice *c) {
    for (; c->n_read < c->n_toks; c->n_read++) {
        const srv_tok *t = &c->toks[c->n_read];
        if (c->parser) {
            mnv_chat_parser_push(c->parser, t->id);
        } else {
            srv_buf_put(&c->content, c->text.p + c->text_read, t->text_end - c->text_read);
            srv_buf_put(&c->delta_content, c->text.p + c->text_read, t->text_end - c->text_read);
        }
        c->text_read = t->text_end;
    }
}

void srv_chat_reader_finish(srv_job *j, srv_choice *c) {
    if (c->parser) mnv_chat_parser_finish(c->parser);
    c->read_done = true;
}

void srv_chat_reader_free(srv_choice *c) {
    mnv_chat_parser_free(c->parser);
    c->parser = NULL;
}
