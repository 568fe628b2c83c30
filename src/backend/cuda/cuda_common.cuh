/* Device helpers shared by the CUDA kernel files: element loads and stores
 * of the float dtypes, the MLX quantized codecs, warp reductions. */
#ifndef MNV_CUDA_COMMON_CUH
#define MNV_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "backend/cuda/cuda_kernels.h"
#include "backend/topk_row.h"

/* qmode values of quant/quant.h */
enum { CU_QNONE = 0, CU_QAFFINE = 1, CU_QMXFP4 = 2, CU_QMXFP8 = 3, CU_QNVFP4 = 4 };

#define CU_CHECK_LAUNCH() return cudaGetLastError()

/* Launches. Every kernel goes through cu_launch and begins with
 * cu_grid_entry(). With programmatic dependent launch on (mnv__cu_pdl:
 * sm_90 and later, MNV_CUDA_PDL), a kernel's blocks may be scheduled while
 * the kernel before it in the stream is still running: the launch, and
 * what a kernel does before its entry (reading weights, which no kernel
 * writes), overlap that kernel's last blocks. The entry waits until the
 * kernel before has completed and its writes are visible (a wait every
 * block reaches before it reads or writes activations), then lets the next
 * kernel be scheduled. Without the attribute the entry is a no-op and the
 * stream orders kernels as usual. */
extern "C" int mnv__cu_pdl;
static __device__ __forceinline__ void cu_grid_entry(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* cp.async of 16 bytes (around L1) or 4 (through L1) from global into
 * shared memory; zeros where !valid (src must still be a valid address).
 * cp_commit closes a group of copies; cp_wait<N> waits until at most N
 * groups are in flight. */
static __device__ __forceinline__ void cp16(void *dst, const void *src, bool valid) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
static __device__ __forceinline__ void cp4(void *dst, const void *src, bool valid) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0));
}
static __device__ __forceinline__ void cp_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> static __device__ __forceinline__ void cp_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* ldmatrix of four 8 x 8 b16 matrices: lanes 8i to 8i + 7 give the
 * addresses of matrix i's rows (16 bytes each, 16-byte aligned in shared
 * memory); r[i] gets row lane / 4, columns 2 (lane % 4) and the next, of
 * matrix i. ldsm4t transposes: rows 2 (lane % 4) and the next, column
 * lane / 4. */
static __device__ __forceinline__ void ldsm4(const void *p, uint32_t *r) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void ldsm4t(const void *p, uint32_t *r) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* The shared memory the current device gives a block that asks for it
 * (its opt-in limit), 0 where that cannot be read. */
static inline size_t cu_smem_optin(void) {
    int dev = 0, optin = 0;
    return cudaGetDevice(&dev) == cudaSuccess &&
                   cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess
               ? (size_t)optin
               : 0;
}

/* A 128-byte line into L2 ahead of its use (a hint: no fault, no result). */
static __device__ __forceinline__ void cu_prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
template <typename... K, typename... A>
static cudaError_t cu_launch(void (*kernel)(K...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A &&...args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = at;
    cfg.numAttrs = mnv__cu_pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<A &&>(args)...);
}

static __device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

static __device__ __forceinline__ float cu_load(const void *p, int32_t t, int64_t i) {
    if (t == MNV_CU_F32) return ((const float *)p)[i];
    if (t == MNV_CU_F16) return __half2float(((const __half *)p)[i]);
    return bf16_bits_to_f32(((const uint16_t *)p)[i]);
}

/* f32 -> bf16 rounding to nearest even, NaN kept (as core.h). */
static __device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Two floats rounded to bf16 by one instruction (cvt.rn.bf16x2.f32,
 * sm_80 and later): a in the low half, b in the high half. The rounding
 * is f32_to_bf16_bits' for every value but NaN, whose payload may differ. */
static __device__ __forceinline__ uint32_t cu_bf16x2_rn(float a, float b) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
    return r;
}

/* The two bf16 terms of floats a and b (a the low half of each word):
 * hi = bf16(v), lo = bf16(v - hi), hi + lo within 2^-16 of v; an mma
 * operand pair. */
static __device__ __forceinline__ void cu_split_bf16x2(float a, float b, uint32_t *hi, uint32_t *lo) {
    const uint32_t h = cu_bf16x2_rn(a, b);
    *hi = h;
    *lo = cu_bf16x2_rn(a - __uint_as_float(h << 16), b - __uint_as_float(h & 0xffff0000u));
}

/* The same for one float. */
static __device__ __forceinline__ void cu_split_bf16(float v, uint16_t *hi, uint16_t *lo) {
    uint32_t h, l;
    cu_split_bf16x2(v, 0.0f, &h, &l);
    *hi = (uint16_t)h;
    *lo = (uint16_t)l;
}

