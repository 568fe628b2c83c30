/* CUDA kernels other than products and attention: copies, elementwise and
 * row ops, RoPE, row gathers, cache writes and the mixture-of-experts
 * helpers. Simple one-thread-per-element (or one-block-per-row) kernels;
 * the arithmetic follows cpu/ops.c. */
#include <cfloat>

#include "backend/cuda/cuda_common.cuh"

int mnv__cu_pdl = 0;
extern "C" void mnv__cu_set_pdl(int on) { mnv__cu_pdl = on; }

static __global__ void k_copy(mnv_cu_copy_args a, int64_t total);
/* Whether the kernels were built with their entry's wait: PTX of sm_90 or later. */
extern "C" int mnv__cu_pdl_built(void) {
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, (const void *)k_copy) == cudaSuccess && fa.ptxVersion >= 90;
}

static unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---- copy ---- */
static __global__ void k_copy(mnv_cu_copy_args a, int64_t total) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int64_t rem = i, off = 0;
    for (int d = a.ndim - 1; d >= 0; d--) {
        off += (rem % a.shape[d]) * a.xstride[d];
        rem /= a.shape[d];
    }
    cu_store(a.y, a.yt, i, cu_load(a.x, a.xt, off));
}

extern "C" cudaError_t mnv_cu_copy(const mnv_cu_copy_args *a, cudaStream_t s) {
    int64_t total = 1;
    for (int d = 0; d < a->ndim; d++) total *= a->shape[d];
    if (total > 0) cu_launch(k_copy, blocks_for(total, 256), 256, 0, s, *a, total);
    CU_CHECK_LAUNCH();
}

/* ---- elementwise ---- */
static __global__ void k_elem(mnv_cu_elem_args a) {
    cu_grid_entry();
    int64_t total = a.rows * a.n;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        float x = a.a[i], y;
        switch (a.op) {
        case MNV_CU_ADD: y = x + cu_load(a.b, a.bt, (i / a.n) * a.bs + i % a.n); break;
        case MNV_CU_MUL: y = x * cu_load(a.b, a.bt, (i / a.n) * a.bs + i % a.n); break;
        case MNV_CU_SILU_MUL: y = x / (1.0f + expf(-x)) * ((const float *)a.b)[i]; break;
        case MNV_CU_SWIGLU: y = cu_swiglu(x, ((const float *)a.b)[i], a.f0, a.f1); break;
        case MNV_CU_SCALE: y = x * a.f0; break;
        case MNV_CU_SILU: y = x / (1.0f + expf(-x)); break;
        default: y = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); break;
        }
        a.y[i] = y;
    }
}

extern "C" cudaError_t mnv_cu_elem(const mnv_cu_elem_args *a, cudaStream_t s) {
    int64_t total = a->rows * a->n;
    if (total > 0) {
        int64_t b = blocks_for(total, 256);
        cu_launch(k_elem, (unsigned)(b < 65536 ? b : 65536), 256, 0, s, *a);
    }
    CU_CHECK_LAUNCH();
}

/* ---- row ops: one block of 256 threads per row ---- */
static __device__ float block_reduce(float v, bool is_max, float *sh) {
    v = is_max ? warp_max(v) : warp_sum(v);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = l < nw ? sh[l] : (is_max ? -INFINITY : 0.0f);
    return is_max ? warp_max(v) : warp_sum(v);
}

static __global__ void k_softmax(const float *x, float *y, int64_t n) {
    cu_grid_entry();
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * n;
    float *yr = y + blockIdx.x * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = block_reduce(m, true, sh);
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float e = expf(xr[i] - m);
        yr[i] = e;
        sum += e;
    }
    float inv = 1.0f / block_reduce(sum, false, sh);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] *= inv;
}

extern "C" cudaError_t mnv_cu_softmax(const float *x, float *y, int64_t rows, int64_t n, cudaStream_t s) {
    if (rows > 0) cu_launch(k_softmax, (unsigned)rows, 256, 0, s, x, y, n);
    CU_CHECK_LAUNCH();
}

