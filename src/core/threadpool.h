/* A persistent thread pool whose workers spin (with pause) before sleeping,
 * so that waking them for each graph node or token costs nanoseconds, not the
 * milliseconds a futex wake-up can take on a virtual machine; and that stops
 * spinning as soon as the machine has more runnable threads than cores, so
 * that a waiting thread never holds a core the thread it waits for needs. */
#ifndef MNV_THREADPOOL_H
#define MNV_THREADPOOL_H

#include "core/core.h"

typedef struct mnv_threadpool mnv_threadpool;

/* fn(arg, ith, nth) is run by nth threads (the caller is thread 0). */
typedef void (*mnv_task_fn)(void *arg, int ith, int nth);

/* n_threads <= 0: mnv__cpu_count(). Larger counts than the CPUs are honoured
 * here (callers clamp: see mnv__threads_clamp), up to MNV_THREADPOOL_MAX. */
#define MNV_THREADPOOL_MAX 4095
mnv_status mnv_threadpool_create(int n_threads, mnv_threadpool **out);
void mnv_threadpool_free(mnv_threadpool *tp);
int mnv_threadpool_size(const mnv_threadpool *tp);
/* Run fn on nth threads and return when all have finished: nth is the
 * pool's size while the machine has a free CPU for each of its threads, and
 * only as many (at least 1, the caller) as the CPUs that other processes'
 * runnable threads leave when it does not (see mnv_threadpool_set_adaptive). */
void mnv_threadpool_run(mnv_threadpool *tp, mnv_task_fn fn, void *arg);
/* On (the default): runs use fewer threads beside busy neighbours. Off: every
 * run uses every thread (tests of the pool itself). Not during a run. */
void mnv_threadpool_set_adaptive(mnv_threadpool *tp, bool on);
/* Barrier among the threads of the current run (call from inside fn). */
void mnv_threadpool_barrier(mnv_threadpool *tp);

/* The CPUs this process may run on: its affinity mask, bounded by a cgroup
 * CPU quota (v2 cpu.max, v1 cfs_quota_us / cfs_period_us, rounded up) of its
 * cgroup or any parent; at least 1. Read afresh on each call. */
int mnv__cpu_count(void);
/* The thread count to use for a request: 0 (or less) gives mnv__cpu_count(),
 * more than that is clamped to it. */
int mnv__threads_clamp(int requested);
/* Runnable threads of other processes far below this one's priority (niced
 * WEAK_NICE = 10 or more above it, or under SCHED_IDLE), which an adaptive
 * run does not count as taking a CPU; 0 where /proc is not readable. */
int mnv__weak_runnable(void);
/* Whether a /proc stat line is such a thread's, for a process at our_nice. */
bool mnv__stat_weak_runnable(const char *stat, int our_nice);

#endif
