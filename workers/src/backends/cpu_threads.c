/*
 * Thread pool: one dispatch per parallel loop, the caller works too.
 */

#include "cpu_threads.h"

#include <sched.h>
#include <stdlib.h>

#define SPIN_ROUNDS 20000       /* roughly 50-100 us of polling */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

struct worker_arg {
    struct thread_pool *pool;
    int                 index;
};

static void run_tasks(struct thread_pool *p, int thread)
{
    for (;;) {
        int task = atomic_fetch_add(&p->next_task, 1);
        if (task >= p->n_tasks)
            return;
        p->fn(p->arg, task, thread);
    }
}

static void *worker_main(void *arg)
{
    struct worker_arg *wa = arg;
    struct thread_pool *p = wa->pool;
    int index = wa->index;
    unsigned seen = 0;

    free(wa);
    for (;;) {
        for (int i = 0; i < SPIN_ROUNDS && atomic_load(&p->generation) == seen
                        && !atomic_load(&p->stopping); i++)
            cpu_relax();
        if (atomic_load(&p->generation) == seen) {
            pthread_mutex_lock(&p->lock);
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stopping))
                pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stopping))
            return NULL;
        seen = atomic_load(&p->generation);
        run_tasks(p, index);
        atomic_fetch_sub(&p->busy_workers, 1);
    }
}

int pool_init(struct thread_pool *p, int n_threads)
{
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    p->threads = NULL;
    atomic_init(&p->generation, 0);
    atomic_init(&p->next_task, 0);
    atomic_init(&p->busy_workers, 0);
    atomic_init(&p->stopping, false);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (p->n_threads == 1)
        return 0;
    p->threads = calloc((size_t) p->n_threads - 1, sizeof(pthread_t));
    if (p->threads == NULL)
        return -1;
    for (int i = 1; i < p->n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof(*wa));
        if (wa == NULL)
            goto fail;
        wa->pool = p;
        wa->index = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            goto fail;
        }
    }
    return 0;
fail:
    pool_destroy(p);
    return -1;
}

void pool_run(struct thread_pool *p, pool_fn fn, void *arg, int n_tasks)
{
    if (p->n_threads == 1 || n_tasks <= 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(arg, t, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->next_task, 0);
    atomic_store(&p->busy_workers, p->n_threads - 1);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    run_tasks(p, 0);
    /* the others finish their last task; yield if one was descheduled */
    for (int i = 0; atomic_load(&p->busy_workers) > 0; i++) {
        if (i < SPIN_ROUNDS)
            cpu_relax();
        else
            sched_yield();
    }
}

void pool_destroy(struct thread_pool *p)
{
    if (p->threads) {
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->stopping, true);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->n_threads - 1; i++)
            if (p->threads[i])
                pthread_join(p->threads[i], NULL);
        free(p->threads);
        p->threads = NULL;
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
}
