/* Random-weight checkpoints of any supported configuration, for benchmarks
 * at real sizes. Float weights ~ N(0, 0.02) (an Irwin-Hall sum of four
 * uniforms: cheap and close enough to normal for timing), norms at one;
 * quantized modules (as the config's "quantization" block says) get random
 * codes with scales that give weights of the same magnitude. Tensors are
 * generated and written one at a time, in shards of at most 5 GiB, so a
 * checkpoint larger than memory can be made. The size is checked before
 * anything is written (against MAX_BYTES and the free disk), and a failure
 * removes the partial output. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/outdir.h"
#include "model/model.h"

#define SHARD_BYTES (5ull << 30)
#define CHUNK (1 << 20) /* elements generated per write */
/* Larger than any published model in 16-bit floats; a config beyond it is
 * almost surely a mistake (and would take hours to write). */
#define MAX_BYTES (16ull << 40)

mnv_synth_params mnv_synth_params_default(void) {
    mnv_synth_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.dtype = MNV_DTYPE_BF16;
    p.seed = 42;
    return p;
}

static uint64_t next_u64(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float normal(uint64_t *rng, float std) {
    uint64_t r = next_u64(rng);
    float s = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) + (float)(r >> 48) -
              2.0f * 65535.0f;
    return s * (std * 1.7320508f / 65536.0f); /* 4 uniforms of variance 1/12 each */
}

static void put_float(void *dst, mnv_dtype dt, int64_t i, float v) {
    if (dt == MNV_DTYPE_F32) ((float *)dst)[i] = v;
    else if (dt == MNV_DTYPE_BF16) ((uint16_t *)dst)[i] = mnv_f32_to_bf16(v);
    else ((uint16_t *)dst)[i] = mnv_f32_to_f16(v);
}

/* n elements of tensor t into buf. */
static void fill(const mnv_stored_tensor *t, void *buf, int64_t n, uint64_t *rng) {
    float qrange = 0.12f / (float)((1 << (t->bits > 0 ? t->bits : 8)) - 1);
    for (int64_t i = 0; i < n; i++) {
        switch (t->fill) {
        case MNV_FILL_NORMAL:
        case MNV_FILL_SMALL: put_float(buf, t->dtype, i, normal(rng, 0.02f)); break;
        case MNV_FILL_ONES: put_float(buf, t->dtype, i, 1.0f); break;
        case MNV_FILL_BITS: ((uint32_t *)buf)[i] = (uint32_t)next_u64(rng); break;
        case MNV_FILL_E8M0: ((uint8_t *)buf)[i] = (uint8_t)(119 + next_u64(rng) % 3); break;
        case MNV_FILL_QSCALE: put_float(buf, t->dtype, i, qrange); break;
        case MNV_FILL_QBIAS: put_float(buf, t->dtype, i, -0.06f); break;
        }
    }
}

/* Order within a shard: larger elements first, so every tensor stays aligned
 * to its element size with no gaps (what Hugging Face's reader expects). */
static int by_align(const void *a, const void *b) {
    const mnv_stored_tensor *x = a, *y = b;
    size_t sx = mnv_dtype_size(x->dtype), sy = mnv_dtype_size(y->dtype);
    return sx != sy ? (sx < sy) - (sx > sy) : strcmp(x->name, y->name);
}

static mnv_status write_shard(const char *path, mnv_stored_tensor *t, int32_t n, uint64_t *rng) {
    qsort(t, (size_t)n, sizeof *t, by_align);
    size_t cap = 256 + (size_t)n * 256, len = 0;
    char *hdr = malloc(cap);
    void *buf = malloc((size_t)CHUNK * 4);
    FILE *f = fopen(path, "wb");
    mnv_status st = MNV_OK;
    if (!hdr || !buf || !f) {
        st = f ? mnv_set_error(MNV_ERR_NOMEM, "synth: out of memory")
               : mnv_set_error(MNV_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        uint64_t b = mnv_stored_tensor_bytes(&t[i]);
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name,
                                mnv_dtype_name(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++)
            len += (size_t)snprintf(hdr + len, cap - len, d ? ",%lld" : "%lld", (long long)t[i].shape[d]);
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + b));
        off += b;
    }
    hdr[len++] = '}';
    while (len % 8) hdr[len++] = ' ';
    uint64_t hl = len;
    bool ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(hdr, 1, len, f) == len;
    for (int32_t i = 0; i < n && ok; i++) {
        int64_t ne = (int64_t)(mnv_stored_tensor_bytes(&t[i]) / mnv_dtype_size(t[i].dtype));
        for (int64_t done = 0; done < ne && ok; done += CHUNK) {
            int64_t c = MNV_MIN((int64_t)CHUNK, ne - done);
            fill(&t[i], buf, c, rng);
            ok = fwrite(buf, mnv_dtype_size(t[i].dtype), (size_t)c, f) == (size_t)c;
        }
    }
    ok &= fclose(f) == 0;
    f = NULL;
    if (!ok) st = mnv_set_error(MNV_ERR_IO, "%s: write failed: %s", path, strerror(errno));
done:
    if (f) fclose(f);
    free(hdr);
    free(buf);
    return st;
}

