/* Host CPU detection (once, thread-safe) and the level cap. */
#include "backend/cpu/cpu_isa.h"
#include "core/core.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

static const char *const NAMES[MNV_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon", "neon-dot"};

static bool host_level[MNV_ISA_COUNT];
static bool host_feat[MNV_CPU_FEAT_COUNT];
static mnv_isa env_cap = MNV_ISA_COUNT; /* MNV_ISA_COUNT: no cap */
static _Atomic int test_cap = MNV_ISA_COUNT;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) || defined(_M_X64)
/* XCR0: the OS saves the YMM (bits 1-2) and, for AVX-512, opmask/ZMM state (bits 5-7). */
static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!(osxsave && avx)) return;
    const unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 6) != 6) return;
    unsigned b7 = 0, c7 = 0, d7 = 0, a7 = 0;
    __cpuid_count(7, 0, a7, b7, c7, d7);
    const bool avx2 = b7 & (1u << 5);
    host_level[MNV_ISA_AVX2] = avx2 && fma && f16c;
    const bool zmm = (xcr0 & 0xe6) == 0xe6;
    const bool f = b7 & (1u << 16), dq = b7 & (1u << 17), bw = b7 & (1u << 30), vl = b7 & (1u << 31);
    host_level[MNV_ISA_AVX512] = host_level[MNV_ISA_AVX2] && zmm && f && dq && bw && vl;
    if (host_level[MNV_ISA_AVX512]) {
        host_feat[MNV_CPU_AVX512_VNNI] = c7 & (1u << 11);
        unsigned a71 = 0, b71 = 0, c71 = 0, d71 = 0;
        __cpuid_count(7, 1, a71, b71, c71, d71);
        host_feat[MNV_CPU_AVX512_BF16] = a71 & (1u << 5);
    }
}
#elif defined(__aarch64__)
static void detect(void) {
    host_level[MNV_ISA_NEON] = true; /* Advanced SIMD is part of AArch64 */
#if defined(__linux__)
    const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    host_level[MNV_ISA_NEON_DOT] = hw & HWCAP_ASIMDDP;
    host_feat[MNV_CPU_NEON_I8MM] = hw2 & HWCAP2_I8MM;
#elif defined(__APPLE__) && defined(__ARM_FEATURE_DOTPROD)
    host_level[MNV_ISA_NEON_DOT] = true; /* every Apple Silicon core has it */
#endif
}
#else
static void detect(void) {}
#endif

static void init(void) {
    host_level[MNV_ISA_SCALAR] = true;
    detect();
    const char *env = getenv("MINERVA_CPU");
    if (env && *env) {
        mnv_isa cap;
        if (mnv__isa_parse(env, &cap))
            env_cap = cap;
        else
            mnv__log(MNV_LOG_WARN, "MINERVA_CPU=%s is not a known level (scalar, avx2, avx512, neon, "
                                   "neon-dot); ignored", env);
    }
}

/* Rank within an architecture's chain: a cap of another architecture's level
 * only keeps scalar (MINERVA_CPU=avx2 on ARM means "no NEON"). */
static int rank(mnv_isa l) {
    switch (l) {
    case MNV_ISA_SCALAR: return 0;
    case MNV_ISA_AVX2: case MNV_ISA_NEON: return 1;
    default: return 2;
    }
}
static bool x86(mnv_isa l) { return l == MNV_ISA_AVX2 || l == MNV_ISA_AVX512; }

static bool under_cap(mnv_isa l, mnv_isa cap) {
    if (cap == MNV_ISA_COUNT || l == MNV_ISA_SCALAR) return true;
    if (cap == MNV_ISA_SCALAR || x86(l) != x86(cap)) return false;
    return rank(l) <= rank(cap);
}

bool mnv__isa_host(mnv_isa level) {
    pthread_once(&once, init);
    return level >= 0 && level < MNV_ISA_COUNT && host_level[level];
}

bool mnv__isa_ok(mnv_isa level) {
    if (!mnv__isa_host(level)) return false;
    const mnv_isa tc = (mnv_isa)atomic_load_explicit(&test_cap, memory_order_relaxed);
    return under_cap(level, env_cap) && under_cap(level, tc);
}

bool mnv__cpu_has(mnv_cpu_feat f) {
    pthread_once(&once, init);
    return f >= 0 && f < MNV_CPU_FEAT_COUNT && host_feat[f];
}

mnv_isa mnv__isa_best(void) {
    for (int l = MNV_ISA_COUNT - 1; l > 0; l--)
        if (mnv__isa_ok((mnv_isa)l)) {
            /* the top of a chain wins over the chain's lower levels */
            return (mnv_isa)l;
        }
    return MNV_ISA_SCALAR;
}

const char *mnv__isa_name(mnv_isa level) {
    return level >= 0 && level < MNV_ISA_COUNT ? NAMES[level] : "?";
}

bool mnv__isa_parse(const char *name, mnv_isa *out) {
    for (int l = 0; l < MNV_ISA_COUNT; l++)
        if (strcmp(name, NAMES[l]) == 0) {
            *out = (mnv_isa)l;
            return true;
        }
    return false;
}

void mnv__isa_set_cap(mnv_isa cap) {
    pthread_once(&once, init);
    atomic_store(&test_cap, (int)cap);
}
