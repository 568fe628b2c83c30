/* A persistent thread pool whose workers spin (with pause) before sleeping,
 * so that waking them for each graph node or token costs nanoseconds, not the
 * milliseconds a futex wake-up can take on a virtual machine. */
#ifndef MNV_THREADPOOL_H
#define MNV_THREADPOOL_H

#include "core/core.h"

typedef struct mnv_threadpool mnv_threadpool;

/* fn(arg, ith, nth) is run by nth threads (the caller is thread 0). */
typedef void (*mnv_task_fn)(void *arg, int ith, int nth);

mnv_status mnv_threadpool_create(int n_threads, mnv_threadpool **out);
void mnv_threadpool_free(mnv_threadpool *tp);
int mnv_threadpool_size(const mnv_threadpool *tp);
/* Run fn on every thread and return when all have finished. */
void mnv_threadpool_run(mnv_threadpool *tp, mnv_task_fn fn, void *arg);
/* Barrier among the threads of the current run (call from inside fn). */
void mnv_threadpool_barrier(mnv_threadpool *tp);

#endif
