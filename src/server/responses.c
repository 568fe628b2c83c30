/* /v1/responses, stateless: `input` (text or items: messages,
 * function_call, function_call_output, reasoning) and `instructions` become
 * chat messages and run as a chat job; the answer is a list of output items
 * (reasoning, message, function_call), whole or as streamed events
 * (response.created ... response.completed). previous_response_id needs
 * stored responses, which this server does not keep: a 400 says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_int.h"

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *msg(const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content ? content : "");
    return m;
}

/* The text of an item's content: a string or parts with "text". */
static char *item_text(const cJSON *c) {
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    srv_buf b = {0};
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const char *t = str_field(p, "text");
        if (t) srv_buf_puts(&b, t);
    }
    if (!b.p) return strdup("");
    return b.p;
}

/* input items -> chat messages (appended to msgs) */
static bool input_items(const cJSON *input, cJSON *msgs, srv_err *e) {
    const cJSON *it;
    cJSON_ArrayForEach(it, input) {
        const char *type = str_field(it, "type"), *role = str_field(it, "role");
        if (!cJSON_IsObject(it)) return srv_err_set(e, 400, "input", "invalid_type", "%s", "each input item must be an object");
        if (!type || strcmp(type, "message") == 0) {
            if (!role) return srv_err_set(e, 400, "input", "invalid_value", "%s", "a message item without a role");
            char *t = item_text(cJSON_GetObjectItemCaseSensitive(it, "content"));
            cJSON_AddItemToArray(msgs, msg(role, t));
            free(t);
        } else if (strcmp(type, "function_call") == 0) {
            cJSON *m = msg("assistant", ""), *tcs = cJSON_CreateArray(), *tc = cJSON_CreateObject(), *f = cJSON_CreateObject();
            const char *id = str_field(it, "call_id"), *name = str_field(it, "name"), *args = str_field(it, "arguments");
            if (!name) {
                cJSON_Delete(m), cJSON_Delete(tcs), cJSON_Delete(tc), cJSON_Delete(f);
                return srv_err_set(e, 400, "input", "invalid_value", "%s", "a function_call item without a name");
            }
            cJSON_AddStringToObject(tc, "id", id ? id : "");
            cJSON_AddStringToObject(tc, "type", "function");
            cJSON_AddStringToObject(f, "name", name);
            cJSON_AddStringToObject(f, "arguments", args ? args : "{}");
            cJSON_AddItemToObject(tc, "function", f);
            cJSON_AddItemToArray(tcs, tc);
            cJSON_AddItemToObject(m, "tool_calls", tcs);
            cJSON_AddItemToArray(msgs, m);
        } else if (strcmp(type, "function_call_output") == 0) {
            const char *out = str_field(it, "output");
            cJSON *m = msg("tool", out);
            const char *id = str_field(it, "call_id");
            if (id) cJSON_AddStringToObject(m, "tool_call_id", id);
            cJSON_AddItemToArray(msgs, m);
        } else if (strcmp(type, "reasoning") == 0) {
            char *t = item_text(cJSON_GetObjectItemCaseSensitive(it, "content"));
            cJSON *m = msg("assistant", "");
            cJSON_AddStringToObject(m, "reasoning_content", t ? t : "");
            free(t);
            cJSON_AddItemToArray(msgs, m);
        } else {
            return srv_err_set(e, 400, "input", "unsupported_value", "input items of type '%s' are not supported", type);
        }
    }
    return true;
}

/* responses tools ({type, name, parameters}) -> chat tools ({type, function: {...}}) */
static cJSON *chat_tools(const cJSON *tools) {
    cJSON *out = cJSON_CreateArray();
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const char *type = str_field(t, "type");
        if (type && strcmp(type, "function")) continue;
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        cJSON *ct = cJSON_CreateObject();
        cJSON_AddStringToObject(ct, "type", "function");
        if (f) {
            cJSON_AddItemToObject(ct, "function", cJSON_Duplicate(f, 1));
        } else {
            cJSON *nf = cJSON_Duplicate(t, 1);
            cJSON_DeleteItemFromObjectCaseSensitive(nf, "type");
            cJSON_DeleteItemFromObjectCaseSensitive(nf, "strict");
            cJSON_AddItemToObject(ct, "function", nf);
        }
        cJSON_AddItemToArray(out, ct);
    }
    return out;
}

