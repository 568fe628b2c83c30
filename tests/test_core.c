/* Core: status names, error messages, dtype names and sizes, half-precision
 * conversions, the thread pool and its barrier. */
#include <stdatomic.h>

#include "core/core.h"
#include "core/threadpool.h"
#include "test.h"

static void test_status(void) {
    CHECK(strcmp(mnv_status_str(MNV_OK), "ok") == 0);
    for (int s = 0; s < MNV_STATUS_COUNT; s++) CHECK(mnv_status_str((mnv_status)s)[0] != 0);
    CHECK(strcmp(mnv_status_str((mnv_status)999), "unknown status") == 0);
    CHECK(mnv_set_error(MNV_ERR_FORMAT, "tensor '%s': bad", "x") == MNV_ERR_FORMAT);
    CHECK(strcmp(mnv_last_error(), "tensor 'x': bad") == 0);
    mnv_error_prefix("%s", "model.safetensors");
    CHECK(strcmp(mnv_last_error(), "model.safetensors: tensor 'x': bad") == 0);
}

static void test_dtypes(void) {
    mnv_dtype t;
    for (int i = 0; i < MNV_DTYPE_COUNT; i++) {
        CHECK(mnv_dtype_from_name(mnv_dtype_name((mnv_dtype)i), &t) && t == (mnv_dtype)i);
        CHECK(mnv_dtype_size((mnv_dtype)i) > 0);
    }
    CHECK(!mnv_dtype_from_name("F128", &t));
    CHECK(mnv_dtype_size(MNV_DTYPE_BF16) == 2 && mnv_dtype_size(MNV_DTYPE_F32) == 4);
}

/* f16: every one of the 65536 patterns decodes and re-encodes to itself
 * (NaNs stay NaN); f32 -> f16 rounds to nearest even against a reference. */
static void test_halves(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = mnv_f16_to_f32((uint16_t)h);
        uint16_t back = mnv_f32_to_f16(f);
        if (isnan(f) ? !((back & 0x7c00) == 0x7c00 && (back & 0x3ff)) : back != h) bad++;
    }
    CHECKF(bad == 0, "%d f16 patterns do not round-trip", bad);
    CHECK(mnv_f16_to_f32(0x3c00) == 1.0f && mnv_f16_to_f32(0xc000) == -2.0f);
    CHECK(mnv_f16_to_f32(0x0001) == 5.960464477539063e-08f); /* smallest subnormal */
    CHECK(mnv_f32_to_f16(65520.0f) == 0x7c00);                /* rounds up to infinity */
    CHECK(mnv_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);      /* tie: to even */
    CHECK(mnv_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    bad = 0;
    for (int i = 0; i < 200000; i++) {
        float f = t_randf() * 70000.0f * (i % 7 == 0 ? 1e-6f : 1.0f);
        uint16_t h = mnv_f32_to_f16(f);
        float r = mnv_f16_to_f32(h);
        /* nearest: neither neighbour is closer */
        float up = mnv_f16_to_f32((uint16_t)(h + 1)), dn = mnv_f16_to_f32((uint16_t)(h - 1));
        if (isfinite(r) && (h & 0x7fff) != 0 && (h & 0x7fff) < 0x7bff &&
            (fabsf(up - f) < fabsf(r - f) || fabsf(dn - f) < fabsf(r - f)))
            bad++;
    }
    CHECKF(bad == 0, "%d f32->f16 roundings are not nearest", bad);
    /* bf16: round to nearest even, NaN preserved */
    CHECK(mnv_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(mnv_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(mnv_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80); /* tie to even */
    CHECK(mnv_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82);
    CHECK(isnan(mnv_bf16_to_f32(mnv_f32_to_bf16(NAN))));
}

typedef struct {
    mnv_threadpool *tp;
    _Atomic int counter;
    int rounds;
    int bad;
    int slots[64];
} pool_test;

/* Each round every thread adds 1, meets at the barrier, and checks that all
 * increments of the round are visible. */
static void pool_task(void *arg, int ith, int nth) {
    pool_test *p = arg;
    for (int r = 0; r < p->rounds; r++) {
        atomic_fetch_add(&p->counter, 1);
        mnv_threadpool_barrier(p->tp);
        if (atomic_load(&p->counter) < (r + 1) * nth) p->bad = 1;
        mnv_threadpool_barrier(p->tp);
    }
    p->slots[ith]++;
}

static void test_threadpool(void) {
    for (int n = 1; n <= 4; n++) {
        pool_test p = {0};
        CHECK(mnv_threadpool_create(n, &p.tp) == MNV_OK);
        CHECK(mnv_threadpool_size(p.tp) == n);
        p.rounds = 200;
        for (int run = 0; run < 10; run++) mnv_threadpool_run(p.tp, pool_task, &p);
        CHECKF(!p.bad, "barrier let a thread through early (%d threads)", n);
        CHECK(atomic_load(&p.counter) == 10 * 200 * n);
        for (int i = 0; i < n; i++) CHECK(p.slots[i] == 10);
        mnv_threadpool_free(p.tp);
    }
}

int main(void) {
    t_seed();
    test_status();
    test_dtypes();
    test_halves();
    test_threadpool();
    return t_done();
}
