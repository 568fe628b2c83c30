/* The core of the CUDA products of few rows (decode, experts): a thread
 * reads 16-byte chunks of RW weight rows and applies each to MX rows of x,
 * so a chunk of x loaded once serves RW rows and a weight chunk MX rows.
 * Codes are turned into floats with integer tricks (no conversion
 * instructions: those run at a quarter of the FMA rate), summed per chunk,
 * and the chunk's scale (and affine bias, through the chunk's sum of x) is
 * applied once per chunk.
 *
 * Every (weight row, x row) pair is summed in the same order whatever RW,
 * MX, the row's place in a tile or the number of rows of x, so a row's
 * result does not depend on what it is batched with. */
#ifndef MNV_CUDA_MMV_CUH
#define MNV_CUDA_MMV_CUH

#include "backend/cuda/cuda_common.cuh"

/* Chunk layouts: what 16 bytes of a row hold. */
enum { MMV_F32, MMV_BF16, MMV_F16, MMV_A8, MMV_A4, MMV_MX4, MMV_NONE };

template <int F> struct mmv_fmt;
template <> struct mmv_fmt<MMV_F32> { static constexpr int epc = 4; };
template <> struct mmv_fmt<MMV_BF16> { static constexpr int epc = 8; };
template <> struct mmv_fmt<MMV_F16> { static constexpr int epc = 8; };
template <> struct mmv_fmt<MMV_A8> { static constexpr int epc = 16; };
template <> struct mmv_fmt<MMV_A4> { static constexpr int epc = 32; };
template <> struct mmv_fmt<MMV_MX4> { static constexpr int epc = 32; };

static __device__ __forceinline__ uint32_t word_of(const uint4 &q, int i) {
    return i == 0 ? q.x : i == 1 ? q.y : i == 2 ? q.z : q.w;
}

/* 2^23 + b for a byte b, as a float: the byte placed under an exponent
 * of 23 (one byte permute), so that subtracting 2^23 leaves b exactly. */
static __device__ __forceinline__ float magic_byte(uint32_t bytes, int k) {
    return __uint_as_float(__byte_perm(bytes, 0x4B000000u, 0x7540u | (unsigned)k));
}
#define MAGIC 8388608.0f

/* The value of element i of a chunk before its group's scale: the float
 * itself, the affine code, or twice the E2M1 value (the scale takes the
 * half back). i is a constant after unrolling, so the selections fold. */
template <int F> static __device__ __forceinline__ float mmv_code(const uint4 &q, int i) {
    if (F == MMV_F32) return __uint_as_float(word_of(q, i));
    if (F == MMV_BF16) {
        uint32_t w = word_of(q, i >> 1);
        return __uint_as_float(i & 1 ? w & 0xffff0000u : w << 16);
    }
    if (F == MMV_F16) {
        uint32_t w = word_of(q, i >> 1);
        return __half2float(__ushort_as_half((unsigned short)(i & 1 ? w >> 16 : w & 0xffffu)));
    }
    if (F == MMV_A8) return magic_byte(word_of(q, i >> 2), i & 3) - MAGIC;
    uint32_t w = word_of(q, i >> 3);
    int k = i & 7; /* nibble k of the word, element 0 the lowest */
    if (F == MMV_A4) {
        uint32_t nib = k & 1 ? (w >> 4) & 0x0f0f0f0fu : w & 0x0f0f0f0fu;
        return magic_byte(nib, k >> 1) - MAGIC;
    }
    /* MXFP4: magnitudes 2 * |E2M1| = 0 1 2 3 4 6 8 12 from a byte table by
     * the codes' low three bits (four at a time), the sign from bit 3 */
    uint32_t sel = k < 4 ? w & 0x7777u : (w >> 16) & 0x7777u;
    uint32_t mags = __byte_perm(0x03020100u, 0x0c080604u, sel);
    float v = magic_byte(mags, k & 3) - MAGIC;
    return __uint_as_float(__float_as_uint(v) | ((w << (28 - 4 * k)) & 0x80000000u));
}

/* Scale and bias of the group holding element j of a packed row whose
 * scales start at sc (biases at bi). */
template <int F>
static __device__ __forceinline__ void mmv_group(const mnv_cu_weight &w, const void *sc, const void *bi, int64_t j,
                                                 float *s, float *b) {
    int64_t g = j / w.group_size;
    if (F == MMV_A8 || F == MMV_A4) {
        *s = cu_load(sc, w.scale_type, g);
        *b = cu_load(bi, w.scale_type, g);
    } else {
        *s = 0.5f * e8m0(((const uint8_t *)sc)[g]);
        *b = 0.0f;
    }
}

/* One row to read: its chunks, and (packed) its scales and biases. */
typedef struct {
    const uint4 *q;
    const void *sc, *bi;
} mmv_row;

static __device__ __forceinline__ mmv_row mmv_row_of(const mnv_cu_weight &w, int64_t e, int64_t n) {
    mmv_row r;
    if (w.mode == CU_QNONE) {
        int es = w.wtype == MNV_CU_F32 ? 4 : 2;
        r.q = (const uint4 *)((const uint8_t *)w.w + (e * w.we + n * w.ldw) * es);
        r.sc = r.bi = NULL;
        return r;
    }
    r.q = (const uint4 *)((const uint32_t *)w.w + e * w.we + n * w.ldw);
    size_t ses = w.mode == CU_QAFFINE ? (w.scale_type == MNV_CU_F32 ? 4 : 2) : 1;
    int64_t so = e * w.se + n * w.lds;
    r.sc = (const uint8_t *)w.scales + so * ses;
    r.bi = w.biases ? (const uint8_t *)w.biases + so * ses : NULL;
    return r;
}

