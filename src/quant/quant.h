/* MLX quantization formats as data: affine (2, 3, 4, 5, 6, 8 bits; groups of
 * 32, 64, 128), mxfp4, mxfp8 and nvfp4. Layout of one quantized matrix
 * (n rows of k weights), exactly as MLX stores it:
 *   packed: U32 (n, k*bits/32), each row one LSB-first bit stream
 *           (element j occupies bits [j*bits, (j+1)*bits) of the row's
 *           little-endian bytes; for 2/4/8 bits no element straddles a word)
 *   scales: (n, k/group) - affine: F32/F16/BF16; mxfp4/mxfp8: U8 E8M0;
 *           nvfp4: U8 E4M3
 *   biases: (n, k/group) - affine only, same dtype as scales
 * Dequantization:
 *   affine: w = scale * q + bias          (q unsigned, scales may be negative)
 *   mxfp4:  w = e2m1(q) * 2^(e - 127)     (e = 0 means 2^-127)
 *   mxfp8:  w = e4m3(q) * 2^(e - 127)
 *   nvfp4:  w = e2m1(q) * e4m3(s) * global (global = 1 without a global scale)
 */
#ifndef MNV_QUANT_H
#define MNV_QUANT_H

#include "core/core.h"

typedef enum {
    MNV_QMODE_NONE = 0,
    MNV_QMODE_AFFINE,
    MNV_QMODE_MXFP4,
    MNV_QMODE_MXFP8,
    MNV_QMODE_NVFP4,
    MNV_QMODE_COUNT
} mnv_qmode;

typedef struct {
    mnv_qmode mode;
    int32_t bits;
    int32_t group_size;
    mnv_dtype scale_dtype;  /* affine: F32/F16/BF16; fp modes: U8 */
} mnv_qformat;

/* "affine", "mxfp4", ... ; parse returns false for unknown names. */
const char *mnv_qmode_name(mnv_qmode m);
bool mnv_qmode_from_name(const char *name, mnv_qmode *out);
/* The mode's default bits and group size (affine 4/64, mxfp4 4/32, mxfp8 8/32, nvfp4 4/16). */
void mnv_qmode_defaults(mnv_qmode m, int32_t *bits, int32_t *group_size);
/* Valid combination of mode, bits, group size and scale dtype? On failure
 * returns MNV_ERR_FORMAT / MNV_ERR_UNSUPPORTED with a message naming `what`
 * (e.g. the tensor). */
mnv_status mnv_qformat_check(const mnv_qformat *f, const char *what);
/* U32 words per packed row of k weights; scale columns per row. */
int64_t mnv_qformat_row_words(const mnv_qformat *f, int64_t k);
int64_t mnv_qformat_row_groups(const mnv_qformat *f, int64_t k);

/* Scalar element codecs. */
float mnv_e2m1_to_f32(uint8_t code);  /* low 4 bits */
float mnv_e4m3_to_f32(uint8_t code);  /* "fn": bias 7, max 448, 0x7f/0xff NaN */
float mnv_e8m0_to_f32(uint8_t e);     /* 2^(e-127); e = 0 gives 2^-127 */
uint8_t mnv_f32_to_e4m3(float v);     /* round to nearest even, saturating at 448 */

/* Extract element j of a packed row (any bits). */
uint32_t mnv_qunpack(const uint32_t *row, int32_t bits, int64_t j);
/* Pack k codes (each < 2^bits) into a row of mnv_qformat_row_words words. */
void mnv_qpack_row(const uint8_t *codes, int64_t k, int32_t bits, uint32_t *row);

/* Dequantize one row of k weights to f32. scales/biases point at the row's
 * first group (biases NULL except for affine). global_scale: nvfp4 only
 * (1 when absent). */
void mnv_dequant_row(const mnv_qformat *f, const uint32_t *row, const void *scales, const void *biases,
                     float global_scale, float *out, int64_t k);

/* Quantize one row of k f32 weights with MLX's algorithm (affine: the
 * zero-exact scale/bias choice with rint; mxfp*: round(log2(amax/max)) E8M0
 * exponents; nvfp4: E4M3 scales). Writes the packed row, the row's scales
 * and (affine) biases in f->scale_dtype. */
void mnv_quantize_row(const mnv_qformat *f, const float *w, int64_t k, uint32_t *row, void *scales, void *biases,
                      float global_scale);

#endif
