/* Internal interfaces of the Harmony chat format (gpt-oss).
 *
 *   harmony.c         mnv_chat: the conversation, rendering to text and ids,
 *                     the special-token lookup
 *   harmony_schema.c  tool namespaces: JSON schema -> the TypeScript-like
 *                     declarations of the reference renderer
 *   harmony_parse.c   mnv_chat_parser: the streaming reader of model output
 */
#ifndef MNV_CHAT_HARMONY_H
#define MNV_CHAT_HARMONY_H

#include "core/core.h"

/* ---- growable byte buffer ----------------------------------------------------
 * Appends never fail loudly: an allocation failure sets oom, checked once at
 * the end of a pass. The text is kept NUL-terminated. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} mnv__hm_buf;

void mnv__hm_put(mnv__hm_buf *b, const char *s, size_t n);
void mnv__hm_puts(mnv__hm_buf *b, const char *s); /* s may be NULL (nothing written) */
void mnv__hm_putc(mnv__hm_buf *b, char c);
void mnv__hm_free(mnv__hm_buf *b);

/* Calls fn for each line of s as Rust's str::lines() yields them: split at
 * '\n', a '\r' before it dropped, no empty last line after a final '\n'. */
void mnv__hm_lines(const char *s, void (*fn)(void *ctx, const char *line, size_t n), void *ctx);

/* ---- tool namespaces (harmony_schema.c) ---------------------------------- */
typedef struct {
    char *name;
    char *description; /* may be NULL */
    char *ts;          /* the argument type, rendered; NULL: no arguments */
} mnv__hm_tool;

typedef struct {
    char *name;
    char *description; /* may be NULL */
    mnv_chat_role placement;
    mnv__hm_tool *tools;
    size_t n_tools, cap_tools;
} mnv__hm_ns;

/* The TypeScript-like type of a JSON schema (parsed from json, len bytes),
 * as the reference's json_schema_to_typescript with indent "". On success
 * *ts_out is a heap string. MNV_ERR_FORMAT when json does not parse. */
mnv_status mnv__hm_schema_to_ts(const char *json, size_t len, char **ts_out);

/* Append the "# Tools" section for the namespaces of placement `where`
 * (byte order of names). Writes nothing when there is none; returns whether
 * it wrote. */
bool mnv__hm_tools_section(const mnv__hm_ns *ns, size_t n, mnv_chat_role where, mnv__hm_buf *out);

/* ---- markers --------------------------------------------------------------- */
typedef enum {
    MNV__HM_START = 0,
    MNV__HM_END,
    MNV__HM_MESSAGE,
    MNV__HM_CHANNEL,
    MNV__HM_CONSTRAIN,
    MNV__HM_RETURN,
    MNV__HM_CALL,
    MNV__HM_N_MARKERS
} mnv__hm_marker;

/* "<|start|>", ... by marker. */
extern const char *const mnv__hm_marker_str[MNV__HM_N_MARKERS];
/* The id of a marker in a looked-up token set. */
int32_t mnv__hm_marker_id(const mnv_chat_tokens *t, mnv__hm_marker m);

#endif
