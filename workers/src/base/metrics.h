/*
 * Worker metrics under vLLM's names and meanings, so that dashboards,
 * autoscalers and routers written for vLLM read llmd workers unchanged.
 *
 * The engine thread is the only writer; the HTTP thread renders them for
 * GET /metrics.  Values are atomics so a scrape never races a step.
 */

#ifndef LLMD_METRICS_H
#define LLMD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_MAX_BOUNDS 24

struct histogram {
    const char         *name;
    const char         *help;
    const double       *bounds;
    int                 n_bounds;
    atomic_uint_fast64_t counts[HIST_MAX_BOUNDS + 1];   /* per bucket, not cumulative */
    atomic_uint_fast64_t sum_ns;
};

enum { SUCCESS_STOP, SUCCESS_LENGTH, SUCCESS_ABORT, SUCCESS_KINDS };

struct worker_metrics {
    atomic_int_fast64_t  running;
    atomic_int_fast64_t  waiting;
    atomic_uint_fast64_t kv_used_blocks;
    atomic_uint_fast64_t queued_prefill_tokens; /* prompt tokens not computed yet */
    uint64_t             kv_total_blocks;
    int                  block_tokens;

    atomic_uint_fast64_t prompt_tokens;
    atomic_uint_fast64_t generation_tokens;
    atomic_uint_fast64_t prefix_queries;
    atomic_uint_fast64_t prefix_hits;
    atomic_uint_fast64_t preemptions;
    atomic_uint_fast64_t success[SUCCESS_KINDS];

    /* disaggregated prefill/decode; engine thread unless noted */
    atomic_uint_fast64_t pd_landed;         /* decode: KV arrived */
    atomic_uint_fast64_t pd_recomputed;     /* decode: failed, prefilled here */
    atomic_uint_fast64_t pd_failed;         /* decode: failed the request */
    atomic_uint_fast64_t pd_bytes_in;       /* decode: payload received */
    atomic_uint_fast64_t pd_bytes_early;    /* of which in before the
                                               prefill's last layer ended */
    atomic_uint_fast64_t pd_served;         /* prefill (threads): pushed */
    atomic_uint_fast64_t pd_served_failed;  /* prefill (threads) */
    atomic_uint_fast64_t pd_bytes_out;      /* prefill (threads) */
    struct histogram     pd_exposed;        /* decode: last layer -> ready */

    struct histogram     ttft;
    struct histogram     itl;
    struct histogram     e2e;
    struct histogram     queue_time;
};

void metrics_init(struct worker_metrics *m, uint64_t kv_blocks, int block_tokens);

/* Single-writer updates: a relaxed load and store, no locked instruction. */
static inline void counter_add(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

void histogram_observe(struct histogram *h, double seconds);

/* Prometheus text format (version 0.0.4); returns a malloc'd string. */
char *metrics_render(struct worker_metrics *m, const char *model_name,
    size_t *len);

#endif
