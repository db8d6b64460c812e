/*
 * What pd/ needs of the engine, and nothing more.  The engine fills one in
 * (engine_init) and the transfer code calls through it, so that pd/ sits
 * below the engine and never includes it.
 */

#ifndef LLMD_PD_ENGINE_H
#define LLMD_PD_ENGINE_H

#include <stdbool.h>

#include "base/metrics.h"
#include "sched/kv_blocks.h"
#include "sched/prefix_claim.h"
#include "sched/request.h"

struct pd_engine {
    void                   *ctx;        /* the first argument of each call */
    struct kv_manager      *kv;         /* the pages sent and landed */
    struct worker_metrics  *metrics;
    int                     max_model_len;  /* longest prompt + output */
    /* run r (a prefill for a remote decode worker); cancel it */
    void (*submit)(void *ctx, struct worker_request *r);
    void (*cancel)(void *ctx, struct worker_request *r);
    /* decode side: the remote prefill of r ended (r->pd_state says how) */
    void (*landed)(void *ctx, struct worker_request *r);
    /* prefill side: r's pages are no longer read; the engine frees them */
    void (*release)(void *ctx, struct worker_request *r);
    /* prefill side: the prompt's blocks are cached here now; true when the
     * claim was taken (by the fleet-state publisher) */
    bool (*remote_prefilled)(void *ctx, struct prefix_claim *c);
};

static inline void pd_engine_submit(const struct pd_engine *e, struct worker_request *r)
{
    e->submit(e->ctx, r);
}

static inline void pd_engine_cancel(const struct pd_engine *e, struct worker_request *r)
{
    e->cancel(e->ctx, r);
}

static inline void pd_engine_landed(const struct pd_engine *e, struct worker_request *r)
{
    e->landed(e->ctx, r);
}

static inline void pd_engine_release(const struct pd_engine *e, struct worker_request *r)
{
    e->release(e->ctx, r);
}

#endif