static __device__ __forceinline__ void cu_store(void *p, int32_t t, int64_t i, float v) {
    if (t == MNV_CU_F32)
        ((float *)p)[i] = v;
    else if (t == MNV_CU_F16)
        ((__half *)p)[i] = __float2half_rn(v);
    else
        ((uint16_t *)p)[i] = f32_to_bf16_bits(v);
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Element d of one head's row of a KV cache (quant/kv_quant.h); Q8/Q4
 * rows are byte-aligned only, so their f16 scales are read a byte at a time. */
static __device__ __forceinline__ float cu_kv_at(const uint8_t *row, int32_t kv, int32_t dtype, int32_t group,
                                                 int32_t scales_at, int64_t D, int64_t d) {
    if (kv < MNV_CU_KV_Q8) return cu_load(row, dtype, d);
    int64_t g = d / group, ng = D / group;
    const uint8_t *sp = row + scales_at + 2 * g, *bp = row + scales_at + 2 * (ng + g);
    float s = __half2float(__ushort_as_half((unsigned short)(sp[0] | sp[1] << 8)));
    float b = __half2float(__ushort_as_half((unsigned short)(bp[0] | bp[1] << 8)));
    uint32_t q = kv == MNV_CU_KV_Q8 ? row[d] : (row[d >> 1] >> (4 * (d & 1))) & 15u;
    return fmaf(s, (float)q, b); /* as mnv_kv_load_row */
}

/* gpt-oss's clamped SwiGLU of gate g and up u (the SWIGLU_OAI op). */
static __device__ __forceinline__ float cu_swiglu(float g, float u, float alpha, float limit) {
    g = fminf(g, limit);
    u = fminf(fmaxf(u, -limit), limit);
    return g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
}

/* w = softmax of x at ids[0, k). */
static __device__ __forceinline__ void cu_gather_softmax_row(const float *x, const int32_t *ids, int32_t k, float *w) {
    float m = -INFINITY, s = 0.0f;
    for (int32_t j = 0; j < k; j++) m = fmaxf(m, x[ids[j]]);
    for (int32_t j = 0; j < k; j++) s += w[j] = expf(x[ids[j]] - m);
    for (int32_t j = 0; j < k; j++) w[j] /= s;
}

/* E2M1 by its bits (no table in local memory): exponent field e, mantissa
 * bit m: e > 0 is (1 + m/2) 2^(e-1), e = 0 is m/2. */
static __device__ __forceinline__ float e2m1(uint32_t code) {
    uint32_t e = (code >> 1) & 3, m = code & 1;
    uint32_t bits = e ? ((e + 126) << 23) | (m << 22) : (m ? 0x3f000000u : 0u);
    return __uint_as_float(bits | (code & 8) << 28);
}
static __device__ __forceinline__ float e4m3(uint32_t code) {
    uint32_t e = (code >> 3) & 0xf, m = code & 7;
    if ((code & 0x7f) == 0x7f) return __int_as_float(0x7fc00000);
    float v = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), (int)e - 10);
    return (code & 0x80) ? -v : v;
}
static __device__ __forceinline__ float e8m0(uint32_t e) {
    return __uint_as_float(e == 0 ? 0x00400000u : e << 23);
}

/* A group's scale (and affine bias): w = code_value * scale + bias. */
typedef struct {
    float scale, bias;
} cu_group;

static __device__ __forceinline__ cu_group cu_group_of(const mnv_cu_weight *w, const void *sc, const void *bi,
                                                       int64_t g) {
    cu_group r = {1.0f, 0.0f};
    switch (w->mode) {
    case CU_QAFFINE:
        r.scale = cu_load(sc, w->scale_type, g);
        r.bias = cu_load(bi, w->scale_type, g);
        break;
    case CU_QMXFP4:
    case CU_QMXFP8: r.scale = e8m0(((const uint8_t *)sc)[g]); break;
    default: r.scale = e4m3(((const uint8_t *)sc)[g]) * w->global_scale; break;
    }
    return r;
}

/* The value of a code before scaling (affine: the unsigned integer). */
static __device__ __forceinline__ float cu_code(int32_t mode, uint32_t q) {
    if (mode == CU_QAFFINE) return (float)q;
    if (mode == CU_QMXFP8) return e4m3(q);
    return e2m1(q);
}

/* Element j of a packed row of any bit width. */
static __device__ __forceinline__ uint32_t cu_unpack(const uint32_t *row, int32_t bits, int64_t j) {
    int64_t bit = j * bits;
    int64_t wi = bit >> 5;
    int sh = (int)(bit & 31);
    uint64_t v = row[wi];
    if (sh + bits > 32) v |= (uint64_t)row[wi + 1] << 32;
    return (uint32_t)(v >> sh) & ((1u << bits) - 1u);
}