/* acc[r][c] += this thread's share of dot(row r, x row c): chunks t0,
 * t0 + step, ... of nchunks. xs: MX rows of x, 16-byte aligned. */
template <int F, int RW, int MX>
static __device__ __forceinline__ void mmv_accum(const mnv_cu_weight &w, const mmv_row *rows, const float *const *xs,
                                                 int64_t nchunks, int64_t t0, int64_t step, float (*acc)[MX]) {
    constexpr int E = mmv_fmt<F>::epc;
    constexpr bool grouped = F == MMV_A8 || F == MMV_A4 || F == MMV_MX4;
    constexpr bool affine = F == MMV_A8 || F == MMV_A4;
    uint4 q[RW], qn[RW];
    if (t0 < nchunks) {
#pragma unroll
        for (int r = 0; r < RW; r++) q[r] = __ldg(rows[r].q + t0);
    }
    for (int64_t qi = t0; qi < nchunks; qi += step) {
        if (qi + step < nchunks) { /* the next chunks on their way while these are summed */
#pragma unroll
            for (int r = 0; r < RW; r++) qn[r] = __ldg(rows[r].q + qi + step);
        }
        float part[RW][MX], sx[MX];
#pragma unroll
        for (int c = 0; c < MX; c++) {
            sx[c] = 0.0f;
#pragma unroll
            for (int r = 0; r < RW; r++) part[r][c] = 0.0f;
        }
#pragma unroll
        for (int j4 = 0; j4 < E / 4; j4++) {
            float4 xv[MX];
#pragma unroll
            for (int c = 0; c < MX; c++) xv[c] = __ldg((const float4 *)xs[c] + qi * (E / 4) + j4);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float v[RW];
#pragma unroll
                for (int r = 0; r < RW; r++) v[r] = mmv_code<F>(q[r], 4 * j4 + e);
#pragma unroll
                for (int c = 0; c < MX; c++) {
                    float xe = e == 0 ? xv[c].x : e == 1 ? xv[c].y : e == 2 ? xv[c].z : xv[c].w;
                    if (affine) sx[c] += xe;
#pragma unroll
                    for (int r = 0; r < RW; r++) {
                        if (grouped)
                            part[r][c] = fmaf(v[r], xe, part[r][c]);
                        else
                            acc[r][c] = fmaf(v[r], xe, acc[r][c]);
                    }
                }
            }
        }
        if (grouped) {
#pragma unroll
            for (int r = 0; r < RW; r++) {
                float s, b;
                mmv_group<F>(w, rows[r].sc, rows[r].bi, qi * E, &s, &b);
#pragma unroll
                for (int c = 0; c < MX; c++) {
                    acc[r][c] = fmaf(s, part[r][c], acc[r][c]);
                    if (affine) acc[r][c] = fmaf(b, sx[c], acc[r][c]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < RW; r++) q[r] = qn[r];
    }
}

/* The layout a weight's rows are read in, or MMV_NONE when its chunks do
 * not fit (rows not 16-byte aligned, a group shorter than a chunk, other
 * bit widths): those take the element-wise path. */
static inline int mmv_layout(const mnv_cu_weight *w, int64_t k) {
    if (w->mode == CU_QNONE) {
        int es = w->wtype == MNV_CU_F32 ? 4 : 2;
        if (k % (16 / es) || (w->ldw * es) % 16 || ((uintptr_t)w->w & 15) || (w->we * es) % 16) return MMV_NONE;
        return w->wtype == MNV_CU_F32 ? MMV_F32 : w->wtype == MNV_CU_BF16 ? MMV_BF16 : MMV_F16;
    }
    if ((w->ldw % 4) || (w->we % 4) || ((uintptr_t)w->w & 15)) return MMV_NONE;
    /* k whole chunks: the kernels read k / epc of them (a row's tail would be left out) */
    if (w->mode == CU_QAFFINE && w->bits == 8 && w->group_size % 16 == 0 && k % 16 == 0) return MMV_A8;
    if (w->mode == CU_QAFFINE && w->bits == 4 && w->group_size % 32 == 0 && k % 32 == 0) return MMV_A4;
    if (w->mode == CU_QMXFP4 && w->group_size % 32 == 0 && k % 32 == 0) return MMV_MX4;
    return MMV_NONE;
}

/* Products of one x (q, k and v) that the int8 kernels take as segments
 * of one launch: 8-bit affine weights of one group size G and scale type,
 * with biases, 16-byte rows, one x, m and k. */
static inline int mmv_a8_segs(const mnv_cu_matmul_args *a, int n, int G) {
    for (int i = 0; i < n; i++) {
        const mnv_cu_weight *v = &a[i].w;
        if (v->mode != CU_QAFFINE || v->bits != 8 || v->group_size != G || v->scale_type != a[0].w.scale_type ||
            !v->biases || mmv_layout(v, a[i].k) != MMV_A8 || a[i].x != a[0].x || a[i].ldx != a[0].ldx ||
            a[i].m != a[0].m || a[i].k != a[0].k || a[i].n < 1)
            return 0;
    }
    return 1;
}

/* mma.sync m16n8k32, unsigned A (8-bit affine codes as stored), signed B (x's int8 codes). */
static __device__ __forceinline__ void mma_u8s8(int *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif
