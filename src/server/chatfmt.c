/* Chat formats of the server: a request's messages into prompt ids, and
 * the model's output back into content, reasoning and tool calls.
 *
 * gpt-oss speaks Harmony: system and developer messages become the
 * developer instructions, tools are declared in the "functions" namespace,
 * an assistant's reasoning_content goes back on the analysis channel, its
 * tool calls as commentary messages to functions.NAME, tool results as
 * messages from functions.NAME. Its output is read by the Harmony parser:
 * analysis -> reasoning_content, final (and commentary preambles) ->
 * content, messages to a tool -> tool_calls. Other models render their chat
 * template (chat/chat_template.h); their output is split into <think>
 * reasoning, content and <tool_call> tool calls (chat/tool_calls.h), while
 * streaming too. A model without either gets the message texts, one per
 * line (a base model continues them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_template.h"
#include "chat/tool_calls.h"
#include "core/core.h"
#include "server/server_int.h"

mnv_status srv_formats_load(mnv__server *s) {
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(s->p.model, &info);
    if (st != MNV_OK) return st;
    s->fmt = SRV_FMT_PLAIN;
    if (info.chat_format && strcmp(info.chat_format, "harmony") == 0 &&
        mnv_chat_tokens_lookup(s->tok, &s->ht) == MNV_OK) {
        s->fmt = SRV_FMT_HARMONY;
        return MNV_OK;
    }
    if (!s->p.model_dir) return MNV_OK;
    if ((st = mnv__chat_template_load(s->p.model_dir, &s->tmpl)) != MNV_OK) return st;
    if (s->tmpl) s->fmt = SRV_FMT_TEMPLATE;
    return MNV_OK;
}

void srv_formats_free(mnv__server *s) {
    mnv__chat_template_free(s->tmpl);
    s->tmpl = NULL;
}

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

/* The chat template's rendering of messages (with the body's tools and
 * chat_template_kwargs), tokenized with its special tokens recognised. */
