#include "backend/cpu/ops.h"

#include <math.h>

#include "backend/cpu/vec.h"
#include "backend/topk_row.h"

float mnv_cpu_load(const void *p, mnv_dtype t, int64_t i) {
    switch (t) {
    case MNV_DTYPE_F32: return ((const float *)p)[i];
    case MNV_DTYPE_F16: return mnv_f16_to_f32(((const uint16_t *)p)[i]);
    case MNV_DTYPE_BF16: return mnv_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return 0.0f;
    }
}

void mnv_cpu_convert(const void *src, mnv_dtype st, void *dst, mnv_dtype dt, int64_t n) {
    if (st == dt) {
        memcpy(dst, src, (size_t)n * mnv_dtype_size(st));
        return;
    }
    const mnv_vec_ops *v = mnv_vec();
    if (v->convert && v->convert(src, st, dst, dt, n)) return;
    for (int64_t i = 0; i < n; i++) {
        float v = mnv_cpu_load(src, st, i);
        switch (dt) {
        case MNV_DTYPE_F32: ((float *)dst)[i] = v; break;
        case MNV_DTYPE_F16: ((uint16_t *)dst)[i] = mnv_f32_to_f16(v); break;
        case MNV_DTYPE_BF16: ((uint16_t *)dst)[i] = mnv_f32_to_bf16(v); break;
        default: break;
        }
    }
}

/* y = a (op) b row by row; b is f32 (read in place) or converted per element. */
static void binary_rows(bool mul, const float *a, const void *b, mnv_dtype bt, int64_t bs, float *y, int64_t rows,
                        int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        const float *ar = a + r * n;
        float *yr = y + r * n;
        const float *bf = bt == MNV_DTYPE_F32 ? (const float *)b + r * bs : NULL;
        for (int64_t i = 0; i < n; i++) {
            float bv = bf ? bf[i] : mnv_cpu_load(b, bt, r * bs + i);
            yr[i] = mul ? ar[i] * bv : ar[i] + bv;
        }
    }
}

void mnv_cpu_add(const float *a, const void *b, mnv_dtype bt, int64_t bs, float *y, int64_t rows, int64_t n) {
    binary_rows(false, a, b, bt, bs, y, rows, n);
}

void mnv_cpu_mul(const float *a, const void *b, mnv_dtype bt, int64_t bs, float *y, int64_t rows, int64_t n) {
    binary_rows(true, a, b, bt, bs, y, rows, n);
}

void mnv_cpu_scale(const float *x, float s, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s;
}

void mnv_cpu_rms_norm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps) {
    const mnv_vec_ops *v = mnv_vec();
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float inv = (float)(1.0 / sqrt(v->sumsq_f32(xr, n) / (double)n + eps));
        if (w)
            for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] * inv) * w[i];
        else
            for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * inv;
    }
}

void mnv_cpu_softmax(const float *x, float *y, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float m = -INFINITY;
        for (int64_t i = 0; i < n; i++) m = xr[i] > m ? xr[i] : m;
        double s = 0;
        for (int64_t i = 0; i < n; i++) {
            yr[i] = expf(xr[i] - m);
            s += yr[i];
        }
        float inv = (float)(1.0 / s);
        for (int64_t i = 0; i < n; i++) yr[i] *= inv;
    }
}

void mnv_cpu_silu(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

void mnv_cpu_gelu(const float *x, float *y, int64_t n) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
}

void mnv_cpu_silu_mul(const float *g, const float *u, float *y, int64_t n) { mnv_vec()->silu_mul_f32(g, u, y, n); }

void mnv_cpu_rope(const mnv_rope_args *a, const float *x, const int32_t *pos, float *y, int64_t rows) {
    int32_t D = a->head_dim, half = a->n_rot / 2;
    float cs[256], sn[256];
    for (int64_t r = 0; r < rows; r++) {
        float p = (float)pos[r];
        for (int32_t i = 0; i < half; i++) {
            float ang = p * a->inv_freq[i]; /* f32 product, as the reference computes it */
            cs[i] = (float)cos((double)ang) * a->attn_factor;
            sn[i] = (float)sin((double)ang) * a->attn_factor;
        }
        for (int32_t h = 0; h < a->n_head; h++) {
            const float *xh = x + (r * a->n_head + h) * D;
            float *yh = y + (r * a->n_head + h) * D;
            for (int32_t i = 0; i < half; i++) {
                int32_t i0 = a->traditional ? 2 * i : i, i1 = a->traditional ? 2 * i + 1 : i + half;
                float x0 = xh[i0], x1 = xh[i1];
                yh[i0] = x0 * cs[i] - x1 * sn[i];
                yh[i1] = x1 * cs[i] + x0 * sn[i];
            }
            for (int32_t i = a->n_rot; i < D; i++) yh[i] = xh[i];
        }
    }
}