/* ---- output ----------------------------------------------------------------------------- */

typedef struct {
    cJSON *output;  /* items so far */
    int open;       /* 0 none, 1 a reasoning item, 2 a message item */
    srv_buf text;   /* the open item's text */
    int seq;        /* sequence_number of events */
    int n_calls;
} resp_state;

static void event(srv_job *j, const char *type, cJSON *o) {
    resp_state *rs = j->state;
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddNumberToObject(o, "sequence_number", rs->seq++);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!t) return;
    srv_buf_printf(&j->out, "event: %s\ndata: ", type);
    srv_buf_puts(&j->out, t);
    srv_buf_puts(&j->out, "\n\n");
    free(t);
}

static cJSON *response_obj(srv_job *j, const char *status) {
    resp_state *rs = j->state;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)j->created);
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddStringToObject(o, "model", j->srv->model_id);
    cJSON_AddItemToObject(o, "output", cJSON_Duplicate(rs->output, 1));
    cJSON_AddNullToObject(o, "error");
    bool done = strcmp(status, "in_progress") != 0;
    if (done && j->ch[0].res.gen.stop_reason == MNV_STOP_MAX_TOKENS) {
        cJSON *d = cJSON_AddObjectToObject(o, "incomplete_details");
        cJSON_AddStringToObject(d, "reason", "max_output_tokens");
    } else {
        cJSON_AddNullToObject(o, "incomplete_details");
    }
    cJSON_AddBoolToObject(o, "parallel_tool_calls", 1);
    cJSON_AddItemToObject(o, "tools", cJSON_CreateArray());
    if (done) cJSON_AddItemToObject(o, "usage", srv_usage(j));
    else cJSON_AddNullToObject(o, "usage");
    return o;
}

static cJSON *item_of(srv_job *j, int kind, const char *text, const char *status) {
    resp_state *rs = j->state;
    char id[96];
    snprintf(id, sizeof id, "%s_%s_%d", kind == 1 ? "rs" : "msg", j->id + 5, cJSON_GetArraySize(rs->output));
    cJSON *it = cJSON_CreateObject(), *content = cJSON_CreateArray();
    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddStringToObject(it, "type", kind == 1 ? "reasoning" : "message");
    cJSON_AddStringToObject(it, "status", status);
    if (kind == 2) cJSON_AddStringToObject(it, "role", "assistant");
    else cJSON_AddItemToObject(it, "summary", cJSON_CreateArray());
    if (text) {
        cJSON *part = cJSON_CreateObject();
        cJSON_AddStringToObject(part, "type", kind == 1 ? "reasoning_text" : "output_text");
        cJSON_AddStringToObject(part, "text", text);
        if (kind == 2) cJSON_AddItemToObject(part, "annotations", cJSON_CreateArray());
        cJSON_AddItemToArray(content, part);
    }
    cJSON_AddItemToObject(it, "content", content);
    return it;
}

static cJSON *at(int out_index, const char *item_id) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "output_index", out_index);
    if (item_id) cJSON_AddStringToObject(o, "item_id", item_id);
    return o;
}

static void open_item(srv_job *j, int kind) {
    resp_state *rs = j->state;
    int idx = cJSON_GetArraySize(rs->output);
    cJSON *it = item_of(j, kind, NULL, "in_progress");
    const char *id = cJSON_GetObjectItem(it, "id")->valuestring;
    cJSON *ev = at(idx, NULL);
    cJSON_AddItemToObject(ev, "item", cJSON_Duplicate(it, 1));
    event(j, "response.output_item.added", ev);
    if (kind == 2) {
        ev = at(idx, id);
        cJSON_AddNumberToObject(ev, "content_index", 0);
        cJSON *part = cJSON_AddObjectToObject(ev, "part");
        cJSON_AddStringToObject(part, "type", "output_text");
        cJSON_AddStringToObject(part, "text", "");
        cJSON_AddItemToObject(part, "annotations", cJSON_CreateArray());
        event(j, "response.content_part.added", ev);
    }
    cJSON_AddItemToArray(rs->output, it);
    rs->open = kind;
    rs->text.len = 0;
}