static bool template_prompt(mnv__server *s, const cJSON *body, const cJSON *messages, srv_job *j, int32_t **ids,
                            size_t *n, srv_err *e) {
    cJSON *req = cJSON_CreateObject();
    if (!req) return srv_err_set(e, 500, NULL, NULL, "out of memory");
    cJSON_AddItemReferenceToObject(req, "messages", (cJSON *)messages);
    static const char *const pass[] = {"tools", "chat_template_kwargs"};
    for (size_t i = 0; i < 2; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(body, pass[i]);
        if (v && !cJSON_IsNull(v)) cJSON_AddItemReferenceToObject(req, pass[i], v);
    }
    char *text = NULL;
    mnv_status st = mnv__chat_template_render(s->tmpl, req, 1, &text);
    cJSON_Delete(req);
    if (st != MNV_OK) return srv_err_set(e, 400, "messages", "chat_template_error", "the chat template failed: %s", mnv_last_error());
    size_t len = strlen(text), end = len;
    while (end && (text[end - 1] == '\n' || text[end - 1] == ' ')) end--;
    j->think_open = end >= 7 && memcmp(text + end - 7, "<think>", 7) == 0;
    size_t need = 0;
    mnv_tokenize(s->tok, text, len, 0, NULL, 0, &need);
    *ids = malloc(MNV_MAX(need, 1) * sizeof(int32_t));
    st = *ids && need ? mnv_tokenize(s->tok, text, len, 0, *ids, need, n) : MNV_ERR_NOMEM;
    free(text);
    if (st != MNV_OK) return srv_err_set(e, 500, NULL, NULL, "tokenizing the rendered chat failed: %s", mnv_last_error());
    return true;
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
    bool ok = s->fmt == SRV_FMT_HARMONY    ? harmony_prompt(s, body, messages, j, ids, n, e)
              : s->fmt == SRV_FMT_TEMPLATE ? template_prompt(s, body, messages, j, ids, n, e)
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

/* ---- chat-template output: <think> reasoning, content, <tool_call> ------------------ */

static const char *find(const char *s, size_t n, const char *pat) {
    return memmem(s, n, pat, strlen(pat));
}

/* Bytes at the end of s[0, n) that may begin pat (held back while streaming). */
static size_t partial(const char *s, size_t n, const char *pat) {
    size_t pl = strlen(pat);
    for (size_t k = MNV_MIN(pl - 1, n); k > 0; k--)
        if (memcmp(s + n - k, pat, k) == 0) return k;
    return 0;
}

/* What of the raw text can be shown yet: reasoning [*r0, *r1), content [*c0, *c1). */
static void visible(const srv_job *j, const char *t, size_t n, size_t *r0, size_t *r1, size_t *c0, size_t *c1) {
    size_t p = 0;
    *r0 = *r1 = *c0 = *c1 = 0;
    bool think = j->think_open;
    if (!think) {
        while (p < n && (t[p] == ' ' || t[p] == '\n')) p++;
        if (n - p < 7 && memcmp(t + p, "<think>", n - p) == 0) return; /* maybe a tag: wait */
        if (n - p >= 7 && memcmp(t + p, "<think>", 7) == 0) think = true, p += 7;
        else p = 0;
    }
    if (think) {
        while (p < n && (t[p] == ' ' || t[p] == '\n')) p++;
        const char *close = find(t + p, n - p, "</think>");
        *r0 = p;
        if (!close) {
            *r1 = n - partial(t + p, n - p, "</think>");
            return;
        }
        *r1 = (size_t)(close - t);
        p = *r1 + 8;
        while (p < n && (t[p] == ' ' || t[p] == '\n')) p++;
    }
    const char *call = find(t + p, n - p, "<tool_call>");
    *c0 = p;
    *c1 = call ? (size_t)(call - t) : n - partial(t + p, n - p, "<tool_call>");
}

static void show(srv_buf *all, srv_buf *delta, size_t *streamed, const char *s, size_t n) {
    all->len = 0;
    srv_buf_put(all, s, n);
    if (n > *streamed) srv_buf_put(delta, s + *streamed, n - *streamed), *streamed = n;
}

static void template_feed(srv_job *j, srv_choice *c) {
    size_t r0, r1, c0, c1;
    const char *t = c->text.p ? c->text.p : "";
    visible(j, t, c->text_read, &r0, &r1, &c0, &c1);
    show(&c->reasoning, &c->delta_reasoning, &c->r_streamed, t + r0, r1 - r0);
    show(&c->content, &c->delta_content, &c->c_streamed, t + c0, c1 - c0);
}

/* The final split of the whole text; what streaming showed is kept when the
 * final text continues it. */
static void template_finish(srv_job *j, srv_choice *c) {
    char *text = srv_utf8_clean(c->text.p ? c->text.p : "", c->text_read), *content = NULL, *reasoning = NULL;
    cJSON *calls = NULL;
    if (j->think_open && text && !strstr(text, "<think>")) { /* the tag was in the prompt */
        char *t2 = malloc(strlen(text) + 8);
        if (t2) sprintf(t2, "<think>%s", text);
        free(text);
        text = t2;
    }
    if (!text || mnv__chat_parse_output(text, &content, &reasoning, &calls) != MNV_OK) {
        free(text);
        return;
    }
    const char *fin[2] = {reasoning ? reasoning : "", content};
    srv_buf *all[2] = {&c->reasoning, &c->content}, *delta[2] = {&c->delta_reasoning, &c->delta_content};
    size_t *streamed[2] = {&c->r_streamed, &c->c_streamed};
    for (int k = 0; k < 2; k++) {
        size_t n = strlen(fin[k]);
        if (*streamed[k] <= n && memcmp(fin[k], all[k]->p ? all[k]->p : "", *streamed[k]) == 0) {
            show(all[k], delta[k], streamed[k], fin[k], n);
        } else if (!j->stream) {
            all[k]->len = 0;
            srv_buf_put(all[k], fin[k], n);
        }
    }
    int n_calls = cJSON_GetArraySize(calls);
    for (int k = 0; k < n_calls; k++) {
        char id[96];
        snprintf(id, sizeof id, "call_%s_%d_%d", j->id + 9, c->index, k);
        cJSON_ReplaceItemInObject(cJSON_GetArrayItem(calls, k), "id", cJSON_CreateString(id));
    }
    if (n_calls) c->tool_calls = calls;
    else cJSON_Delete(calls);
    free(content);
    free(reasoning);
    free(text);
}

void srv_chat_reader_feed(srv_job *j, srv_choice *c) {
    for (; c->n_read < c->n_toks; c->n_read++) {
        const srv_tok *t = &c->toks[c->n_read];
        if (c->parser) {
            mnv_chat_parser_push(c->parser, t->id);
        } else if (j->fmt == SRV_FMT_PLAIN && t->text_end > c->text_read) {
            srv_buf_put(&c->content, c->text.p + c->text_read, t->text_end - c->text_read);
            srv_buf_put(&c->delta_content, c->text.p + c->text_read, t->text_end - c->text_read);
        }
        c->text_read = t->text_end;
    }
    if (j->fmt == SRV_FMT_TEMPLATE) template_feed(j, c);
}

void srv_chat_reader_finish(srv_job *j, srv_choice *c) {
    if (c->parser) mnv_chat_parser_finish(c->parser);
    if (j->fmt == SRV_FMT_TEMPLATE) template_finish(j, c);
    c->read_done = true;
}

void srv_chat_reader_free(srv_choice *c) {
    mnv_chat_parser_free(c->parser);
    c->parser = NULL;
}
