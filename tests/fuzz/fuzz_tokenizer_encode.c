/* Fuzz target: encoding arbitrary text with one real tokenizer, loaded once
 * per process from $MNV_FUZZ_TOKENIZER (a tokenizer.json; when the file is
 * absent the run is skipped with exit code 77). Oracles, on every input:
 *  - the sizing protocol: cap 0 gives MNV_ERR_BUFFER_TOO_SMALL and the count,
 *    which then fits and gives the same ids;
 *  - every id decodes, and streaming decode (one id at a time, then flush)
 *    equals whole decode;
 *  - round trip, decode(encode(text)) == text, for valid UTF-8 text when the
 *    tokenizer is lossless: byte-level without a normalizer and without
 *    added tokens that strip spaces (gpt-oss, Llama 3), or SentencePiece
 *    style with byte fallback (U+2581 for spaces, as stories260K) on text
 *    without U+2581 or the spelling of an added token.
 *   usage: MNV_FUZZ_TOKENIZER=models/stories260K/tokenizer.json fuzz_tokenizer_encode CORPUS */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef enum { RT_NONE, RT_EXACT, RT_SPIECE } roundtrip_mode;

static mnv_tokenizer *tok;
static roundtrip_mode mode;

static roundtrip_mode mode_of(const mnv_tokenizer *t) {
    bool bytelevel = false, strips = false, nf = false;
    for (int k = 0; k < t->n_dec; k++) bytelevel |= t->dec[k].kind == MNV__DEC_BYTELEVEL;
    for (int i = 0; i < t->n_added; i++) strips |= t->added[i].lstrip || t->added[i].rstrip;
    for (int k = 0; k < t->n_norm; k++) nf |= t->norm[k].kind <= MNV__NORM_NFD || t->norm[k].kind == MNV__NORM_STRIP;
    if (strips || nf || (t->unk_id >= 0 && !t->byte_fallback && !bytelevel)) return RT_NONE;
    if (bytelevel && t->n_norm == 0) return RT_EXACT;
    return t->byte_fallback ? RT_SPIECE : RT_NONE;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *path = getenv("MNV_FUZZ_TOKENIZER");
    if (!path) {
        fprintf(stderr, "fuzz_tokenizer_encode: set MNV_FUZZ_TOKENIZER to a tokenizer.json\n");
        exit(2);
    }
    if (access(path, R_OK) != 0) {
        printf("SKIP: %s not present\n", path);
        exit(77);
    }
    mnv_status st = mnv_tokenizer_load(path, &tok);
    if (st != MNV_OK) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s\n", mnv_last_error());
        exit(1);
    }
    mode = mode_of(tok);
    static const char *names[] = {"none", "exact", "SentencePiece-style"};
    printf("fuzz_tokenizer_encode: %s, %d ids, round-trip oracle: %s\n", path,
           mnv_tokenizer_n_vocab(tok), names[mode]);
    return 0;
}

static bool roundtrip_applies(const char *s, size_t n) {
    if (mode == RT_NONE || !mnv__utf8_valid(s, n, NULL)) return false;
    if (mode == RT_EXACT) return true;
    if (memmem(s, n, "\xE2\x96\x81", 3)) return false;
    for (int i = 0; i < tok->n_added; i++)
        if (memmem(s, n, tok->arena + tok->added[i].off, tok->added[i].len)) return false;
    return true;
}

/* Whole decode into a heap buffer, through the sizing protocol. */
static char *decode(const int32_t *ids, size_t n, size_t *len) {
    if (mnv_detokenize(tok, ids, n, 0, NULL, 0, len) != MNV_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    char *text = malloc(*len + 1);
    size_t len2;
    if (!text || mnv_detokenize(tok, ids, n, 0, text, *len + 1, &len2) != MNV_OK || len2 != *len)
        __builtin_trap();
    return text;
}

static void check_stream(const int32_t *ids, size_t n, const char *whole, size_t len) {
    mnv_detok_stream *s;
    if (mnv_detok_stream_create(tok, &s) != MNV_OK) __builtin_trap();
    char piece[1024];
    size_t got, at = 0;
    for (size_t i = 0; i <= n; i++) {
        mnv_status st = i < n ? mnv_detok_stream_push(s, ids[i], piece, sizeof piece, &got)
                              : mnv_detok_stream_flush(s, piece, sizeof piece, &got);
        if (st != MNV_OK || !mnv__utf8_valid(piece, got, NULL)) __builtin_trap();
        if (got > len - at || memcmp(whole + at, piece, got) != 0) __builtin_trap();
        at += got;
    }
    if (at != len) __builtin_trap();
    mnv_detok_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    size_t n = 0, n2 = 0;
    mnv_status st = mnv_tokenize(tok, text, size, 0, NULL, 0, &n);
    if (st != MNV_OK && st != MNV_ERR_BUFFER_TOO_SMALL) __builtin_trap();
    if ((st == MNV_OK) != (n == 0)) __builtin_trap();
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids || mnv_tokenize(tok, text, size, 0, ids, n, &n2) != MNV_OK || n2 != n) __builtin_trap();
    size_t len;
    char *back = decode(ids, n, &len);
    check_stream(ids, n, back, len);
    if (roundtrip_applies(text, size) && (len != size || memcmp(back, text, size) != 0))
        __builtin_trap();
    free(back);
    free(ids);
    return 0;
}
