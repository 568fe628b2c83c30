/* Core: status names, error messages, dtype names and sizes, half-precision
 * conversions, the thread pool and its barrier. */
#include <stdatomic.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/backend.h"
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
    _Atomic int bad;
    int slots[64];
} pool_test;

/* Each round every thread adds 1, meets at the barrier, and checks that all
 * increments of the round are visible. */
static void pool_task(void *arg, int ith, int nth) {
    pool_test *p = arg;
    for (int r = 0; r < p->rounds; r++) {
        atomic_fetch_add(&p->counter, 1);
        mnv_threadpool_barrier(p->tp);
        if (atomic_load(&p->counter) < (r + 1) * nth) atomic_store(&p->bad, 1);
        mnv_threadpool_barrier(p->tp);
    }
    p->slots[ith]++;
}

/* Pools of more threads than CPUs (the pool honours the count; the backend
 * clamps it): every wait must fall back to sleeping and still be correct. */
static void test_threadpool(void) {
    for (int n = 1; n <= 4; n++) {
        pool_test p = {0};
        CHECK(mnv_threadpool_create(n, &p.tp) == MNV_OK);
        CHECK(mnv_threadpool_size(p.tp) == n);
        mnv_threadpool_set_adaptive(p.tp, false); /* every thread in every run */
        p.rounds = 200;
        for (int run = 0; run < 10; run++) mnv_threadpool_run(p.tp, pool_task, &p);
        CHECKF(!atomic_load(&p.bad), "barrier let a thread through early (%d threads)", n);
        CHECK(atomic_load(&p.counter) == 10 * 200 * n);
        for (int i = 0; i < n; i++) CHECK(p.slots[i] == 10);
        mnv_threadpool_free(p.tp);
    }
}

/* Runs separated by pauses longer than the workers' spin: they sleep and
 * must be woken for the next run. */
static void test_threadpool_sleep(void) {
    pool_test p = {0};
    CHECK(mnv_threadpool_create(2, &p.tp) == MNV_OK);
    mnv_threadpool_set_adaptive(p.tp, false);
    p.rounds = 3;
    for (int run = 0; run < 3; run++) {
        struct timespec ts = {0, 30 * 1000 * 1000};
        nanosleep(&ts, NULL);
        mnv_threadpool_run(p.tp, pool_task, &p);
    }
    CHECK(atomic_load(&p.counter) == 3 * 3 * 2 && p.slots[0] == 3 && p.slots[1] == 3);
    mnv_threadpool_free(p.tp);
}

/* Adaptive width (the default): each run takes 1..n threads, always thread
 * 0 and threads 0..nth-1, and its barriers count only those. */
typedef struct {
    mnv_threadpool *tp;
    _Atomic int counter, bad, width_sum;
    int slots[8];
} adaptive_test;

static void adaptive_task(void *arg, int ith, int nth) {
    adaptive_test *p = arg;
    if (nth < 1 || nth > mnv_threadpool_size(p->tp) || ith >= nth) atomic_store(&p->bad, 1);
    for (int r = 0; r < 20; r++) {
        atomic_fetch_add(&p->counter, 1);
        mnv_threadpool_barrier(p->tp);
        if (atomic_load(&p->counter) < (r + 1) * nth) atomic_store(&p->bad, 1);
        mnv_threadpool_barrier(p->tp);
    }
    if (ith == 0) atomic_fetch_add(&p->width_sum, nth);
    p->slots[ith]++;
}

static void test_threadpool_adaptive(void) {
    adaptive_test p = {0};
    CHECK(mnv_threadpool_create(3, &p.tp) == MNV_OK);
    for (int run = 0; run < 50; run++) mnv_threadpool_run(p.tp, adaptive_task, &p);
    CHECK(!atomic_load(&p.bad));
    CHECK(p.slots[0] == 50);
    CHECK(atomic_load(&p.counter) == 20 * atomic_load(&p.width_sum));
    CHECK(p.slots[0] + p.slots[1] + p.slots[2] == atomic_load(&p.width_sum));
    mnv_threadpool_free(p.tp);
}

/* Thread counts: the default is the CPUs this process may use (at least
 * one, at most the online CPUs); more is clamped to it. */
