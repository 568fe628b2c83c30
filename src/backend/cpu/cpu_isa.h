/* The host CPU's instruction-set levels, detected once, and the cap that
 * selects a lower one (MINERVA_CPU=scalar|avx2|avx512|neon|neon-dot, read
 * once at first use, or mnv__isa_set_cap from a test). Every kernel table of
 * the CPU backend lists its implementations with the level each needs and
 * runs the first one mnv__isa_ok accepts, so one override moves every kernel
 * to the same path, and a machine can test every path below its own. */
#ifndef MNV_CPU_ISA_H
#define MNV_CPU_ISA_H

#include <stdbool.h>

/* Levels of one architecture are ordered: each includes the ones before it. */
typedef enum {
    MNV_ISA_SCALAR = 0, /* portable C, any host */
    MNV_ISA_AVX2,       /* x86-64: AVX2 + FMA + F16C */
    MNV_ISA_AVX512,     /* x86-64: + AVX-512 F, BW, VL, DQ */
    MNV_ISA_NEON,       /* AArch64: Advanced SIMD (always present) */
    MNV_ISA_NEON_DOT,   /* AArch64: + the dot-product extension (SDOT/UDOT) */
    MNV_ISA_COUNT
} mnv_isa;

/* Optional features inside a level (an implementation may need one more). */
typedef enum {
    MNV_CPU_AVX512_VNNI,
    MNV_CPU_AVX512_BF16,
    MNV_CPU_NEON_I8MM,
    MNV_CPU_FEAT_COUNT
} mnv_cpu_feat;

/* The host has this level (all of its features), ignoring the cap. */
bool mnv__isa_host(mnv_isa level);
/* The host has this level and the cap allows it: what kernel tables ask. */
bool mnv__isa_ok(mnv_isa level);
/* The host has this optional feature (ignoring the cap). */
bool mnv__cpu_has(mnv_cpu_feat f);
/* The highest level mnv__isa_ok accepts (SCALAR at worst). */
mnv_isa mnv__isa_best(void);
/* "scalar", "avx2", "avx512", "neon", "neon-dot". */
const char *mnv__isa_name(mnv_isa level);
/* Parse a level name; false if unknown. */
bool mnv__isa_parse(const char *name, mnv_isa *out);
/* Cap the levels kernels may use (tests run every path the host has this
 * way); MNV_ISA_COUNT restores the environment's cap. Not for use while a
 * graph runs on other threads. */
void mnv__isa_set_cap(mnv_isa cap);

/* One row of a kernel table as tests and the info query see it. */
typedef struct {
    const char *name; /* "avx2", "avx512-vnni", ... */
    mnv_isa isa;      /* the level it needs */
    bool host;        /* the host has that level and any optional feature it needs (cap ignored) */
    bool int8;        /* rounds activations to int8 (quantized products): not exact */
} mnv_cpu_impl_desc;

#endif