static __global__ void k_rms_norm(const float *x, const float *w, float *y, int64_t n, float eps) {
    cu_grid_entry();
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * n;
    float *yr = y + blockIdx.x * n;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_reduce(ss, false, sh);
    float inv = (float)(1.0 / sqrt((double)ss / (double)n + eps));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w ? (xr[i] * inv) * w[i] : xr[i] * inv;
}

/* Rows of up to RMS_V x 4 x 256 floats, 16-byte aligned: every load of the
 * row (and of w) is issued before the first is used, so the kernel waits
 * on memory once, not once per element a thread reads (a short row is
 * all latency). */
#define RMS_V 8

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Rows of n that k_rms_norm_v takes (x the row, y the norm, w its weights
 * or NULL); the fused sum and norm takes the same, so that its bits are
 * the norm kernel's. */
static bool rms_vec(const void *x, const void *y, const void *w, int64_t n) {
    return n > 0 && n % 4 == 0 && n <= RMS_V * 4 * 256 && al16(x) && al16(y) && al16(w);
}

/* The end of a vectorised norm: a block of 256 whose thread holds elements
 * threadIdx.x + 256 v (v < RMS_V, zero past n4) of the row in xv, and the
 * weights in wv, writes the row's RMS norm to yr. */
static __device__ __forceinline__ void rms_finish(const float4 *xv, const float4 *wv, float4 *yr, int64_t n4,
                                                  float eps, float *sh) {
    float ss = 0.0f;
#pragma unroll
    for (int v = 0; v < RMS_V; v++) ss += xv[v].x * xv[v].x + xv[v].y * xv[v].y + xv[v].z * xv[v].z + xv[v].w * xv[v].w;
    ss = block_reduce(ss, false, sh);
    const float inv = (float)(1.0 / sqrt((double)ss / (double)(4 * n4) + eps));
#pragma unroll
    for (int v = 0; v < RMS_V; v++) {
        const int64_t i = threadIdx.x + v * 256;
        if (i < n4)
            yr[i] = make_float4(xv[v].x * inv * wv[v].x, xv[v].y * inv * wv[v].y, xv[v].z * inv * wv[v].z,
                                xv[v].w * inv * wv[v].w);
    }
}

static __global__ void __launch_bounds__(256) k_rms_norm_v(const float4 *x, const float4 *w, float4 *y, int64_t n4,
                                                           float eps) {
    cu_grid_entry();
    __shared__ float sh[32];
    const float4 *xr = x + blockIdx.x * n4;
    float4 *yr = y + blockIdx.x * n4;
    float4 xv[RMS_V], wv[RMS_V];
#pragma unroll
    for (int v = 0; v < RMS_V; v++) {
        const int64_t i = threadIdx.x + v * 256;
        xv[v] = i < n4 ? __ldg(xr + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        wv[v] = w && i < n4 ? __ldg(w + i) : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
    }
    rms_finish(xv, wv, yr, n4, eps, sh);
}

extern "C" cudaError_t mnv_cu_rms_norm(const float *x, const float *w, float *y, int64_t rows, int64_t n, float eps,
                                       cudaStream_t s) {
    if (rows <= 0) CU_CHECK_LAUNCH();
    if (rms_vec(x, y, w, n))
        cu_launch(k_rms_norm_v, (unsigned)rows, 256, 0, s, (const float4 *)x, (const float4 *)w, (float4 *)y, n / 4, eps);
    else
        cu_launch(k_rms_norm, (unsigned)rows, 256, 0, s, x, w, y, n, eps);
    CU_CHECK_LAUNCH();
}

/* ---- RoPE: one thread per (row, head, rotated pair); the rest copied ---- */
static __device__ __forceinline__ int64_t rope_items(const mnv_cu_rope_args &a) {
    return a.rows * a.n_head * (a.n_rot / 2 + (a.head_dim - a.n_rot));
}

/* Item i of a RoPE: its (row, head) *rh and one or two (dimension, value)
 * results; returns how many. */
static __device__ __forceinline__ int rope_item(const mnv_cu_rope_args &a, int64_t i, int64_t *rh, int32_t *d,
                                                float *v) {
    int32_t D = a.head_dim, half = a.n_rot / 2, per_head = half + (D - a.n_rot);
    int32_t k = (int32_t)(i % per_head);
    *rh = i / per_head;
    const float *xh = a.x + *rh * D;
    if (k >= half) { /* a dimension that is not rotated */
        d[0] = a.n_rot + (k - half);
        v[0] = xh[d[0]];
        return 1;
    }
    float ang = (float)a.pos[*rh / a.n_head] * a.inv_freq[k]; /* f32 product, as the reference computes it */
    float cs = (float)cos((double)ang) * a.attn_factor, sn = (float)sin((double)ang) * a.attn_factor;
    d[0] = a.traditional ? 2 * k : k;
    d[1] = a.traditional ? 2 * k + 1 : k + half;
    float x0 = xh[d[0]], x1 = xh[d[1]];
    /* each product rounded, as cpu/ops.c (C17, no contraction) computes it; a
     * contraction could also pick either product, differently in k_rope and
     * k_rope_write, whose results must agree */
    v[0] = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
    v[1] = __fadd_rn(__fmul_rn(x1, cs), __fmul_rn(x0, sn));
    return 2;
}

static __global__ void k_rope(mnv_cu_rope_args a) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, rh;
    if (i >= rope_items(a)) return;
    int32_t d[2];
    float v[2];
    int n = rope_item(a, i, &rh, d, v);
    for (int j = 0; j < n; j++) a.y[rh * a.head_dim + d[j]] = v[j];
}