static mnv_status write_index(mnv__outdir *out, const mnv_stored_tensor *t, const int32_t *shard, int32_t n,
                              int32_t n_shards, uint64_t total) {
    const char *dir = out->dir;
    char *path = mnv_path_join(dir, "model.safetensors.index.json");
    FILE *f = path && mnv__outdir_track(out, path) == MNV_OK ? fopen(path, "w") : NULL;
    if (!f) {
        mnv_status st = mnv_set_error(MNV_ERR_IO, "%s: cannot create the index", dir);
        free(path);
        return st;
    }
    fprintf(f, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n", (unsigned long long)total);
    for (int32_t i = 0; i < n; i++)
        fprintf(f, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", t[i].name, shard[i] + 1, n_shards,
                i + 1 < n ? "," : "");
    fprintf(f, "  }\n}\n");
    bool ok = fclose(f) == 0;
    free(path);
    return ok ? MNV_OK : mnv_set_error(MNV_ERR_IO, "%s: cannot write the index", dir);
}

/* Cut the tensor list greedily into shards and write them. */
static mnv_status write_weights(mnv__outdir *out, mnv_stored_tensor *t, int32_t n, uint64_t seed) {
    int32_t *shard = calloc((size_t)n + 1, sizeof *shard);
    if (!shard) return mnv_set_error(MNV_ERR_NOMEM, "synth: out of memory");
    int32_t ns = 0;
    uint64_t size = 0, total = 0;
    for (int32_t i = 0; i < n; i++) {
        uint64_t b = mnv_stored_tensor_bytes(&t[i]);
        if (size && size + b > SHARD_BYTES) ns++, size = 0;
        shard[i] = ns;
        size += b;
        total += b;
    }
    ns++;
    mnv_status st = ns > 1 ? write_index(out, t, shard, n, ns, total) : MNV_OK;
    uint64_t rng = seed;
    for (int32_t s = 0, first = 0; s < ns && st == MNV_OK; s++) {
        int32_t last = first;
        while (last < n && shard[last] == s) last++;
        char name[64];
        if (ns == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, ns);
        char *path = mnv_path_join(out->dir, name);
        st = path ? mnv__outdir_track(out, path) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        if (st == MNV_OK) st = write_shard(path, t + first, last - first, &rng);
        free(path);
        first = last;
    }
    free(shard);
    return st;
}

static mnv_status copy_file(const char *src, const char *dst) {
    char *data = NULL;
    size_t len = 0;
    mnv_status st = mnv_read_file(src, &data, &len);
    if (st != MNV_OK) return st;
    FILE *f = fopen(dst, "wb");
    if (!f) {
        free(data);
        return mnv_set_error(MNV_ERR_IO, "%s: cannot create: %s", dst, strerror(errno));
    }
    bool ok = fwrite(data, 1, len, f) == len;
    ok &= fclose(f) == 0;
    free(data);
    return ok ? MNV_OK : mnv_set_error(MNV_ERR_IO, "%s: write failed", dst);
}

/* Refuse, before anything is written, weights beyond MAX_BYTES or the free
 * space where they go. */
static mnv_status check_size(const mnv_synth_params *p, const mnv_model_config *cfg, const mnv_stored_tensor *t,
                             int32_t n) {
    mnv_stored_totals tot;
    mnv_stored_tensors_total(cfg, t, n, &tot);
    if (tot.overflow || tot.bytes > MAX_BYTES)
        return mnv_set_error(MNV_ERR_RANGE,
                             "%s: the weights would be %.3g parameters in %.3g bytes (%.3g TiB), more than the "
                             "%llu TiB a synthesized checkpoint may take",
                             p->config_path, tot.params_f, tot.bytes_f, tot.bytes_f / 1099511627776.0,
                             MAX_BYTES >> 40);
    uint64_t need = tot.bytes + (uint64_t)n * 512 + (1u << 20); /* headers, index, config */
    return mnv__check_free_space(p->out_dir, need, "the checkpoint");
}

mnv_status mnv_synthesize(const mnv_synth_params *p) {
    if (!p || !p->config_path || !p->out_dir) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_synthesize: NULL argument");
    if (p->dtype != MNV_DTYPE_F32 && p->dtype != MNV_DTYPE_F16 && p->dtype != MNV_DTYPE_BF16)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_synthesize: dtype must be F32, F16 or BF16");
    char *json = NULL;
    size_t len = 0;
    mnv_status st = mnv_read_file(p->config_path, &json, &len);
    if (st != MNV_OK) return st;
    mnv_model_config *cfg = malloc(sizeof *cfg);
    st = cfg ? mnv_config_parse(json, len, p->config_path, cfg) : mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    free(json);
    mnv_stored_tensor *t = NULL;
    int32_t n = 0;
    if (st == MNV_OK) st = mnv_model_stored_tensors(cfg, p->dtype, &t, &n);
    if (st == MNV_OK) st = check_size(p, cfg, t, n);
    mnv__outdir out = {0};
    bool opened = false;
    if (st == MNV_OK) opened = (st = mnv__outdir_open(&out, p->out_dir, false)) == MNV_OK;
    char *cfg_out = mnv_path_join(p->out_dir, "config.json");
    if (st == MNV_OK && !cfg_out) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (st == MNV_OK && access(cfg_out, F_OK) != 0) st = mnv__outdir_track(&out, cfg_out); /* keep a config already there */
    if (st == MNV_OK) st = copy_file(p->config_path, cfg_out);
    if (st == MNV_OK) st = write_weights(&out, t, n, p->seed);
    if (opened) mnv__outdir_close(&out, st != MNV_OK);
    free(cfg_out);
    free(t);
    free(cfg);
    return st;
}
