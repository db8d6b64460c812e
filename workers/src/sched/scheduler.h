/*
 * Scheduler: decides, step by step, which tokens the backend computes.
 *
 * Every step (continuous batching):
 *   1. each running request in decode gets its one token;
 *   2. running requests still in prefill get chunks of their prompt, within
 *      what is left of the step's token budget (max_batch_tokens), so a long
 *      prompt is spread over several steps instead of stalling decodes;
 *   3. waiting requests are admitted, most urgent first, while the batch has
 *      room (max_batch), the budget has tokens and KV blocks allow; a prefix
 *      already in the cache is reused instead of recomputed.
 * When a running request needs a block and none is left, the least urgent
 * running request is preempted: its blocks are released (full ones stay
 * cached, so its recompute is often cheap) and it goes back to waiting.
 *
 * Priority policy (higher priority value = more urgent; default 0):
 *   urgency key = priority * aging_seconds - arrival_time
 * i.e. a request gains one priority level for every aging_seconds it has
 * waited.  Interactive requests sent with a higher priority overtake batch
 * jobs that arrived recently, but a job that has waited longer than
 * (priority difference) * aging_seconds is ahead of any newcomer, so no
 * request waits forever.  The key of a request never changes, so the waiting
 * queue is an ordinary heap.  Preemption picks the lowest key, i.e. the least
 * urgent and most recent request, and never a more urgent one than the one
 * needing room.  A request at the head of the queue that does not fit is not
 * skipped by smaller ones behind it, which would starve long prompts.
 *
 * Pure logic: no threads, no clock, no backend; the engine drives it.
 */

#ifndef LLMD_SCHEDULER_H
#define LLMD_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "kv_blocks.h"
#include "request.h"

struct sched_config {
    int         max_batch;          /* running requests at most */
    int         max_batch_tokens;   /* tokens computed per step at most */
    double      priority_aging;     /* seconds of waiting worth one level */
};

struct batch_item {
    struct worker_request  *req;
    int                     start;      /* first token position computed */
    int                     n_tokens;   /* tokens computed this step */
    bool                    sample;     /* reaches the end: sample a token */
};

struct batch {
    struct batch_item  *items;
    int                 n;
    int                 n_tokens;
    int                 n_decode;           /* items that are single decodes */
    int                 n_prefill_tokens;
    double              prefill_attention;  /* sum of new * context tokens */
    long                decode_kv_tokens;   /* context of the decode items */
};

struct scheduler {
    struct sched_config     cfg;
    struct kv_manager      *kv;
    uint64_t                step;

    struct worker_request **waiting;        /* max-heap on urgency */
    int                     n_waiting;
    int                     cap_waiting;
    struct worker_request **running;        /* admission order */
    int                     n_running;
    struct worker_request **order;          /* scratch: running by urgency */
    struct batch_item      *items;          /* storage behind the batch */
    /* admitted by the last plan to be prefilled on another worker: the
     * engine starts their transfers */
    struct worker_request **pd_new;
    int                     n_pd_new;

    uint64_t                preemptions;
    uint64_t                prefix_queries; /* prompt tokens looked up */
    uint64_t                prefix_hits;    /* of which found cached */
};

int sched_init(struct scheduler *s, const struct sched_config *cfg,
    struct kv_manager *kv);
void sched_destroy(struct scheduler *s);

/* Queue a request; r->arrival and r->params.priority must be set. */
int sched_add(struct scheduler *s, struct worker_request *r);

/* Plan the next step into b (storage owned by the scheduler). */
void sched_plan(struct scheduler *s, struct batch *b);

/* The backend computed the batch: advance the requests and register the
 * blocks that became full.  Call before appending sampled tokens. */
void sched_commit(struct scheduler *s, const struct batch *b);

/* Remove a request from whichever queue holds it and release its blocks. */
void sched_finish(struct scheduler *s, struct worker_request *r,
    enum finish_reason why);

/* Remote prefill: the KV of positions [0, upto) arrived in r's blocks. */
void sched_pd_landed(struct scheduler *s, struct worker_request *r, int upto);

/* Take r out of the queues but keep its blocks (pages still being sent to
 * another worker); sched_release() drops them later. */
void sched_detach(struct scheduler *s, struct worker_request *r);
void sched_release(struct scheduler *s, struct worker_request *r);

static inline bool sched_idle(const struct scheduler *s)
{
    return s->n_waiting == 0 && s->n_running == 0;
}

#endif
