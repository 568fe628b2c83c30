/* Persistent thread pool: workers that stay hot while cores are free and get
 * out of the way when they are not.
 *
 * Every wait (a worker for the next run, a thread at a barrier, the caller
 * for the end of a run) watches one 32-bit word and goes through three
 * stages: spin with pause; once someone waits for a core (the machine has
 * more runnable threads than CPUs), give the core away with one sched_yield,
 * then sleep on the word (a futex on Linux, a condition variable elsewhere).
 * While CPUs are free the spin lasts up to SPIN_HOT_NS, which covers a decode
 * step and the gap between steps: on virtual machines whose halted vCPUs take
 * milliseconds to wake, a sleeping worker would cost that much per node.
 * Where the run queue cannot be read, or says nothing of the CPUs this
 * process may use (it may use only some), the spin is short (SPIN_BLIND_NS).
 *
 * A run also takes only as many threads as the CPUs other processes leave
 * free (run_width): threads in lockstep beside a busy neighbour would wait
 * for each other's time slices at every node. Neighbours far below our
 * priority (niced 10 or more above us, or SCHED_IDLE) do not count: the
 * scheduler gives them under a tenth of a core beside each of our threads.
 *
 * Wakers store the new word value, then look at the word's sleeper count;
 * sleepers count themselves in before the kernel re-checks the word. Both
 * are sequentially consistent, so a wake-up is never missed. */
#include "core/threadpool.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

enum {
    WIDTH_BITS = 12,           /* the generation word: run counter << WIDTH_BITS | threads in the run */
    WIDTH_MASK = (1 << WIDTH_BITS) - 1,
    SPIN_FIRST = 256,          /* pauses before the first look at the clock */
    SPIN_BATCH = 64,           /* pauses between looks at the clock */
    CHECK_NS = 50 * 1000,      /* how often a spinner re-reads the run queue */
};
static const int64_t SPIN_HOT_NS = 10 * 1000 * 1000; /* CPUs free: spin up to 10 ms, then sleep */
static const int64_t SPIN_BLIND_NS = 200 * 1000;     /* run queue unknown: 0.2 ms */
static const int64_t WEAK_SCAN_NS = 500 * 1000 * 1000; /* how often the weak neighbours are counted */

/* A word threads wait on, with its sleepers, on a cache line of its own. */
typedef struct {
    _Alignas(64) _Atomic uint32_t v;
    _Atomic int sleepers;
} tp_word;

