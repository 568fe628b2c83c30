/* Loading quantized models: bad input gets a clear error naming the tensor
 * or key, never a crash. A 4-bit affine tiny-llama (made by mnv_convert) is
 * damaged one way at a time: missing scales, missing biases, scales of the
 * wrong shape or dtype, a packed weight of the wrong width, a group size
 * that does not divide the rows, an unknown mode. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "minerva.h"
#include "test.h"

static char root[64];
static const char *Q = "model.layers.0.self_attn.q_proj";

/* Copy dir `good` to `dst` with tensor `drop` left out, or with tensor
 * `reshape` given new_cols columns (data truncated or zero-padded), or with
 * `retype` written as dtype F16 (the fixture's scales are F32). config.json gets `config` (NULL: as is). */
typedef struct {
    const char *drop, *reshape, *retype;
    int64_t new_cols;
    const char *config;
} damage;

static void copy_text(const char *src, const char *dst, const char *override) {
    char *data = NULL;
    size_t len = 0;
    FILE *in = fopen(src, "rb");
    if (in) {
        fseek(in, 0, SEEK_END);
        len = (size_t)ftell(in);
        rewind(in);
        data = malloc(len + 1);
        if (fread(data, 1, len, in) != len) len = 0;
        fclose(in);
    }
    FILE *out = fopen(dst, "wb");
    if (out) {
        if (override) fputs(override, out);
        else if (data) fwrite(data, 1, len, out);
        fclose(out);
    }
    free(data);
}