/* Token t's row of a cache (its slot). */
static __device__ __forceinline__ uint8_t *cache_row(const mnv_cu_cache &c, void *cache, const int32_t *slot,
                                                     int64_t t) {
    int64_t blk = slot[t] / c.block_tokens, r = slot[t] % c.block_tokens;
    return (uint8_t *)cache + blk * c.block_stride + r * c.n_head_kv * c.row_bytes;
}

/* Element e of token t's row into a float cache at the token's slot. */
static __device__ __forceinline__ void cache_put(const mnv_cu_cache &c, void *cache, const int32_t *slot, int64_t t,
                                                 int64_t e, float v) {
    cu_store(cache_row(c, cache, slot, t), c.dtype, e, v);
}

/* RoPE of q, RoPE of k into its cache, v into its cache: one launch. */
static __global__ void k_rope_write(mnv_cu_rope_write_args a) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, rh;
    int64_t nq = rope_items(a.q), nk = rope_items(a.k), nv = a.T * a.vc.n_head_kv * a.vc.head_dim;
    int32_t d[2];
    float v[2];
    if (i < nq) {
        int n = rope_item(a.q, i, &rh, d, v);
        for (int j = 0; j < n; j++) a.q.y[rh * a.q.head_dim + d[j]] = v[j];
    } else if (i < nq + nk) {
        int n = rope_item(a.k, i - nq, &rh, d, v);
        int64_t t = rh / a.k.n_head, h = rh % a.k.n_head;
        for (int j = 0; j < n; j++) cache_put(a.kc, a.kcache, a.slot, t, h * a.k.head_dim + d[j], v[j]);
    } else if (i < nq + nk + nv) {
        int64_t e = i - nq - nk, row = a.vc.n_head_kv * a.vc.head_dim;
        cache_put(a.vc, a.vcache, a.slot, e / row, e % row, a.v[e]);
    }
}

extern "C" cudaError_t mnv_cu_rope_write(const mnv_cu_rope_write_args *a, cudaStream_t s) {
    int64_t total = a->q.rows * a->q.n_head * (a->q.n_rot / 2 + a->q.head_dim - a->q.n_rot) +
                    a->k.rows * a->k.n_head * (a->k.n_rot / 2 + a->k.head_dim - a->k.n_rot) +
                    a->T * a->vc.n_head_kv * a->vc.head_dim;
    if (total > 0) cu_launch(k_rope_write, blocks_for(total, 256), 256, 0, s, *a);
    CU_CHECK_LAUNCH();
}