/* Dequantized element j of row r of expert e. */
static __device__ __forceinline__ float cu_weight_at(const mnv_cu_weight *w, int64_t e, int64_t r, int64_t j) {
    if (w->mode == CU_QNONE) return cu_load(w->w, w->wtype, e * w->we + r * w->ldw + j);
    const uint32_t *row = (const uint32_t *)w->w + e * w->we + r * w->ldw;
    int64_t so = e * w->se + r * w->lds;
    size_t ses = w->mode == CU_QAFFINE ? (w->scale_type == MNV_CU_F32 ? 4 : 2) : 1;
    const void *sc = (const uint8_t *)w->scales + so * ses;
    const void *bi = w->biases ? (const uint8_t *)w->biases + so * ses : NULL;
    cu_group g = cu_group_of(w, sc, bi, j / w->group_size);
    return cu_code(w->mode, cu_unpack(row, w->bits, j)) * g.scale + g.bias;
}

/* Four values of x times inv, rounded to nearest even, as four int8 codes
 * in a word (element 0 the lowest byte); their sum added to *sum. */
static __device__ __forceinline__ uint32_t cu_codes4(float4 v, float inv, int *sum) {
    const int c0 = __float2int_rn(__fmul_rn(v.x, inv)), c1 = __float2int_rn(__fmul_rn(v.y, inv));
    const int c2 = __float2int_rn(__fmul_rn(v.z, inv)), c3 = __float2int_rn(__fmul_rn(v.w, inv));
    *sum += c0 + c1 + c2 + c3;
    return (uint32_t)(c0 & 0xFF) | (uint32_t)(c1 & 0xFF) << 8 | (uint32_t)(c2 & 0xFF) << 16 |
           (uint32_t)(c3 & 0xFF) << 24;
}

/* A group of G floats of x (G a multiple of 16) as the CPU's int8 paths
 * round it (cpu/qmatmul_*.c): dx = max|x| / 127, codes round(x / dx) to
 * nearest even, with IEEE division and products so that the codes are the
 * CPU's. The codes go to q (16-byte aligned); returns dx and the codes' sum
 * in *sum. */
template <int G> static __device__ __forceinline__ float cu_round_group(const float *x, int8_t *q, int *sum) {
    const bool al = ((uintptr_t)x & 15) == 0;
    float am = 0.0f;
#pragma unroll 8
    for (int j = 0; j < G; j += 4) {
        const float4 v = al ? __ldg((const float4 *)(x + j))
                            : make_float4(__ldg(x + j), __ldg(x + j + 1), __ldg(x + j + 2), __ldg(x + j + 3));
        am = fmaxf(am, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
    }
    const float inv = am > 0.0f ? __fdiv_rn(127.0f, am) : 0.0f;
    int total = 0;
#pragma unroll 4
    for (int j = 0; j < G; j += 16) {
        uint32_t p[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const float4 v = al ? __ldg((const float4 *)(x + j + 4 * u))
                                : make_float4(__ldg(x + j + 4 * u), __ldg(x + j + 4 * u + 1),
                                              __ldg(x + j + 4 * u + 2), __ldg(x + j + 4 * u + 3));
            p[u] = cu_codes4(v, inv, &total);
        }
        *(uint4 *)(q + j) = make_uint4(p[0], p[1], p[2], p[3]);
    }
    *sum = total;
    return __fdiv_rn(am, 127.0f);
}

/* The same rounding by G / 16 lanes of a warp together (every lane of the
 * warp calls; a group's lanes are consecutive and start at a multiple of
 * G / 16): lane sub takes x's values 16 sub to 16 sub + 15 and writes
 * their codes at q + 16 sub (16-byte aligned); al: x is 16-byte aligned.
 * A group with !in is neither read nor written. Returns max|x| (dx times
 * 127: dx = __fdiv_rn(max, 127.0f)) to every lane of the group, and the
 * codes' sum in *sum where sum is not NULL. */
template <int G>
static __device__ __forceinline__ float cu_round_lanes(const float *x, bool in, bool al, int sub, int8_t *q,
                                                      int *sum) {
    constexpr int L = G / 16;
    const float *xs = x + 16 * sub;
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++)
        v[u] = !in  ? make_float4(0.f, 0.f, 0.f, 0.f)
               : al ? __ldg((const float4 *)xs + u)
                    : make_float4(__ldg(xs + 4 * u), __ldg(xs + 4 * u + 1), __ldg(xs + 4 * u + 2),
                                  __ldg(xs + 4 * u + 3));
    float am = 0.0f;
#pragma unroll
    for (int u = 0; u < 4; u++)
        am = fmaxf(am, fmaxf(fmaxf(fabsf(v[u].x), fabsf(v[u].y)), fmaxf(fabsf(v[u].z), fabsf(v[u].w))));
#pragma unroll
    for (int o = 1; o < L; o <<= 1) am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, o));
    const float inv = am > 0.0f ? __fdiv_rn(127.0f, am) : 0.0f;
    uint32_t p[4];
    int total = 0;
#pragma unroll
    for (int u = 0; u < 4; u++) p[u] = cu_codes4(v[u], inv, &total);
    if (sum) {
#pragma unroll
        for (int o = 1; o < L; o <<= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
        *sum = total;
    }
    if (in) *((uint4 *)q + sub) = make_uint4(p[0], p[1], p[2], p[3]);
    return am;
}

#endif
