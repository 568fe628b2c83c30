/* Random-weight checkpoints of any supported configuration, for benchmarks
 * at real sizes: weights ~ N(0, 0.02) (an Irwin-Hall sum of four uniforms,
 * cheap and close enough to normal for timing), norms at one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "model/model.h"

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

static void fill(void *dst, mnv_dtype dt, int64_t n, bool ones, uint64_t *rng) {
    const float k = 0.02f * 1.7320508f / 65536.0f; /* 4 uniforms of 16 bits: var 4/12 -> scale to std 0.02 */
    for (int64_t i = 0; i < n; i++) {
        float v = 1.0f;
        if (!ones) {
            uint64_t r = next_u64(rng);
            float s = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) +
                      (float)(r >> 48) - 2.0f * 65535.0f;
            v = s * k;
        }
        if (dt == MNV_DTYPE_F32) ((float *)dst)[i] = v;
        else if (dt == MNV_DTYPE_BF16) ((uint16_t *)dst)[i] = mnv_f32_to_bf16(v);
        else ((uint16_t *)dst)[i] = mnv_f32_to_f16(v);
    }
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

static mnv_status write_weights(const mnv_model_config *cfg, const mnv_synth_params *p, const char *path) {
    const mnv_model_arch *arch = mnv_arch_llama();
    int32_t cap = 32 + 24 * cfg->num_hidden_layers;
    mnv_tensor_spec *specs = calloc((size_t)cap, sizeof *specs);
    mnv_st_write_tensor *wt = calloc((size_t)cap, sizeof *wt);
    if (!specs || !wt) {
        free(specs);
        free(wt);
        return mnv_set_error(MNV_ERR_NOMEM, "synth: out of memory");
    }
    int32_t n = arch->tensor_specs(cfg, specs, cap), nw = 0;
    uint64_t rng = p->seed;
    mnv_status st = MNV_OK;
    for (int32_t i = 0; i < n && st == MNV_OK; i++) {
        if (specs[i].optional) continue; /* e.g. lm_head of tied models */
        int64_t ne = specs[i].shape[0] * (specs[i].ndim == 2 ? specs[i].shape[1] : 1);
        mnv_dtype dt = specs[i].ndim == 1 ? MNV_DTYPE_F32 : p->dtype;
        void *buf = malloc((size_t)ne * mnv_dtype_size(dt));
        if (!buf) {
            st = mnv_set_error(MNV_ERR_NOMEM, "synth: cannot allocate '%s'", specs[i].name);
            break;
        }
        fill(buf, dt, ne, specs[i].is_norm, &rng);
        wt[nw] = (mnv_st_write_tensor){specs[i].name, dt, specs[i].ndim, {specs[i].shape[0], specs[i].shape[1]}, buf};
        nw++;
    }
    const char *meta[] = {"format", "pt"};
    if (st == MNV_OK) st = mnv_st_write(path, wt, (size_t)nw, meta, 1);
    for (int32_t i = 0; i < nw; i++) free((void *)wt[i].data);
    free(wt);
    free(specs);
    return st;
}

mnv_status mnv_synthesize(const mnv_synth_params *p) {
    if (!p || !p->config_path || !p->out_dir) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_synthesize: NULL argument");
    if (p->dtype != MNV_DTYPE_F32 && p->dtype != MNV_DTYPE_F16 && p->dtype != MNV_DTYPE_BF16)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_synthesize: dtype must be F32, F16 or BF16");
    char *json = NULL;
    size_t len = 0;
    mnv_status st = mnv_read_file(p->config_path, &json, &len);
    if (st != MNV_OK) return st;
    mnv_model_config cfg;
    st = mnv_config_parse(json, len, p->config_path, &cfg);
    free(json);
    if (st != MNV_OK) return st;
    if (cfg.arch != MNV_ARCH_LLAMA && cfg.arch != MNV_ARCH_QWEN2 && cfg.arch != MNV_ARCH_QWEN3)
        return mnv_set_error(MNV_ERR_UNSUPPORTED, "%s: synth does not support model_type '%s' yet", p->config_path,
                             cfg.model_type);
    if (mkdir(p->out_dir, 0755) != 0 && errno != EEXIST)
        return mnv_set_error(MNV_ERR_IO, "%s: cannot create directory: %s", p->out_dir, strerror(errno));
    char *cfg_out = mnv_path_join(p->out_dir, "config.json");
    char *st_out = mnv_path_join(p->out_dir, "model.safetensors");
    if (!cfg_out || !st_out) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    if (st == MNV_OK) st = copy_file(p->config_path, cfg_out);
    if (st == MNV_OK) st = write_weights(&cfg, p, st_out);
    free(cfg_out);
    free(st_out);
    return st;
}