static void close_item(srv_job *j) {
    resp_state *rs = j->state;
    if (!rs->open) return;
    int idx = cJSON_GetArraySize(rs->output) - 1;
    char *text = srv_utf8_clean(rs->text.p ? rs->text.p : "", rs->text.len);
    cJSON *done = item_of(j, rs->open, text ? text : "", "completed");
    cJSON_ReplaceItemInObject(done, "id", cJSON_Duplicate(cJSON_GetObjectItem(cJSON_GetArrayItem(rs->output, idx), "id"), 1));
    const char *id = cJSON_GetObjectItem(done, "id")->valuestring;
    cJSON *ev = at(idx, id);
    cJSON_AddNumberToObject(ev, "content_index", 0);
    cJSON_AddStringToObject(ev, "text", text ? text : "");
    event(j, rs->open == 1 ? "response.reasoning_text.done" : "response.output_text.done", ev);
    if (rs->open == 2) {
        ev = at(idx, id);
        cJSON_AddNumberToObject(ev, "content_index", 0);
        cJSON_AddItemToObject(ev, "part", cJSON_Duplicate(cJSON_GetArrayItem(cJSON_GetObjectItem(done, "content"), 0), 1));
        event(j, "response.content_part.done", ev);
    }
    ev = at(idx, NULL);
    cJSON_AddItemToObject(ev, "item", cJSON_Duplicate(done, 1));
    event(j, "response.output_item.done", ev);
    cJSON_ReplaceItemInArray(rs->output, idx, done);
    free(text);
    rs->open = 0;
}

static void put_delta(srv_job *j, int kind, srv_buf *d) {
    resp_state *rs = j->state;
    if (!d->len) return;
    if (rs->open != kind) {
        close_item(j);
        open_item(j, kind);
    }
    int idx = cJSON_GetArraySize(rs->output) - 1;
    const char *id = cJSON_GetObjectItem(cJSON_GetArrayItem(rs->output, idx), "id")->valuestring;
    char *t = srv_utf8_clean(d->p, d->len);
    cJSON *ev = at(idx, id);
    cJSON_AddNumberToObject(ev, "content_index", 0);
    cJSON_AddStringToObject(ev, "delta", t ? t : "");
    free(t);
    event(j, kind == 1 ? "response.reasoning_text.delta" : "response.output_text.delta", ev);
    srv_buf_put(&rs->text, d->p, d->len);
    d->len = 0;
}

static void put_calls(srv_job *j) {
    resp_state *rs = j->state;
    srv_choice *c = &j->ch[0];
    int n = c->tool_calls ? cJSON_GetArraySize(c->tool_calls) : 0;
    for (; rs->n_calls < n; rs->n_calls++) {
        close_item(j);
        const cJSON *tc = cJSON_GetArrayItem(c->tool_calls, rs->n_calls), *f = cJSON_GetObjectItem(tc, "function");
        cJSON *it = cJSON_CreateObject();
        char id[96];
        snprintf(id, sizeof id, "fc_%s_%d", j->id + 5, rs->n_calls);
        cJSON_AddStringToObject(it, "id", id);
        cJSON_AddStringToObject(it, "type", "function_call");
        cJSON_AddStringToObject(it, "status", "completed");
        cJSON_AddStringToObject(it, "call_id", cJSON_GetObjectItem(tc, "id")->valuestring);
        cJSON_AddStringToObject(it, "name", cJSON_GetObjectItem(f, "name")->valuestring);
        cJSON_AddStringToObject(it, "arguments", cJSON_GetObjectItem(f, "arguments")->valuestring);
        int idx = cJSON_GetArraySize(rs->output);
        cJSON *ev = at(idx, NULL);
        cJSON_AddItemToObject(ev, "item", cJSON_Duplicate(it, 1));
        event(j, "response.output_item.added", ev);
        ev = at(idx, id);
        cJSON_AddStringToObject(ev, "arguments", cJSON_GetObjectItem(f, "arguments")->valuestring);
        event(j, "response.function_call_arguments.done", ev);
        ev = at(idx, NULL);
        cJSON_AddItemToObject(ev, "item", cJSON_Duplicate(it, 1));
        event(j, "response.output_item.done", ev);
        cJSON_AddItemToArray(rs->output, it);
    }
}

