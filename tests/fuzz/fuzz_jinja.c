/* Fuzz target: the Jinja interpreter, parse then render. The input is a
 * template, optionally followed by a NUL byte and a JSON object of
 * variables (else a small chat: messages, tools, add_generation_prompt).
 * Tight limits keep each run short; any failure must come back as a status
 * with a message, never a crash, a hang or a leak. Each template is also
 * rendered through mnv__chat_template_render's path (the tool-call parser
 * gets the output). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "chat/tool_calls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DEFAULT_VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", \"content\": \"hi\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>r</think>ok\", \"tool_calls\": [{\"type\": \"function\","
    " \"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5, null]}}}]},"
    " {\"role\": \"tool\", \"content\": \"42\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    const char *nul = memchr(text, 0, size);
    size_t tlen = nul ? (size_t)(nul - text) : size;
    cJSON *vars = nul ? cJSON_ParseWithLength(nul + 1, size - tlen - 1) : cJSON_Parse(DEFAULT_VARS);
    mnv__jinja *t = NULL;
    if (mnv__jinja_parse("fuzz", text, tlen, &t) != MNV_OK) {
        if (!mnv_last_error()[0]) __builtin_trap();
        cJSON_Delete(vars);
        return 0;
    }
    mnv__jinja_limits lim = {.max_output = 1 << 16, .max_memory = 16 << 20, .max_depth = 20, .max_steps = 20000};
    char *out = NULL;
    if (mnv__jinja_render(t, cJSON_IsObject(vars) ? vars : NULL, &lim, &out) == MNV_OK) {
        if (!out || strlen(out) > lim.max_output) __builtin_trap();
        char *content, *reasoning;
        cJSON *calls;
        if (mnv__chat_parse_output(out, &content, &reasoning, &calls) == MNV_OK) {
            if (!content || !cJSON_IsArray(calls)) __builtin_trap();
            free(content);
            free(reasoning);
            cJSON_Delete(calls);
        }
        free(out);
    } else if (out || !mnv_last_error()[0]) {
        __builtin_trap();
    }
    mnv__jinja_free(t);
    cJSON_Delete(vars);
    return 0;
}
