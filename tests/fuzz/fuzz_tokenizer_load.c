/* Fuzz target: a tokenizer.json from arbitrary bytes. Loading either fails
 * with a message or gives a tokenizer whose every encoded id decodes (whole
 * and streamed): encode must never emit an id that decode rejects. Decoding
 * arbitrary ids (taken from the input's tail) must not crash either. */
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const k_texts[] = {
    "Hello world <s> x",
    "a b a b  c\n\tabc",
    " \xC3\xA9t\xC3\xA9 \xE2\x96\x81 42 1234567 <x> cc",
    "\xFF\xFE bad \xE2\x82 bytes \xF0\x9F\x98\x80",
};

/* Every id must decode, whole and one at a time. */
static void check_ids(const mnv_tokenizer *t, const int32_t *ids, size_t n) {
    char text[4096];
    size_t len;
    mnv_status st = mnv_detokenize(t, ids, n, 0, text, sizeof text, &len);
    if (st != MNV_OK && st != MNV_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    mnv_detok_stream *s;
    if (mnv_detok_stream_create(t, &s) != MNV_OK) return;
    for (size_t i = 0; i < n; i++) {
        st = mnv_detok_stream_push(s, ids[i], text, sizeof text, &len);
        if (st != MNV_OK && st != MNV_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    }
    mnv_detok_stream_flush(s, text, sizeof text, &len);
    mnv_detok_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mnv_tokenizer *t = NULL;
    mnv_status st = mnv__tokenizer_load_doc("<fuzz>/tokenizer.json", (const char *)data, size, &t);
    if (st != MNV_OK) {
        if (t || !mnv_last_error()[0]) __builtin_trap();
        return 0;
    }
    int32_t ids[512];
    size_t n;
    for (size_t k = 0; k < sizeof k_texts / sizeof *k_texts; k++) {
        st = mnv_tokenize(t, k_texts[k], strlen(k_texts[k]), 1, ids, 512, &n);
        if (st == MNV_OK) check_ids(t, ids, n);
        else if (st != MNV_ERR_BUFFER_TOO_SMALL && st != MNV_ERR_NOMEM) __builtin_trap();
    }
    /* arbitrary ids: out of range and holes give MNV_ERR_RANGE, nothing worse */
    int32_t nv = mnv_tokenizer_n_vocab(t), any[8];
    for (size_t i = 0; i < 8; i++)
        any[i] = (int32_t)(size > i ? data[size - 1 - i] * 131u % (uint32_t)(nv + 2) : 0) - 1;
    char text[256];
    size_t len;
    mnv_detokenize(t, any, 8, (int)(size & 1), text, sizeof text, &len);
    mnv_detokenize(t, any, 0, 0, text, sizeof text, &len);
    mnv_detok_stream *s;
    if (mnv_detok_stream_create(t, &s) == MNV_OK) {
        for (size_t i = 0; i < 8; i++) mnv_detok_stream_push(s, any[i], text, sizeof text, &len);
        mnv_detok_stream_free(s);
    }
    mnv_tokenizer_free(t);
    return 0;
}