static void test_thread_counts(void) {
    const int n = mnv__cpu_count();
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    CHECKF(n >= 1 && (online <= 0 || n <= online), "cpu count %d of %ld online", n, online);
    CHECK(mnv__threads_clamp(0) == n && mnv__threads_clamp(-3) == n);
    CHECK(mnv__threads_clamp(1) == 1 && mnv__threads_clamp(n) == n);
    CHECK(mnv__threads_clamp(n + 1) == n && mnv__threads_clamp(1000) == n);
    mnv_backend_params bp = {.name = "cpu", .n_threads = 1000};
    mnv_backend *be = NULL;
    CHECK(mnv_backend_create(&bp, &be) == MNV_OK);
    CHECK(be && be->iface->n_threads(be) == n);
    mnv_backend_free(be);
    mnv_cpu_info ci;
    CHECK(mnv_cpu_get_info(&ci) == MNV_OK && ci.n_cpus == n && ci.level && ci.matmul && ci.qmatmul);
    CHECK(mnv_cpu_get_info(NULL) == MNV_ERR_INVALID_ARG);
}

/* Weak neighbours: a runnable thread niced 10 or more above us, or under
 * SCHED_IDLE, is not counted as taking a CPU from an adaptive run. */
static void test_weak_stat_lines(void) {
    /* fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     * cutime cstime priority nice threads ...; policy is field 41 */
    const char *head = "4242 (cc1 (x) y) ";
    char line[512];
    const struct {
        char state;
        int nice, policy;
        bool weak;
    } cases[] = {{'R', 19, 0, true}, {'R', 10, 0, true}, {'R', 9, 0, false}, {'S', 19, 0, false},
                 {'R', 0, 5, true},  {'R', 0, 0, false}, {'D', 0, 5, false}, {'R', -5, 3, false}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int o = snprintf(line, sizeof line, "%s%c 1 1 1 0 -1 4194304 10 0 0 0 5 6 0 0 %d %d 1 0 99", head,
                         cases[c].state, 20 + cases[c].nice, cases[c].nice);
        for (int f = 23; f <= 40; f++) o += snprintf(line + o, sizeof line - (size_t)o, " %d", f);
        snprintf(line + o, sizeof line - (size_t)o, " %d 0 0\n", cases[c].policy);
        CHECKF(mnv__stat_weak_runnable(line, 0) == cases[c].weak, "case %zu: %s", c, line);
    }
    /* relative to our own nice; a line cut before the nice field is not weak */
    snprintf(line, sizeof line, "%sR 1 1 1 0 -1 4194304 10 0 0 0 5 6 0 0 39 19 1", head);
    CHECK(mnv__stat_weak_runnable(line, 0) && mnv__stat_weak_runnable(line, 9) && !mnv__stat_weak_runnable(line, 10));
    CHECK(!mnv__stat_weak_runnable("4242 (cc1) R 1 1 1", 0));
    CHECK(!mnv__stat_weak_runnable("4242 cc1 R", 0) && !mnv__stat_weak_runnable("", 0));
}

/* A spinning child: at nice 19 it is weak (for a test not itself niced), at
 * our own nice it is not. */
static pid_t spin_child(int nice_by) {
    const pid_t pid = fork();
    if (pid == 0) {
        if (nice_by) (void)!nice(nice_by);
        alarm(10); /* never outlive the test */
        for (volatile unsigned long i = 0;; i++) {}
    }
    return pid;
}

static bool child_weak(pid_t pid, int our_nice, int tries_max) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    for (int tries = 0; tries < tries_max; tries++) { /* until it has niced itself and runs */
        FILE *f = fopen(path, "r");
        if (!f) return false;
        const bool ok = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        if (ok && mnv__stat_weak_runnable(buf, our_nice)) return true;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void test_weak_children(void) {
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) {
        printf("  weak neighbours: no /proc here, skipped\n");
        return;
    }
    fclose(f);
    const int our_nice = getpriority(PRIO_PROCESS, 0);
    const pid_t niced = spin_child(19), plain = spin_child(0);
    CHECK(niced > 0 && plain > 0);
    if (our_nice + 10 <= 19) {
        CHECKF(child_weak(niced, our_nice, 200), "a spinning child at nice 19 is weak beside us at %d", our_nice);
        CHECK(mnv__weak_runnable() >= 1);
    } else {
        printf("  weak neighbours: this test runs at nice %d, the niced child cannot be weaker\n", our_nice);
    }
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(!child_weak(plain, our_nice, 1));
    kill(niced, SIGKILL);
    kill(plain, SIGKILL);
    waitpid(niced, NULL, 0);
    waitpid(plain, NULL, 0);
}

int main(void) {
    t_seed();
    test_thread_counts();
    test_threadpool_sleep();
    test_threadpool_adaptive();
    test_weak_stat_lines();
    test_weak_children();
    test_status();
    test_dtypes();
    test_halves();
    test_threadpool();
    return t_done();
}