extern "C" cudaError_t mnv_cu_rope(const mnv_cu_rope_args *a, cudaStream_t s) {
    int64_t total = a->rows * a->n_head * (a->n_rot / 2 + a->head_dim - a->n_rot);
    if (total > 0) cu_launch(k_rope, blocks_for(total, 256), 256, 0, s, *a);
    CU_CHECK_LAUNCH();
}

/* ---- Walsh-Hadamard: one thread per output, a sum over its block ----
 * H[i][j] = (-1)^popcount(i & j) (Sylvester order, as the CPU's butterflies
 * give); the blocks are small (a head), so the quadratic sum is cheap. */
static __global__ void k_hadamard(const float *x, float *y, int64_t total, int32_t block, float norm) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    int32_t r = (int32_t)(i % block);
    const float *xb = x + (i - r);
    float acc = 0.0f;
    for (int32_t j = 0; j < block; j++) acc += (__popc(r & j) & 1) ? -xb[j] : xb[j];
    y[i] = acc * norm;
}

extern "C" cudaError_t mnv_cu_hadamard(const float *x, float *y, int64_t rows, int64_t n, int32_t block,
                                       cudaStream_t s) {
    int64_t total = rows * n;
    if (total > 0) cu_launch(k_hadamard, blocks_for(total, 256), 256, 0, s, x, y, total, block, 1.0f / sqrtf((float)block));
    CU_CHECK_LAUNCH();
}

/* ---- row gathers and cache writes ---- */
static __global__ void k_get_rows(const void *table, int32_t tt, int64_t rs, int64_t n, const int32_t *ids, float *y,
                                  int64_t rows) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * n) return;
    int64_t r = i / n, c = i % n;
    y[i] = cu_load(table, tt, (int64_t)ids[r] * rs + c);
}

extern "C" cudaError_t mnv_cu_get_rows(const void *table, int32_t tt, int64_t row_stride, int64_t n,
                                       const int32_t *ids, float *y, int64_t rows, cudaStream_t s) {
    if (rows * n > 0) cu_launch(k_get_rows, blocks_for(rows * n, 256), 256, 0, s, table, tt, row_stride, n, ids, y, rows);
    CU_CHECK_LAUNCH();
}

static __global__ void k_cache_write(mnv_cu_cache c, void *cache, const float *rows, const int32_t *slot, int64_t T) {
    cu_grid_entry();
    int64_t rowlen = c.n_head_kv * c.head_dim;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * rowlen) return;
    cache_put(c, cache, slot, i / rowlen, i % rowlen, rows[i]);
}

/* f16 of x clamped to the finite range (kv_quant.c's to_f16). */
static __device__ __forceinline__ unsigned short kv_f16(float x) {
    const float big = 65504.0f;
    return __half_as_ushort(__float2half_rn(x > big ? big : x < -big ? -big : x));
}

/* Q8/Q4: one thread per (token, head, group), quantizing as
 * mnv_kv_store_row does. */
static __global__ void k_cache_write_q(mnv_cu_cache c, void *cache, const float *rows, const int32_t *slot, int64_t T) {
    cu_grid_entry();
    const int64_t D = c.head_dim, G = c.group, ng = D / G;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * c.n_head_kv * ng) return;
    int64_t g = i % ng, th = i / ng, t = th / c.n_head_kv, h = th % c.n_head_kv;
    const float *xg = rows + th * D + g * G;
    uint8_t *r = cache_row(c, cache, slot, t) + h * c.row_bytes;
    const int top = c.kv == MNV_CU_KV_Q8 ? 255 : 15;
    float mn = xg[0], mx = xg[0];
    for (int64_t j = 1; j < G; j++) mn = fminf(mn, xg[j]), mx = fmaxf(mx, xg[j]);
    unsigned short sh = kv_f16((mx - mn) / (float)top), bh = kv_f16(mn);
    float s = __half2float(__ushort_as_half(sh)), b = __half2float(__ushort_as_half(bh)), inv = s > 0 ? 1.0f / s : 0.0f;
    uint8_t *sp = r + c.scales_at + 2 * g, *bp = r + c.scales_at + 2 * (ng + g);
    sp[0] = (uint8_t)sh, sp[1] = (uint8_t)(sh >> 8), bp[0] = (uint8_t)bh, bp[1] = (uint8_t)(bh >> 8);
    int32_t lo = 0;
    for (int64_t j = 0; j < G; j++) {
        float v = rintf((xg[j] - b) * inv);
        int32_t q = v > (float)top ? top : v > 0 ? (int32_t)v : 0; /* NaN: 0 */
        int64_t e = g * G + j;
        if (c.kv == MNV_CU_KV_Q8)
            r[e] = (uint8_t)q;
        else if (j % 2 == 0) /* Q4: two codes a byte, the even one low (G is even) */
            lo = q;
        else
            r[e / 2] = (uint8_t)(lo | q << 4);
    }
}