static int make_damaged(const char *good, const char *dst, const damage *d) {
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", good);
    mnv_st_set *set = NULL;
    if (mnv_st_open_file(path, &set) != MNV_OK) return 0;
    size_t n = mnv_st_count(set), k = 0;
    mnv_st_write_tensor *w = calloc(n, sizeof *w);
    void **bufs = calloc(n, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        const mnv_st_tensor *t = mnv_st_get(set, i);
        if (d->drop && strcmp(t->name, d->drop) == 0) continue;
        w[k] = (mnv_st_write_tensor){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(w[k].shape, t->shape, sizeof t->shape);
        if ((d->reshape && !strcmp(t->name, d->reshape)) || (d->retype && !strcmp(t->name, d->retype))) {
            if (d->reshape && !strcmp(t->name, d->reshape)) w[k].shape[t->ndim - 1] = d->new_cols;
            if (d->retype && !strcmp(t->name, d->retype)) w[k].dtype = MNV_DTYPE_F16;
            size_t bytes = mnv_dtype_size(w[k].dtype);
            for (int j = 0; j < t->ndim; j++) bytes *= (size_t)w[k].shape[j];
            bufs[i] = calloc(1, bytes + 1);
            memcpy(bufs[i], t->data, MNV_MIN(bytes, (size_t)t->nbytes));
            w[k].data = bufs[i];
        }
        k++;
    }
    mkdir(dst, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    mnv_status st = mnv_st_write(path, w, k, NULL, 0);
    char src_cfg[256], dst_cfg[256];
    snprintf(src_cfg, sizeof src_cfg, "%s/config.json", good);
    snprintf(dst_cfg, sizeof dst_cfg, "%s/config.json", dst);
    copy_text(src_cfg, dst_cfg, d->config);
    for (size_t i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(w);
    mnv_st_close(set);
    return st == MNV_OK;
}

static void expect_load_error(const char *good, const char *what, const damage *d, mnv_status want, const char *frag) {
    char dst[128];
    static int seq;
    snprintf(dst, sizeof dst, "%s/bad%d", root, seq++);
    if (!make_damaged(good, dst, d)) {
        CHECKF(0, "%s: cannot build the damaged model", what);
        return;
    }
    mnv_model *m = NULL;
    mnv_status st = mnv_model_load(dst, NULL, &m);
    if (st == MNV_OK) mnv_set_error(MNV_OK, "(loaded)");
    CHECKF(st == want && m == NULL, "%s: status %s, expected %s", what, mnv_status_str(st), mnv_status_str(want));
    CHECKF(strstr(mnv_last_error(), frag) != NULL, "%s: message '%s' lacks '%s'", what, mnv_last_error(), frag);
    printf("  %-34s -> %s\n", what, mnv_last_error());
    mnv_model_free(m);
}

int main(void) {
    t_seed();
    snprintf(root, sizeof root, "/tmp/mnv-ql-XXXXXX");
    if (!mkdtemp(root)) return t_done();
    char good[128];
    snprintf(good, sizeof good, "%s/q4", root);
    mnv_convert_params p = mnv_convert_params_default();
    p.src_dir = "fixtures/models/tiny-llama";
    p.dst_dir = good;
    p.q_mode = "affine";
    p.q_bits = 4;
    p.q_group_size = 32;
    CHECKF(mnv_convert(&p) == MNV_OK, "convert: %s", mnv_last_error());
    mnv_model *m = NULL;
    CHECKF(mnv_model_load(good, NULL, &m) == MNV_OK, "the undamaged model loads: %s", mnv_last_error());
    mnv_model_free(m);

    char sc[96], bi[96], wt[96];
    snprintf(sc, sizeof sc, "%s.scales", Q);
    snprintf(bi, sizeof bi, "%s.biases", Q);
    snprintf(wt, sizeof wt, "%s.weight", Q);
    expect_load_error(good, "missing scales", &(damage){.drop = sc}, MNV_ERR_FORMAT, sc);
    expect_load_error(good, "missing biases", &(damage){.drop = bi}, MNV_ERR_FORMAT, bi);
    expect_load_error(good, "scales of the wrong shape", &(damage){.reshape = sc, .new_cols = 2}, MNV_ERR_FORMAT, sc);
    expect_load_error(good, "scales of another dtype than biases", &(damage){.retype = sc}, MNV_ERR_FORMAT, Q);
    expect_load_error(good, "packed weight of the wrong width", &(damage){.reshape = wt, .new_cols = 5}, MNV_ERR_FORMAT, wt);
    /* config.json damage: read the good config, replace the quantization block */
    char cfg_path[160];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", good);
    FILE *f = fopen(cfg_path, "rb");
    char cfg[8192] = {0};
    size_t len = f ? fread(cfg, 1, sizeof cfg - 1, f) : 0;
    if (f) fclose(f);
    cfg[len] = 0;
    char *q = strstr(cfg, "\"quantization\"");
    if (q) {
        const struct {
            const char *block, *what, *frag;
            mnv_status st;
        } bad[] = {
            {"\"quantization\": {\"group_size\": 48, \"bits\": 4}, \"x_unused\"", "group size 48",
             "group size", MNV_ERR_UNSUPPORTED},
            {"\"quantization\": {\"group_size\": 128, \"bits\": 4}, \"x_unused\"", "groups of 128, rows of 96",
             "do not divide", MNV_ERR_FORMAT},
            {"\"quantization\": {\"group_size\": 32, \"bits\": 4, \"mode\": \"int3x\"}, \"x_unused\"", "unknown mode",
             "int3x", MNV_ERR_UNSUPPORTED},
            {"\"quantization\": {\"group_size\": 32, \"bits\": 7}, \"x_unused\"", "7 bits", "bits", MNV_ERR_UNSUPPORTED},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char edited[9000];
            size_t pre = (size_t)(q - cfg);
            snprintf(edited, sizeof edited, "%.*s%s%s", (int)pre, cfg, bad[i].block, q + strlen("\"quantization\""));
            expect_load_error(good, bad[i].what, &(damage){.config = edited}, bad[i].st, bad[i].frag);
        }
    } else {
        CHECKF(0, "no quantization block in %s", cfg_path);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", root);
    return t_done();
}