static const char *final_status(const srv_job *j) {
    return j->ch[0].res.gen.stop_reason == MNV_STOP_MAX_TOKENS ? "incomplete" : "completed";
}

static bool fill_responses(srv_job *j) {
    if (j->phase == 0) {
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddItemToObject(ev, "response", response_obj(j, "in_progress"));
        event(j, "response.created", ev);
        ev = cJSON_CreateObject();
        cJSON_AddItemToObject(ev, "response", response_obj(j, "in_progress"));
        event(j, "response.in_progress", ev);
        j->phase = 1;
    }
    srv_choice *c = &j->ch[0];
    put_delta(j, 1, &c->delta_reasoning);
    put_delta(j, 2, &c->delta_content);
    put_calls(j);
    if (!c->read_done) return true;
    close_item(j);
    cJSON *ev = cJSON_CreateObject();
    const char *st = final_status(j);
    cJSON_AddItemToObject(ev, "response", response_obj(j, st));
    event(j, strcmp(st, "completed") == 0 ? "response.completed" : "response.incomplete", ev);
    return false;
}

static cJSON *build_responses(srv_job *j) {
    fill_responses(j); /* the same items, its events dropped */
    j->out.len = 0;
    return response_obj(j, final_status(j));
}

static void free_state(void *p) {
    resp_state *rs = p;
    if (!rs) return;
    cJSON_Delete(rs->output);
    srv_buf_free(&rs->text);
    free(rs);
}

void srv_h_responses(srv_conn *c, const cJSON *body) {
    mnv__server *s = srv_conn_server(c);
    srv_err e;
    const cJSON *prev = cJSON_GetObjectItemCaseSensitive(body, "previous_response_id");
    if (prev && !cJSON_IsNull(prev)) {
        srv_err_set(&e, 400, "previous_response_id", "unsupported_parameter",
                    "%s", "previous_response_id is not supported: this server stores no responses; send the whole "
                    "conversation in 'input'");
        srv_reply_error(c, &e);
        return;
    }
    if (!srv_check_model(s, body, &e)) {
        srv_reply_error(c, &e);
        return;
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(body, "input");
    cJSON *msgs = cJSON_CreateArray(), *b2 = cJSON_Duplicate(body, 1);
    const char *instr = str_field(body, "instructions");
    bool ok = true;
    if (instr) cJSON_AddItemToArray(msgs, msg("system", instr));
    if (cJSON_IsString(input)) cJSON_AddItemToArray(msgs, msg("user", input->valuestring));
    else if (cJSON_IsArray(input)) ok = input_items(input, msgs, &e);
    else ok = srv_err_set(&e, 400, "input", "invalid_type", "%s", "'input' must be a string or an array of items");
    cJSON_DeleteItemFromObjectCaseSensitive(b2, "tools");
    cJSON_AddItemToObject(b2, "tools", chat_tools(cJSON_GetObjectItemCaseSensitive(body, "tools")));
    srv_job *j = ok ? srv_chat_job(c, b2, msgs, SRV_RESPONSES, 1, &e) : NULL;
    cJSON_Delete(msgs);
    cJSON_Delete(b2);
    if (!j) {
        srv_reply_error(c, &e);
        return;
    }
    resp_state *rs = calloc(1, sizeof *rs);
    j->state = rs;
    j->state_free = free_state;
    if (!rs || !(rs->output = cJSON_CreateArray())) {
        srv_job_release(j);
        srv_err_set(&e, 500, NULL, NULL, "out of memory");
        srv_reply_error(c, &e);
        return;
    }
    if (!srv_admit(c)) {
        srv_job_release(j);
        return;
    }
    srv_run_job(c, j, fill_responses, build_responses);
}