extern "C" cudaError_t mnv_cu_cache_write(const mnv_cu_cache *c, void *cache, const float *rows, const int32_t *slot,
                                          int64_t T, cudaStream_t s) {
    if (c->kv >= MNV_CU_KV_Q8) {
        int64_t total = T * c->n_head_kv * (c->head_dim / c->group);
        if (total > 0) cu_launch(k_cache_write_q, blocks_for(total, 128), 128, 0, s, *c, cache, rows, slot, T);
        CU_CHECK_LAUNCH();
    }
    int64_t total = T * c->n_head_kv * c->head_dim;
    if (total > 0) cu_launch(k_cache_write, blocks_for(total, 256), 256, 0, s, *c, cache, rows, slot, T);
    CU_CHECK_LAUNCH();
}

/* ---- argmax of logits rows: a block per row ------------------------------------ */

/* The answer of core/argmax.h: values cleaned (NaN -> -inf, +inf -> FLT_MAX),
 * the largest wins and ties go to the lower index. Each thread scans a
 * strided share in increasing order (a strict > keeps its lowest index), then
 * the (value, index) pairs reduce by the same rule, which does not depend on
 * the order of the reduction. */
struct cu_best {
    float v;
    int32_t i;
};

static __device__ __forceinline__ cu_best cu_better(cu_best a, cu_best b) {
    return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

enum { ARGMAX_THREADS = 1024 };

static __device__ __forceinline__ void argmax_take(cu_best *b, float l, int64_t i) {
    l = isnan(l) ? -INFINITY : (l == INFINITY ? FLT_MAX : l);
    if (l > b->v) *b = cu_best{l, (int32_t)i};
}

/* A row of a block; with vec, 16-byte loads, four a thread in flight (a
 * vocabulary row is 0.8 MB: one load at a time left it latency-bound). A
 * thread visits its elements in increasing order, so a tie keeps the
 * lower index, as the reduction does. */
static __global__ void __launch_bounds__(ARGMAX_THREADS) k_argmax(const float *x, int64_t n, int32_t *ids, int vec) {
    cu_grid_entry();
    const float *row = x + (int64_t)blockIdx.x * n;
    cu_best b = {-INFINITY, 0};
    int64_t i0 = 0;
    if (vec) {
        const float4 *r4 = (const float4 *)row;
        const int64_t n4 = n / 4;
        for (int64_t j0 = threadIdx.x; j0 < n4; j0 += 4 * ARGMAX_THREADS) {
            float4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int64_t j = j0 + (int64_t)u * ARGMAX_THREADS;
                v[u] = j < n4 ? __ldg(r4 + j) : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int64_t j = j0 + (int64_t)u * ARGMAX_THREADS;
                if (j >= n4) break;
                argmax_take(&b, v[u].x, 4 * j);
                argmax_take(&b, v[u].y, 4 * j + 1);
                argmax_take(&b, v[u].z, 4 * j + 2);
                argmax_take(&b, v[u].w, 4 * j + 3);
            }
        }
        i0 = 4 * n4;
    }
    for (int64_t i = i0 + threadIdx.x; i < n; i += ARGMAX_THREADS) argmax_take(&b, row[i], i);
    for (int o = 16; o > 0; o >>= 1) {
        cu_best other = {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
        b = cu_better(b, other);
    }
    __shared__ cu_best warp_best[ARGMAX_THREADS / 32];
    if ((threadIdx.x & 31) == 0) warp_best[threadIdx.x >> 5] = b;
    __syncthreads();
    if (threadIdx.x == 0) {
        cu_best r = warp_best[0];
        for (int w = 1; w < ARGMAX_THREADS / 32; w++) r = cu_better(r, warp_best[w]);
        ids[blockIdx.x] = r.i;
    }
}

extern "C" cudaError_t mnv_cu_argmax(const float *x, int64_t n, int32_t *ids, int64_t rows, cudaStream_t s) {
    if (rows > 0x7fffffff || n < 1) return cudaErrorInvalidValue;
    const int vec = n % 4 == 0 && ((uintptr_t)x & 15) == 0;
    if (rows > 0) cu_launch(k_argmax, (unsigned)rows, ARGMAX_THREADS, 0, s, x, n, ids, vec);
    CU_CHECK_LAUNCH();
}

/* ---- mixture-of-experts helpers: one thread per row (k and E are small) ---- */
static __global__ void k_topk(const float *x, int64_t n, int32_t k, int32_t *ids, int64_t rows) {
    cu_grid_entry();
    int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    if (k > MNV_CU_ROUTER_MAX) {
        mnv__topk_row(x + r * n, n, k, ids + r * k);
        return;
    }
    int32_t best[MNV_CU_ROUTER_MAX]; /* the insertion sort's reads and writes in local memory, not global */
    mnv__topk_row(x + r * n, n, k, best);
    for (int32_t j = 0; j < k; j++) ids[r * k + j] = best[j];
}

extern "C" cudaError_t mnv_cu_topk(const float *x, int64_t n, int32_t k, int32_t *ids, int64_t rows, cudaStream_t s) {
    if (rows > 0) cu_launch(k_topk, blocks_for(rows, 64), 64, 0, s, x, n, k, ids, rows);
    CU_CHECK_LAUNCH();
}

static __global__ void k_gather_softmax(const float *x, int64_t n, const int32_t *ids, int32_t k, float *w,
                                        int64_t rows) {
    cu_grid_entry();
    int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    cu_gather_softmax_row(x + r * n, ids + r * k, k, w + r * k);
}

extern "C" cudaError_t mnv_cu_gather_softmax(const float *x, int64_t n, const int32_t *ids, int32_t k, float *w,
                                             int64_t rows, cudaStream_t s) {
    if (rows > 0) cu_launch(k_gather_softmax, blocks_for(rows, 64), 64, 0, s, x, n, ids, k, w, rows);
    CU_CHECK_LAUNCH();
}

static __global__ void k_moe_sum(const float *x, const float *w, int32_t k, int64_t n, const float *res, float *y,
                                 int64_t rows) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * n) return;
    int64_t r = i / n, c = i % n;
    float acc = 0.0f;
    for (int32_t j = 0; j < k; j++) acc += w[r * k + j] * x[(r * k + j) * n + c];
    y[i] = res ? res[i] + acc : acc;
}