struct mnv_threadpool {
    int n;
    int n_run;     /* threads taking part in the current run (1..n) */
    bool adaptive; /* run_width() may use fewer than n */
    pthread_t *threads;
    mnv_task_fn fn;
    void *arg;
    tp_word generation; /* bumped to start a run */
    tp_word finished;   /* set to the generation when the last worker is done */
    tp_word bar_phase;  /* bumped when the last thread reaches a barrier */
    _Alignas(64) _Atomic int done;
    _Alignas(64) _Atomic int bar_count;
    _Atomic int stop;
    int n_online;   /* CPUs of the machine, against the run queue's length */
    int loadavg_fd; /* /proc/loadavg, or -1 */
    int64_t spin_ns; /* how long a wait spins while no one waits for a core */
    /* the last look at the run queue (contended()) */
    _Atomic int64_t probe_t;
    _Atomic int probing, busy;
    /* runnable threads of other processes far below our priority, counted
     * by run_width() at most every WEAK_SCAN_NS (-1: never counted) */
    _Atomic int weak;
    int64_t weak_t;
    int others_prev; /* run_width()'s count of others at the previous run */
#if !defined(__linux__)
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* More runnable threads on the machine than CPUs: someone waits for a core.
 * The fourth field of /proc/loadavg is "running/total", read at this instant. */
static int runnable_now(mnv_threadpool *tp) {
    char buf[128];
    ssize_t len = pread(tp->loadavg_fd, buf, sizeof buf - 1, 0);
    if (len <= 0) return -1;
    buf[len] = 0;
    const char *p = buf;
    for (int field = 0; field < 3 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p ? atoi(p) : -1;
}

static bool machine_busy(mnv_threadpool *tp) {
    const int r = runnable_now(tp);
    return r < 0 || r - MNV_MAX(0, atomic_load_explicit(&tp->weak, memory_order_relaxed)) > tp->n_online;
}

/* Someone waits for a core we hold: the machine has more runnable threads
 * than CPUs. One spinner looks at a time, at most every CHECK_NS; the
 * others read its verdict. */
static bool contended(mnv_threadpool *tp, int64_t now) {
    const int64_t last = atomic_load_explicit(&tp->probe_t, memory_order_relaxed);
    if (now - last < CHECK_NS || atomic_exchange_explicit(&tp->probing, 1, memory_order_acquire))
        return atomic_load_explicit(&tp->busy, memory_order_relaxed);
    const bool busy = machine_busy(tp);
    atomic_store_explicit(&tp->probe_t, now, memory_order_relaxed);
    atomic_store_explicit(&tp->busy, busy, memory_order_relaxed);
    atomic_store_explicit(&tp->probing, 0, memory_order_release);
    return busy;
}

static void word_wake(mnv_threadpool *tp, tp_word *w) {
    if (atomic_load(&w->sleepers) == 0) return;
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)&w->v, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    pthread_mutex_lock(&tp->mu);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
#endif
}

static void word_sleep(mnv_threadpool *tp, tp_word *w, uint32_t old) {
    atomic_fetch_add(&w->sleepers, 1);
#if defined(__linux__)
    while (atomic_load(&w->v) == old)
        syscall(SYS_futex, (uint32_t *)&w->v, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
#else
    pthread_mutex_lock(&tp->mu);
    while (atomic_load(&w->v) == old) pthread_cond_wait(&tp->cv, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
#endif
    atomic_fetch_sub(&w->sleepers, 1);
}

static bool changed(tp_word *w, uint32_t old) {
    return atomic_load_explicit(&w->v, memory_order_acquire) != old;
}

/* Return once w->v != old (the acquire load pairs with the waker's store). */
static void wait_change(mnv_threadpool *tp, tp_word *w, uint32_t old) {
    for (int i = 0; i < SPIN_FIRST; i++) {
        if (changed(w, old)) return;
        cpu_relax();
    }
    const int64_t t0 = now_ns(), limit = tp->spin_ns;
    int64_t next_check = t0;
    for (;;) {
        for (int i = 0; i < SPIN_BATCH; i++) {
            if (changed(w, old)) return;
            cpu_relax();
        }
        const int64_t t = now_ns();
        if (t - t0 > limit) break;
        if (tp->loadavg_fd >= 0 && t >= next_check) {
            if (contended(tp, t)) break;
            next_check = t + CHECK_NS;
        }
    }
    sched_yield(); /* a thread of ours queued on this core runs now */
    if (changed(w, old)) return;
    word_sleep(tp, w, old);
    atomic_thread_fence(memory_order_acquire);
}

typedef struct {
    mnv_threadpool *tp;
    int ith;
} worker_arg;

static void *worker(void *p) {
    worker_arg *wa = p;
    mnv_threadpool *tp = wa->tp;
    const int ith = wa->ith;
    free(wa);
    uint32_t seen = 0;
    for (;;) {
        wait_change(tp, &tp->generation, seen);
        seen = atomic_load_explicit(&tp->generation.v, memory_order_acquire);
        if (atomic_load_explicit(&tp->stop, memory_order_acquire)) break;
        /* the run's width travels in the word itself: a worker left out of a
         * run reads nothing else of it, so it cannot race with the next one */
        const int nth = (int)(seen & WIDTH_MASK);
        if (ith >= nth) continue;
        tp->fn(tp->arg, ith, nth);
        if (atomic_fetch_add_explicit(&tp->done, 1, memory_order_acq_rel) == nth - 2) {
            atomic_store(&tp->finished.v, seen);
            word_wake(tp, &tp->finished);
        }
    }
    return NULL;
}

mnv_status mnv_threadpool_create(int n_threads, mnv_threadpool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = mnv__cpu_count();
    if (n_threads > MNV_THREADPOOL_MAX) n_threads = MNV_THREADPOOL_MAX;
    mnv_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return mnv_set_error(MNV_ERR_NOMEM, "threadpool: out of memory");
    tp->n = n_threads;
    tp->n_run = 1;
    tp->adaptive = true;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    tp->n_online = online > 0 ? (int)online : 1;
    tp->loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    atomic_store(&tp->weak, -1);
    /* The machine-wide count says nothing of the CPUs a process confined to
     * some of them (affinity, cpuset, quota) shares with others: spin briefly. */
    tp->spin_ns = tp->loadavg_fd >= 0 && mnv__cpu_count() >= tp->n_online ? SPIN_HOT_NS : SPIN_BLIND_NS;
#if !defined(__linux__)
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
#endif
    tp->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!tp->threads) {
        tp->n = 1;
        mnv_threadpool_free(tp);
        return mnv_set_error(MNV_ERR_NOMEM, "threadpool: out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            tp->n = i;
            mnv_threadpool_free(tp);
            return mnv_set_error(MNV_ERR_NOMEM, "threadpool: out of memory");
        }
        wa->tp = tp;
        wa->ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker, wa) != 0) {
            free(wa);
            tp->n = i;
            mnv_threadpool_free(tp);
            return mnv_set_error(MNV_ERR_INTERNAL, "threadpool: cannot start thread %d", i);
        }
    }
    *out = tp;
    return MNV_OK;
}

