/* Fuzz target: the Harmony parser (mnv_chat_parser) on text, whole against
 * chunked. Input: byte 0 = flags (bit 0: after_start, bit 1: one byte per
 * push), byte 1 = number of cut points k (mod 32), then k bytes, each the
 * distance to the next cut, then the text. The same text pushed in one
 * piece and cut at those points must give identical messages, stop flags
 * and event streams whose deltas add up to each message's content; a reset
 * parser must parse it again the same way. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "minerva.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    size_t open, n_messages;
    size_t delta_len;   /* bytes of content deltas in the open message */
    bool bad;
} events;

static void on_event(void *ud, const mnv_chat_event *ev) {
    events *e = ud;
    switch (ev->kind) {
    case MNV_CHAT_EVENT_HEADER:
        if (e->open) e->bad = true;
        e->open = 1;
        e->delta_len = 0;
        break;
    case MNV_CHAT_EVENT_CONTENT:
        if (!e->open || !ev->delta_len) e->bad = true;
        e->delta_len += ev->delta_len;
        if (ev->msg->content_len != e->delta_len) e->bad = true;
        break;
    case MNV_CHAT_EVENT_MESSAGE:
        if (!e->open || ev->msg->content_len != e->delta_len) e->bad = true;
        e->open = 0;
        e->n_messages++;
        break;
    }
}

static mnv_chat_parser *make(int after_start, events *e) {
    mnv_chat_parser_params pp = mnv_chat_parser_params_default();
    pp.after_start = after_start;
    pp.on_event = on_event;
    pp.user_data = e;
    memset(e, 0, sizeof *e);
    mnv_chat_parser *p = NULL;
    if (mnv_chat_parser_create(NULL, &pp, &p) != MNV_OK) __builtin_trap();
    return p;
}

static bool same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static bool same(const mnv_chat_parser *a, const mnv_chat_parser *b) {
    size_t n = mnv_chat_parser_n_messages(a);
    if (n != mnv_chat_parser_n_messages(b) || mnv_chat_parser_stopped(a) != mnv_chat_parser_stopped(b)) return false;
    for (size_t i = 0; i < n; i++) {
        mnv_chat_message x, y;
        mnv_chat_end ex, ey;
        if (mnv_chat_parser_message(a, i, &x, &ex) != MNV_OK || mnv_chat_parser_message(b, i, &y, &ey) != MNV_OK)
            return false;
        if (x.role != y.role || ex != ey || !same_str(x.name, y.name) || !same_str(x.recipient, y.recipient) ||
            !same_str(x.channel, y.channel) || !same_str(x.content_type, y.content_type) ||
            x.content_len != y.content_len || memcmp(x.content, y.content, x.content_len) ||
            x.content[x.content_len] != 0)
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int after_start = data[0] & 1, bytewise = data[0] >> 1 & 1;
    size_t k = data[1] % 32;
    if (size < 2 + k) return 0;
    const uint8_t *cuts = data + 2;
    const char *text = (const char *)data + 2 + k;
    size_t n = size - 2 - k;

    events ew, ec;
    mnv_chat_parser *whole = make(after_start, &ew), *chunked = make(after_start, &ec);
    if (mnv_chat_parser_push_text(whole, text, n) != MNV_OK || mnv_chat_parser_finish(whole) != MNV_OK)
        __builtin_trap();
    size_t at = 0;
    for (size_t c = 0; at < n; c++) {
        size_t len = bytewise ? 1 : c < k ? cuts[c] : n - at;
        if (len > n - at) len = n - at;
        if (mnv_chat_parser_push_text(chunked, text + at, len) != MNV_OK) __builtin_trap();
        at += len;
    }
    if (mnv_chat_parser_finish(chunked) != MNV_OK) __builtin_trap();
    if (!same(whole, chunked)) __builtin_trap(); /* the split changed the messages */
    if (ew.bad || ec.bad || ew.open || ec.open || ew.n_messages != mnv_chat_parser_n_messages(whole))
        __builtin_trap();

    mnv_chat_parser_reset(chunked); /* a reset parser is a fresh one */
    memset(&ec, 0, sizeof ec);
    if (mnv_chat_parser_push_text(chunked, text, n) != MNV_OK || mnv_chat_parser_finish(chunked) != MNV_OK ||
        !same(whole, chunked) || ec.bad)
        __builtin_trap();
    mnv_chat_parser_free(whole);
    mnv_chat_parser_free(chunked);
    return 0;
}