/* Stages 1, 2 and 4 of the butterflies on 8 elements (an 8-point transform). */
static void hadamard8(float *v) {
    float a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3];
    float a4 = v[4] + v[5], a5 = v[4] - v[5], a6 = v[6] + v[7], a7 = v[6] - v[7];
    float b0 = a0 + a2, b1 = a1 + a3, b2 = a0 - a2, b3 = a1 - a3;
    float b4 = a4 + a6, b5 = a5 + a7, b6 = a4 - a6, b7 = a5 - a7;
    v[0] = b0 + b4, v[1] = b1 + b5, v[2] = b2 + b6, v[3] = b3 + b7;
    v[4] = b0 - b4, v[5] = b1 - b5, v[6] = b2 - b6, v[7] = b3 - b7;
}

/* One stage: pairs h apart within each run of 2h (two disjoint halves, so
 * the loop vectorizes). */
static void hadamard_stage(float *v, int32_t block, int32_t h) {
    for (int32_t i = 0; i < block; i += 2 * h) {
        float *restrict lo = v + i, *restrict hi = v + i + h;
        for (int32_t j = 0; j < h; j++) {
            float a = lo[j], c = hi[j];
            lo[j] = a + c;
            hi[j] = a - c;
        }
    }
}

void mnv_cpu_hadamard(const float *x, float *y, int64_t rows, int64_t n, int32_t block) {
    const float norm = 1.0f / sqrtf((float)block);
    for (int64_t i = 0; i < rows * n; i++) y[i] = x[i] * norm;
    /* in place: H_2b = [H_b H_b; H_b -H_b], stage h pairing elements h apart */
    for (int64_t b = 0; b < rows * n; b += block) {
        float *v = y + b;
        int32_t h = 1;
        if (block >= 8) {
            for (int32_t i = 0; i < block; i += 8) hadamard8(v + i);
            h = 8;
        }
        for (; h < block; h *= 2) hadamard_stage(v, block, h);
    }
}

void mnv_cpu_get_rows(const void *table, mnv_dtype tt, int64_t row_stride, int64_t n, const int32_t *ids, float *y,
                      int64_t rows) {
    size_t es = mnv_dtype_size(tt);
    for (int64_t r = 0; r < rows; r++)
        mnv_cpu_convert((const uint8_t *)table + (size_t)(ids[r] * row_stride) * es, tt, y + r * n, MNV_DTYPE_F32, n);
}

void mnv_cpu_cache_write(const mnv_cache_shape *c, void *cache, const float *rows, const int32_t *slot, int64_t t0,
                         int64_t t1) {
    const mnv_kv_layout *l = &c->lay;
    const int64_t Hkv = c->n_head_kv, D = l->head_dim, row = Hkv * l->row_bytes;
    const bool packed = l->type == MNV_KV_Q8 || l->type == MNV_KV_Q4;
    for (int64_t t = t0; t < t1; t++) {
        int64_t blk = slot[t] / c->block_tokens, r = slot[t] % c->block_tokens;
        uint8_t *dst = (uint8_t *)cache + (size_t)blk * (size_t)c->block_stride + (size_t)(r * row);
        if (!packed) {
            mnv_cpu_convert(rows + t * Hkv * D, MNV_DTYPE_F32, dst, mnv_kv_storage_dtype((mnv_kv_type)l->type),
                            Hkv * D);
            continue;
        }
        for (int64_t h = 0; h < Hkv; h++) mnv_kv_store_row(l, rows + (t * Hkv + h) * D, dst + h * l->row_bytes);
    }
}

void mnv_cpu_topk(const float *x, int64_t n, int32_t k, int32_t *ids, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) mnv__topk_row(x + r * n, n, k, ids + r * k);
}

void mnv_cpu_gather_softmax(const float *x, int64_t n, const int32_t *ids, int32_t k, float *w, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float m = -INFINITY, s = 0;
        for (int32_t j = 0; j < k; j++) m = fmaxf(m, xr[ids[r * k + j]]);
        for (int32_t j = 0; j < k; j++) s += w[r * k + j] = expf(xr[ids[r * k + j]] - m);
        for (int32_t j = 0; j < k; j++) w[r * k + j] /= s;
    }
}

void mnv_cpu_swiglu_oai(const float *gate, const float *up, float *y, int64_t n, float alpha, float limit) {
    for (int64_t i = 0; i < n; i++) {
        float g = fminf(gate[i], limit), u = fminf(fmaxf(up[i], -limit), limit);
        y[i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
    }
}

void mnv_cpu_moe_sum(const float *x, const float *w, int32_t k, int64_t n, float *y, int64_t rows) {
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * n;
        for (int64_t i = 0; i < n; i++) yr[i] = 0.0f;
        for (int32_t j = 0; j < k; j++) {
            const float *xr = x + (r * k + j) * n;
            float wj = w[r * k + j];
            for (int64_t i = 0; i < n; i++) yr[i] += wj * xr[i];
        }
    }
}