void mnv_threadpool_free(mnv_threadpool *tp) {
    if (!tp) return;
    atomic_store(&tp->stop, 1);
    atomic_fetch_add(&tp->generation.v, 1u << WIDTH_BITS);
    word_wake(tp, &tp->generation);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    if (tp->loadavg_fd >= 0) close(tp->loadavg_fd);
#if !defined(__linux__)
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
#endif
    free(tp->threads);
    free(tp);
}

int mnv_threadpool_size(const mnv_threadpool *tp) { return tp->n; }

/* How many threads the next run should use: all of them while the machine
 * has a free CPU for each, else only as many as the CPUs others leave (at
 * least the caller). Threads in lockstep beside a busy neighbour wait for
 * each other's time slices at every node; fewer threads do not. The run
 * queue counts our own running threads (the caller and the workers that
 * are not asleep): they are not "others", nor are the weak neighbours'
 * (counted afresh at most every WEAK_SCAN_NS, and only while others run).
 * The run queue is read at one instant, where a kernel thread may be
 * passing through: only others seen at two runs in a row count. */
static int run_width(mnv_threadpool *tp) {
    if (!tp->adaptive || tp->spin_ns != SPIN_HOT_NS) return tp->n;
    const int r = runnable_now(tp);
    if (r < 0) return tp->n;
    const int ours = tp->n - atomic_load(&tp->generation.sleepers);
    int others = MNV_MAX(0, r - ours);
    if (others > 0 && tp->n_online - others < tp->n) {
        const int64_t t = now_ns();
        if (atomic_load_explicit(&tp->weak, memory_order_relaxed) < 0 || t - tp->weak_t > WEAK_SCAN_NS) {
            atomic_store_explicit(&tp->weak, mnv__weak_runnable(), memory_order_relaxed);
            tp->weak_t = t;
        }
        others = MNV_MAX(0, others - atomic_load_explicit(&tp->weak, memory_order_relaxed));
    }
    const int seen = MNV_MIN(others, tp->others_prev);
    tp->others_prev = others;
    return MNV_MAX(1, MNV_MIN(tp->n, tp->n_online - seen));
}

