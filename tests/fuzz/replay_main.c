/* A stand-in for libFuzzer where clang is missing: feeds every file of the
 * given corpus directories to LLVMFuzzerTestOneInput, then a deterministic
 * stream of mutations of them (byte flips, interesting bytes, insertions,
 * deletions, truncations, header-length rewrites).
 *   usage: replay [-mutations=N] [-seed=S] DIR...                          */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as in libFuzzer: one-time set-up of a target (e.g. loading a tokenizer). */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

typedef struct {
    uint8_t *data;
    size_t size;
} input;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends the regular files of dir, in name order, to *in. */
static void load_dir(const char *dir, input **in, size_t *n) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay: cannot open %s\n", dir);
        exit(2);
    }
    char *names[4096];
    size_t k = 0;
    for (struct dirent *e; (e = readdir(d)) && k < 4096;)
        if (e->d_name[0] != '.') names[k++] = mnv_strdup(e->d_name);
    closedir(d);
    qsort(names, k, sizeof *names, cmp_str);
    for (size_t i = 0; i < k; i++) {
        char *path = mnv_path_join(dir, names[i]), *buf;
        size_t len;
        if (mnv_read_file(path, &buf, &len) == MNV_OK) {
            *in = realloc(*in, (*n + 1) * sizeof **in);
            (*in)[(*n)++] = (input){(uint8_t *)buf, len};
        }
        free(path);
        free(names[i]);
    }
}

static size_t mutate(uint8_t *b, size_t len, size_t cap) {
    static const uint8_t interesting[] = {0, 0xff, 0x7f, 0x80, '"', '{', '}', '[', ']', ',',
                                          ':', '-', '.', 'e', '9', '0', '\\', ' '};
    size_t pos = len ? next() % len : 0;
    switch (next() % 7) {
    case 0: if (len) b[pos] ^= (uint8_t)(1u << (next() % 8)); break;
    case 1: if (len) b[pos] = interesting[next() % sizeof interesting]; break;
    case 2: /* insert a byte */
        if (len < cap) {
            memmove(b + pos + 1, b + pos, len - pos);
            b[pos] = interesting[next() % sizeof interesting];
            len++;
        }
        break;
    case 3: { /* delete a run */
        size_t run = len - pos ? 1 + next() % MNV_MIN(len - pos, 16) : 0;
        memmove(b + pos, b + pos + run, len - pos - run);
        len -= run;
        break;
    }
    case 4: len = pos; break; /* truncate */
    case 5: if (len >= 8) b[next() % 8] = (uint8_t)next(); break; /* the u64 header length */
    default: /* copy a chunk over another place */
        if (len > 1) {
            size_t src = next() % len, run = 1 + next() % MNV_MIN(len - MNV_MAX(src, pos), 32);
            memmove(b + pos, b + src, MNV_MIN(run, len - MNV_MAX(src, pos)));
        }
        break;
    }
    return len;
}

int main(int argc, char **argv) {
    long mutations = 5000;
    input *in = NULL;
    size_t n = 0;
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-mutations=", 11) == 0) mutations = atol(argv[i] + 11);
        else if (strncmp(argv[i], "-seed=", 6) == 0) rng = strtoull(argv[i] + 6, NULL, 10) | 1;
        else load_dir(argv[i], &in, &n);
    }
    if (n == 0) {
        fprintf(stderr, "replay: empty corpus\n");
        return 2;
    }
    for (size_t i = 0; i < n; i++) LLVMFuzzerTestOneInput(in[i].data, in[i].size);
    for (long m = 0; m < mutations; m++) {
        const input *src = &in[next() % n];
        size_t cap = src->size + 64, len = src->size;
        uint8_t *b = malloc(cap);
        memcpy(b, src->data, src->size);
        for (int k = 1 + (int)(next() % 8); k > 0; k--) len = mutate(b, len, cap);
        uint8_t *exact = malloc(len ? len : 1); /* exact size, so overreads are caught */
        memcpy(exact, b, len);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        free(b);
    }
    printf("replay: %zu corpus files, %ld mutations, no crash\n", n, mutations);
    for (size_t i = 0; i < n; i++) free(in[i].data);
    free(in);
    return 0;
}
