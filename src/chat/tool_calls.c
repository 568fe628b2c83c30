/* Reasoning and tool calls in a Qwen/Hermes-style assistant text:
 * <think>...</think> and <tool_call>{"name": .., "arguments": ..}</tool_call>. */
#include <stdio.h>
#include <stdlib.h>

#include "chat/tool_calls.h"
#include "core/core.h"

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* a heap copy of s[0..n) with surrounding whitespace removed */
static char *trimmed(const char *s, size_t n) {
    while (n && is_ws(*s)) s++, n--;
    while (n && is_ws(s[n - 1])) n--;
    char *o = malloc(n + 1);
    if (!o) return NULL;
    memcpy(o, s, n);
    o[n] = 0;
    return o;
}

static const char *find(const char *s, size_t n, const char *needle) {
    return memmem(s, n, needle, strlen(needle));
}

/* One OpenAI tool_call object from the JSON between the tags, or NULL when
 * it is not {"name": string, "arguments": ...}. *oom on allocation failure. */
static cJSON *tool_call(const char *json, size_t n, int index, bool *oom) {
    cJSON *j = cJSON_ParseWithLength(json, n);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(j, "arguments");
    if (!cJSON_IsObject(j) || !cJSON_IsString(name) || (args && !cJSON_IsObject(args) && !cJSON_IsString(args))) {
        cJSON_Delete(j);
        return NULL;
    }
    char id[32];
    snprintf(id, sizeof id, "call_%d", index);
    char *astr = !args ? mnv_strdup("{}") : cJSON_IsString(args) ? mnv_strdup(args->valuestring)
                                                                : cJSON_PrintUnformatted(args);
    cJSON *call = cJSON_CreateObject(), *fn = cJSON_CreateObject();
    bool ok = astr && call && fn && cJSON_AddStringToObject(call, "id", id) &&
              cJSON_AddStringToObject(call, "type", "function") && cJSON_AddStringToObject(fn, "name", name->valuestring) &&
              cJSON_AddStringToObject(fn, "arguments", astr);
    if (ok) {
        cJSON_AddItemToObject(call, "function", fn);
        fn = NULL;
    }
    free(astr);
    cJSON_Delete(fn);
    cJSON_Delete(j);
    if (!ok) {
        cJSON_Delete(call);
        *oom = true;
        return NULL;
    }
    return call;
}

mnv_status mnv__chat_parse_output(const char *text, char **content, char **reasoning, cJSON **tool_calls) {
    *content = NULL;
    *reasoning = NULL;
    *tool_calls = NULL;
    if (!text) text = "";
    size_t n = strlen(text);
    const char *body = text;
    size_t body_n = n;
    char *reason = NULL;
    bool oom = false;
    /* reasoning: up to </think> (the opening tag may be in the prompt), or
     * after an unclosed <think> */
    const char *open = find(text, n, "<think>");
    const char *close = find(text, n, "</think>");
    if (close && (!open || open < close)) {
        const char *rs = open ? open + 7 : text;
        reason = trimmed(rs, (size_t)(close - rs));
        body = close + 8;
        body_n = n - (size_t)(body - text);
        while (body_n && is_ws(*body)) body++, body_n--;
        oom |= !reason;
    } else if (open && !close) {
        reason = trimmed(open + 7, n - (size_t)(open + 7 - text));
        body_n = (size_t)(open - text);
        oom |= !reason;
    }
    cJSON *calls = cJSON_CreateArray();
    char *out = malloc(body_n + 1);
    size_t k = 0;
    oom |= !calls || !out;
    int count = 0;
    for (size_t i = 0; !oom && i < body_n;) {
        const char *tag = find(body + i, body_n - i, "<tool_call>");
        if (!tag) {
            memcpy(out + k, body + i, body_n - i);
            k += body_n - i;
            break;
        }
        size_t at = (size_t)(tag - body);
        const char *js = tag + 11;
        const char *end = find(js, body_n - (size_t)(js - body), "</tool_call>");
        size_t jn = end ? (size_t)(end - js) : body_n - (size_t)(js - body);
        size_t next = end ? (size_t)(end - body) + 12 : body_n;
        cJSON *call = tool_call(js, jn, count, &oom);
        memcpy(out + k, body + i, at - i);
        k += at - i;
        if (call) {
            cJSON_AddItemToArray(calls, call);
            count++;
        } else { /* malformed: the text stays in the content */
            memcpy(out + k, body + at, next - at);
            k += next - at;
        }
        i = next;
    }
    char *final = NULL;
    if (!oom) {
        out[k] = 0;
        final = count ? trimmed(out, k) : mnv_strdup(out);
        oom |= !final;
    }
    free(out);
    if (oom) {
        free(final);
        free(reason);
        cJSON_Delete(calls);
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory parsing a model's output");
    }
    *content = final;
    *reasoning = reason;
    *tool_calls = calls;
    return MNV_OK;
}