void mnv_threadpool_run(mnv_threadpool *tp, mnv_task_fn fn, void *arg) {
    const int nth = tp->n == 1 ? 1 : run_width(tp);
    if (nth == 1) { /* the workers keep waiting (and fall asleep if the machine is busy) */
        tp->n_run = 1;
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    tp->n_run = nth;
    atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
    atomic_store_explicit(&tp->bar_count, 0, memory_order_relaxed);
    const uint32_t prev = atomic_load_explicit(&tp->finished.v, memory_order_relaxed);
    const uint32_t gen = atomic_load_explicit(&tp->generation.v, memory_order_relaxed);
    /* seq_cst: publishes fn, arg, n_run and the counters */
    atomic_store(&tp->generation.v, (((gen >> WIDTH_BITS) + 1) << WIDTH_BITS) | (uint32_t)nth);
    word_wake(tp, &tp->generation);
    fn(arg, 0, nth);
    wait_change(tp, &tp->finished, prev);
}

void mnv_threadpool_set_adaptive(mnv_threadpool *tp, bool on) { tp->adaptive = on; }

void mnv_threadpool_barrier(mnv_threadpool *tp) {
    if (tp->n_run == 1) return;
    const uint32_t phase = atomic_load_explicit(&tp->bar_phase.v, memory_order_acquire);
    if (atomic_fetch_add_explicit(&tp->bar_count, 1, memory_order_acq_rel) == tp->n_run - 1) {
        atomic_store_explicit(&tp->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add(&tp->bar_phase.v, 1); /* seq_cst: releases this phase's writes */
        word_wake(tp, &tp->bar_phase);
        return;
    }
    wait_change(tp, &tp->bar_phase, phase);
}

/* ---- the CPUs this process may use ------------------------------------------ */

#if defined(__linux__)
/* ceil(quota / period) of a cgroup v2 cpu.max ("max 100000" or "200000 100000")
 * or of v1 cpu.cfs_quota_us and cpu.cfs_period_us; 0 when unlimited or unreadable. */
static int cgroup_quota(const char *dir, bool v2) {
    char path[PATH_MAX + 96], buf[64];
    long long quota = -1, period = 0;
    if (v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        FILE *f = fopen(path, "r");
        if (!f) return 0;
        if (fgets(buf, sizeof buf, f) && strncmp(buf, "max", 3) != 0) sscanf(buf, "%lld %lld", &quota, &period);
        fclose(f);
    } else {
        snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
        FILE *f = fopen(path, "r");
        if (!f) return 0;
        if (fscanf(f, "%lld", &quota) != 1) quota = -1;
        fclose(f);
        snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%lld", &period) != 1) period = 0;
            fclose(f);
        }
    }
    if (quota <= 0 || period <= 0) return 0;
    return (int)((quota + period - 1) / period);
}

/* The smallest quota of the process's cgroup and its parents (a parent's
 * limit binds its children), for v2 or the v1 "cpu" controller. */
static int cgroup_cpus(void) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[PATH_MAX], rel[PATH_MAX] = "", mount[64] = "";
    bool v2 = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        const char *ctrls = c1 + 1;
        if (!*ctrls && !*mount) { /* v2: "0::/path" */
            snprintf(mount, sizeof mount, "/sys/fs/cgroup");
            snprintf(rel, sizeof rel, "%s", c2 + 1);
            v2 = true;
        }
        for (const char *p = ctrls; *p;) { /* v1: "N:cpu,cpuacct:/path" */
            size_t l = strcspn(p, ",");
            if (l == 3 && strncmp(p, "cpu", 3) == 0) {
                snprintf(mount, sizeof mount, "/sys/fs/cgroup/%s", ctrls);
                snprintf(rel, sizeof rel, "%s", c2 + 1);
                v2 = false;
                break;
            }
            p += l + (p[l] == ',');
        }
    }
    fclose(f);
    if (!*mount) return 0;
    char dir[PATH_MAX + 64];
    int best = 0;
    for (;;) { /* from the process's cgroup up to the mount point */
        snprintf(dir, sizeof dir, "%s%s", mount, strcmp(rel, "/") == 0 ? "" : rel);
        int q = cgroup_quota(dir, v2);
        if (q > 0 && (best == 0 || q < best)) best = q;
        char *slash = strrchr(rel, '/');
        if (!slash || slash == rel) {
            if (strcmp(rel, "/") == 0 || !*rel) break;
            snprintf(rel, sizeof rel, "/");
            continue;
        }
        *slash = 0;
    }
    return best;
}
#endif