extern "C" cudaError_t mnv_cu_moe_sum(const float *x, const float *w, int32_t k, int64_t n, const float *res, float *y,
                                      int64_t rows, cudaStream_t s) {
    if (rows * n > 0) cu_launch(k_moe_sum, blocks_for(rows * n, 256), 256, 0, s, x, w, k, n, res, y, rows);
    CU_CHECK_LAUNCH();
}

#define SUM_SLOTS 4 /* gpt-oss's experts a token */

/* The weighted sum, its residual and the next RMS norm of one row a block:
 * each element summed as k_moe_sum does, the norm as k_rms_norm_v (the same
 * threads' shares, in the same order). */
static __global__ void __launch_bounds__(256) k_moe_sum_rms(const float4 *x, const float *w, int32_t k, int64_t n4,
                                                            const float4 *res, float4 *y, const float4 *nw,
                                                            float4 *ny, float eps) {
    cu_grid_entry();
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    /* the thread's loads issued together, up to SUM_SLOTS slots at once (one
     * element at a time, the loop waited on memory k x RMS_V times; one slot
     * at a time, k times) */
    float4 acc[RMS_V], rv[RMS_V], wv[RMS_V];
#pragma unroll
    for (int v = 0; v < RMS_V; v++) {
        const int64_t i = threadIdx.x + v * 256;
        acc[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        rv[v] = i < n4 ? __ldg(res + r * n4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        wv[v] = nw && i < n4 ? __ldg(nw + i) : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
    }
    /* SUM_SLOTS slots' loads at once, then their sums in slot order */
    for (int32_t j0 = 0; j0 < k; j0 += SUM_SLOTS) {
        float wj[SUM_SLOTS];
        float4 xv[SUM_SLOTS][RMS_V];
#pragma unroll
        for (int u = 0; u < SUM_SLOTS; u++) {
            const int32_t j = j0 + u;
            wj[u] = j < k ? w[r * k + j] : 0.0f;
#pragma unroll
            for (int v = 0; v < RMS_V; v++) {
                const int64_t i = threadIdx.x + v * 256;
                xv[u][v] = j < k && i < n4 ? __ldg(x + (r * k + j) * n4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
#pragma unroll
        for (int u = 0; u < SUM_SLOTS; u++) {
            if (j0 + u >= k) break;
#pragma unroll
            for (int v = 0; v < RMS_V; v++)
                acc[v].x += wj[u] * xv[u][v].x, acc[v].y += wj[u] * xv[u][v].y, acc[v].z += wj[u] * xv[u][v].z,
                    acc[v].w += wj[u] * xv[u][v].w;
        }
    }
    float4 hv[RMS_V];
#pragma unroll
    for (int v = 0; v < RMS_V; v++) {
        const int64_t i = threadIdx.x + v * 256;
        hv[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i >= n4) continue;
        hv[v] = make_float4(rv[v].x + acc[v].x, rv[v].y + acc[v].y, rv[v].z + acc[v].z, rv[v].w + acc[v].w);
        y[r * n4 + i] = hv[v];
    }
    rms_finish(hv, wv, ny + r * n4, n4, eps, sh);
}

extern "C" int mnv_cu_moe_sum_rms_fits(const float *x, const float *res, const float *y, const float *nw,
                                       const float *ny, int64_t n) {
    return rms_vec(y, ny, nw, n) && res && al16(x) && al16(res);
}

extern "C" cudaError_t mnv_cu_moe_sum_rms(const float *x, const float *w, int32_t k, int64_t n, const float *res,
                                          float *y, const float *nw, float *ny, float eps, int64_t rows,
                                          cudaStream_t s) {
    if (!mnv_cu_moe_sum_rms_fits(x, res, y, nw, ny, n) || rows > INT32_MAX) return cudaErrorInvalidValue;
    if (rows > 0)
        cu_launch(k_moe_sum_rms, (unsigned)rows, 256, 0, s, (const float4 *)x, w, k, n / 4, (const float4 *)res,
                  (float4 *)y, (const float4 *)nw, (float4 *)ny, eps);
    CU_CHECK_LAUNCH();
}

/* ---- the f32 activations of a product as two half-precision terms ---- */
static __global__ void k_split(const float *x, int64_t ldx, int64_t m, int64_t k, int32_t t, void *hi, void *lo) {
    cu_grid_entry();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= m * k) return;
    float v = x[(i / k) * ldx + i % k];
    cu_store(hi, t, i, v);
    cu_store(lo, t, i, v - cu_load(hi, t, i));
}

extern "C" cudaError_t mnv_cu_split(const float *x, int64_t ldx, int64_t m, int64_t k, int32_t t, void *hi, void *lo,
                                    cudaStream_t s) {
    if (m * k > 0) cu_launch(k_split, blocks_for(m * k, 256), 256, 0, s, x, ldx, m, k, t, hi, lo);
    CU_CHECK_LAUNCH();
}
