/*
 * Engine: the scheduler, the KV cache and a backend, run on a thread of
 * their own so that the HTTP thread never waits on model work.
 *
 * HTTP thread -> engine: engine_submit() and engine_cancel() put work in an
 * inbox under a mutex and signal a condition variable the idle engine sleeps
 * on.  Engine -> HTTP thread: after every step the engine appends the step's
 * events (text, finish) to an outbox and, when the outbox was empty, calls
 * the notify callback (the HTTP side makes it an event_active() on its
 * libevent base), so bursts of steps cost one wakeup.
 *
 * Every submitted request gets exactly one ENGINE_FINISH event, its last;
 * after it the engine never touches the request again and the HTTP side may
 * free it.
 */

#ifndef LLMD_ENGINE_H
#define LLMD_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "backends/backend.h"
#include "base/config.h"
#include "engine_stats.h"
#include "sched/kv_blocks.h"
#include "base/metrics.h"
#include "sched/request.h"
#include "sched/scheduler.h"
#include "pd/pd_engine.h"

struct pd_server;
struct pd_client;
struct prefix_claim;

enum engine_event_kind {
    ENGINE_TEXT = 1,    /* text[0..len) follows what was sent before */
    ENGINE_FINISH,      /* req->finish says why; usage is in req */
    ENGINE_FIRST        /* the first token is out: the prompt is computed
                           and its full blocks are in the cache */
};

#define ENGINE_EVENT_TEXT 46

struct engine_event {
    struct worker_request  *req;
    uint8_t                 kind;
    uint8_t                 len;
    char                    text[ENGINE_EVENT_TEXT];
    int32_t                 lp_upto;    /* TEXT, last piece of a flush:
                                           logprobs of generated tokens
                                           [0, lp_upto) are out with it;
                                           0 on other pieces */
};

struct event_queue {
    struct engine_event    *ev;
    int                     n;
    int                     cap;
};

struct engine {
    struct worker_config        cfg;
    struct backend              backend;
    struct kv_manager           kv;
    struct scheduler            sched;
    struct worker_metrics      *metrics;
    struct engine_stats         stats;      /* for the fleet heartbeat */
    int                         max_model_len;

    pthread_t                   thread;
    bool                        started;
    atomic_bool                 alive;

    pthread_mutex_t             in_lock;
    pthread_cond_t              in_wake;
    struct worker_request      *inbox_head;
    struct worker_request      *inbox_tail;
    bool                        stopping;
    atomic_int                  cancels_pending;

    pthread_mutex_t             out_lock;
    struct event_queue          outbox;
    struct event_queue          step_events;    /* engine thread only */
    void                      (*notify)(void *arg);
    void                       *notify_arg;

    int32_t                    *next_tokens;

    /* disaggregated prefill/decode (src/pd/) */
    struct pd_engine            pd_port;    /* what pd/ may call */
    struct pd_server           *pd_server;  /* prefill side, or NULL */
    struct pd_client           *pd_client;  /* decode side, or NULL */
    struct worker_request      *pd_landed;  /* transfers ended (in_lock) */
    struct worker_request      *pd_released;/* pushed pages to free (in_lock) */
    const struct batch         *cur_batch;  /* during forward() */
    bool                        layer_seen; /* the backend called layer_done */
    bool                        progressed; /* the last step did something */
    /* prefill side, engine thread: a remote prefill's blocks are cached
     * here now; takes the claim (the fleet-state publisher sets it) */
    void                      (*remote_prefilled)(void *arg,
                                                  struct prefix_claim *c);
    void                       *remote_prefilled_arg;
};

/* Creates the backend, KV cache and scheduler; err gets a one-line reason. */
int engine_init(struct engine *e, const struct worker_config *cfg,
    struct worker_metrics *metrics, char *err, int err_len);
int engine_start(struct engine *e, void (*notify)(void *), void *arg);
void engine_stop(struct engine *e);
void engine_destroy(struct engine *e);

/* Block stored / removed events, for the fleet-state publisher.  Set before
 * engine_start(); fn runs on the engine thread and must not block. */
void engine_set_kv_listener(struct engine *e, kv_event_fn fn, void *arg);

void engine_submit(struct engine *e, struct worker_request *r);

/* From the transfer threads.  landed: the remote prefill of r ended, with
 * r->pd_state PD_LANDED (the pages are in) or not (r->error says why).
 * release: the pages of prefill-side request r are no longer read; the
 * engine frees them and r. */
void engine_pd_landed(struct engine *e, struct worker_request *r);
void engine_pd_release(struct engine *e, struct worker_request *r);
void engine_cancel(struct engine *e, struct worker_request *r);

/* Swap the outbox with *q (whose events the caller has consumed). */
void engine_take_events(struct engine *e, struct event_queue *q);

#endif
