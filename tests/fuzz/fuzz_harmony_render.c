/* Fuzz target: Harmony rendering of tool schemas. The input is a tool's
 * parameters JSON schema; it is added as a function tool and as a tool of a
 * system-message namespace, then the conversation is rendered. The schema
 * is refused (MNV_ERR_FORMAT) exactly when cJSON does not parse it; a
 * rendering asks its length, then fills exactly that many bytes, the same
 * bytes every time, and holds both tools' declarations. */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "minerva.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *render(const mnv_chat *c, size_t *len) {
    if (mnv_chat_render_text(c, NULL, NULL, 0, len) != MNV_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    char *s = malloc(*len + 1);
    size_t again = 0;
    if (!s) return NULL;
    if (mnv_chat_render_text(c, NULL, s, *len + 1, &again) != MNV_OK || again != *len || s[*len]) __builtin_trap();
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *schema = malloc(size + 1);
    if (!schema) return 0;
    memcpy(schema, data, size);
    schema[size] = 0;
    cJSON *j = cJSON_Parse(schema);
    bool valid = j != NULL;
    cJSON_Delete(j);

    mnv_chat *c = NULL;
    if (mnv_chat_create(NULL, &c) != MNV_OK) __builtin_trap();
    mnv_chat_tool t = {"probe", "A tool.\nSecond line.", schema};
    mnv_status st = mnv_chat_add_tool(c, NULL, &t);
    if (valid ? st != MNV_OK : st != MNV_ERR_FORMAT) __builtin_trap();
    if (st == MNV_OK) {
        mnv_chat_namespace ns = {"browser", "Built-in.", MNV_ROLE_SYSTEM};
        mnv_chat_tool t2 = {"search", NULL, schema};
        if (mnv_chat_add_namespace(c, &ns) != MNV_OK || mnv_chat_add_tool(c, "browser", &t2) != MNV_OK)
            __builtin_trap();
        mnv_chat_message m = {MNV_ROLE_USER, NULL, NULL, NULL, NULL, "hi", 0};
        if (mnv_chat_add_message(c, &m) != MNV_OK) __builtin_trap();
        size_t n1 = 0, n2 = 0;
        char *a = render(c, &n1), *b = render(c, &n2);
        if (a && b && (n1 != n2 || memcmp(a, b, n1) || !strstr(a, "type probe = ") || !strstr(a, "type search = ") ||
                       !strstr(a, "namespace functions {") || !strstr(a, "namespace browser {")))
            __builtin_trap();
        free(a);
        free(b);
    }
    mnv_chat_free(c);
    free(schema);
    return 0;
}
