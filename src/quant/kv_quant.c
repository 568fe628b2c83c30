/* KV cache row layouts: sizes, the quantizer and the reference reader. */
#include "quant/kv_quant.h"

#include <math.h>

const char *mnv_kv_type_name(mnv_kv_type t) {
    static const char *names[MNV_KV_TYPE_COUNT] = {"default", "f32", "f16", "bf16", "q8", "q4"};
    return (int)t >= 0 && t < MNV_KV_TYPE_COUNT ? names[t] : "?";
}

const char *mnv_kv_rotate_name(mnv_kv_rotate r) {
    static const char *names[MNV_KV_ROTATE_COUNT] = {"auto", "on", "off"};
    return (int)r >= 0 && r < MNV_KV_ROTATE_COUNT ? names[r] : "?";
}

int32_t mnv_kv_rotation_block(int32_t head_dim) { return head_dim > 0 ? head_dim & -head_dim : 0; }

int32_t mnv_kv_default_group(int32_t head_dim) {
    static const int32_t cand[3] = {32, 16, 8};
    for (int i = 0; i < 3; i++)
        if (head_dim % cand[i] == 0) return cand[i];
    return head_dim;
}

mnv_dtype mnv_kv_storage_dtype(mnv_kv_type type) {
    switch (type) {
    case MNV_KV_F32: return MNV_DTYPE_F32;
    case MNV_KV_F16: return MNV_DTYPE_F16;
    case MNV_KV_BF16: return MNV_DTYPE_BF16;
    default: return MNV_DTYPE_U8;
    }
}

mnv_status mnv_kv_layout_make(mnv_kv_type type, int32_t head_dim, int32_t group, mnv_kv_layout *out) {
    memset(out, 0, sizeof *out);
    if (type < MNV_KV_F32 || type >= MNV_KV_TYPE_COUNT)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv layout: unknown element type %d", (int)type);
    if (head_dim < 1 || head_dim > (1 << 20))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv layout: head_dim %d", head_dim);
    out->type = type;
    out->head_dim = head_dim;
    if (type == MNV_KV_F32 || type == MNV_KV_F16 || type == MNV_KV_BF16) {
        out->row_bytes = head_dim * (type == MNV_KV_F32 ? 4 : 2);
        return MNV_OK;
    }
    if (group == 0) group = mnv_kv_default_group(head_dim);
    if (group < 1 || head_dim % group)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv layout: group %d does not divide head_dim %d", group,
                             head_dim);
    if (type == MNV_KV_Q4 && (head_dim % 2 || group % 2))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "kv layout: q4 needs an even head_dim and group (%d, %d)",
                             head_dim, group);
    out->group = group;
    out->scales_at = type == MNV_KV_Q8 ? head_dim : head_dim / 2;
    out->row_bytes = out->scales_at + (head_dim / group) * 4;
    return MNV_OK;
}

static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static uint16_t get_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Clamp to the finite f16 range so that a scale or bias never becomes inf. */
static uint16_t to_f16(float x) {
    const float big = 65504.0f;
    return mnv_f32_to_f16(x > big ? big : x < -big ? -big : x);
}

void mnv_kv_store_row(const mnv_kv_layout *l, const float *x, void *row) {
    const int32_t D = l->head_dim;
    uint8_t *r = row;
    switch (l->type) {
    case MNV_KV_F32: memcpy(row, x, (size_t)D * 4); return;
    case MNV_KV_F16:
        for (int32_t i = 0; i < D; i++) put_u16(r + 2 * i, mnv_f32_to_f16(x[i]));
        return;
    case MNV_KV_BF16:
        for (int32_t i = 0; i < D; i++) put_u16(r + 2 * i, mnv_f32_to_bf16(x[i]));
        return;
    default: break;
    }
    const int32_t G = l->group, ng = D / G, top = l->type == MNV_KV_Q8 ? 255 : 15;
    if (l->type == MNV_KV_Q4) memset(r, 0, (size_t)D / 2);
    for (int32_t g = 0; g < ng; g++) {
        const float *xg = x + g * G;
        float mn = xg[0], mx = xg[0];
        for (int32_t i = 1; i < G; i++) mn = fminf(mn, xg[i]), mx = fmaxf(mx, xg[i]);
        uint16_t sh = to_f16((mx - mn) / (float)top), bh = to_f16(mn);
        float s = mnv_f16_to_f32(sh), b = mnv_f16_to_f32(bh), inv = s > 0 ? 1.0f / s : 0.0f;
        put_u16(r + l->scales_at + 2 * g, sh);
        put_u16(r + l->scales_at + 2 * (ng + g), bh);
        for (int32_t i = 0; i < G; i++) {
            float v = rintf((xg[i] - b) * inv);
            int32_t q = v > (float)top ? top : v > 0 ? (int32_t)v : 0; /* NaN: 0 */
            int32_t e = g * G + i;
            if (l->type == MNV_KV_Q8)
                r[e] = (uint8_t)q;
            else
                r[e / 2] |= (uint8_t)(q << (4 * (e & 1)));
        }
    }
}

void mnv_kv_load_row(const mnv_kv_layout *l, const void *row, float *y) {
    const int32_t D = l->head_dim;
    const uint8_t *r = row;
    switch (l->type) {
    case MNV_KV_F32: memcpy(y, row, (size_t)D * 4); return;
    case MNV_KV_F16:
        for (int32_t i = 0; i < D; i++) y[i] = mnv_f16_to_f32(get_u16(r + 2 * i));
        return;
    case MNV_KV_BF16:
        for (int32_t i = 0; i < D; i++) y[i] = mnv_bf16_to_f32(get_u16(r + 2 * i));
        return;
    default: break;
    }
    const int32_t G = l->group, ng = D / G;
    for (int32_t i = 0; i < D; i++) {
        int32_t g = i / G;
        float s = mnv_f16_to_f32(get_u16(r + l->scales_at + 2 * g));
        float b = mnv_f16_to_f32(get_u16(r + l->scales_at + 2 * (ng + g)));
        int32_t q = l->type == MNV_KV_Q8 ? r[i] : (r[i / 2] >> (4 * (i & 1))) & 15;
        y[i] = fmaf(s, (float)q, b);
    }
}