int mnv__cpu_count(void) {
    int n = 0;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    int q = cgroup_cpus();
    if (q > 0 && (n <= 0 || q < n)) n = q;
#endif
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    return n;
}

int mnv__threads_clamp(int requested) {
    const int avail = mnv__cpu_count();
    return requested <= 0 || requested > avail ? avail : requested;
}

/* ---- weak neighbours ---------------------------------------------------------- */

enum { WEAK_NICE = 10, POLICY_IDLE = 5 };

/* Fields of one line of /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat:
 * the state (field 3), nice (19), the thread count (20) and the scheduling
 * policy (41, -1 when the kernel is too old to write it), read after the
 * last ')' since the command name may hold spaces and parens. */
static bool parse_stat(const char *stat, char *state, long *nice, long *threads, long *policy) {
    const char *p = strrchr(stat, ')');
    if (!p || p[1] != ' ' || !p[2]) return false;
    p += 2;
    *state = *p;
    *nice = 0, *threads = 1, *policy = -1;
    int field = 3;
    for (; *p && field <= 41; field++) {
        if (field == 19) *nice = strtol(p, NULL, 10);
        else if (field == 20) *threads = strtol(p, NULL, 10);
        else if (field == 41) *policy = strtol(p, NULL, 10);
        const char *sp = strchr(p, ' ');
        if (!sp) break;
        p = sp + 1;
    }
    return field >= 20;
}

bool mnv__stat_weak_runnable(const char *stat, int our_nice) {
    char state;
    long nice, threads, policy;
    if (!parse_stat(stat, &state, &nice, &threads, &policy) || state != 'R') return false;
    return policy == POLICY_IDLE || nice >= our_nice + WEAK_NICE;
}

#if defined(__linux__)
static bool read_stat(const char *path, char *buf, size_t cap) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ssize_t len = read(fd, buf, cap - 1);
    close(fd);
    if (len <= 0) return false;
    buf[len] = 0;
    return true;
}

/* A multi-threaded process: its runnable threads that are weak. */
static int weak_tasks(const char *pid, int our_nice) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%.16s/task", pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        snprintf(path, sizeof path, "/proc/%.16s/task/%.16s/stat", pid, e->d_name);
        if (read_stat(path, buf, sizeof buf) && mnv__stat_weak_runnable(buf, our_nice)) n++;
    }
    closedir(d);
    return n;
}
#endif

int mnv__weak_runnable(void) {
    int n = 0;
#if defined(__linux__)
    DIR *d = opendir("/proc");
    if (!d) return 0;
    const int our_nice = getpriority(PRIO_PROCESS, 0);
    const long self = (long)getpid();
    char path[64], buf[1024];
    for (struct dirent *e; (e = readdir(d));) {
        if (!isdigit((unsigned char)e->d_name[0]) || strtol(e->d_name, NULL, 10) == self) continue;
        snprintf(path, sizeof path, "/proc/%.16s/stat", e->d_name);
        char state;
        long nice, threads, policy;
        if (!read_stat(path, buf, sizeof buf) || !parse_stat(buf, &state, &nice, &threads, &policy)) continue;
        if (threads > 1) n += weak_tasks(e->d_name, our_nice);
        else n += mnv__stat_weak_runnable(buf, our_nice);
    }
    closedir(d);
#endif
    return n;
}
