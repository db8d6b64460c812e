/*
 * A fixed pool of worker threads for the CPU backend's parallel loops.
 *
 * pool_run(fn, arg, n_tasks) calls fn(arg, task, thread) for every task in
 * [0, n_tasks), spread over the pool and the calling thread, and returns
 * when all are done.  Tasks are handed out one at a time from an atomic
 * counter, so uneven tasks balance themselves.  Between runs the workers
 * spin briefly (a forward pass dispatches dozens of loops back to back,
 * and a sleep/wake costs tens of microseconds each time), then sleep.
 */

#ifndef LLMD_CPU_THREADS_H
#define LLMD_CPU_THREADS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef void (*pool_fn)(void *arg, int task, int thread);

struct thread_pool {
    int                 n_threads;      /* including the caller */
    pthread_t          *threads;
    pthread_mutex_t     lock;
    pthread_cond_t      wake;
    atomic_uint         generation;     /* bumped for every run */
    atomic_int          next_task;
    atomic_int          busy_workers;
    int                 n_tasks;
    pool_fn             fn;
    void               *arg;
    atomic_bool         stopping;
};

/* n_threads <= 1 runs everything on the caller.  Returns 0 or -1. */
int pool_init(struct thread_pool *p, int n_threads);
void pool_run(struct thread_pool *p, pool_fn fn, void *arg, int n_tasks);
void pool_destroy(struct thread_pool *p);

#endif
