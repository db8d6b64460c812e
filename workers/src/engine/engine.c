/*
 * Engine thread: inbox -> scheduler -> backend -> events.
 */

#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "token_text.h"
#include "pd/pd_decode.h"
#include "pd/pd_prefill.h"
#include "stop_strings.h"

/* ------------------------------------------------------------------------ */
/* events */

static void queue_push(struct event_queue *q, const struct engine_event *ev)
{
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 256;
        struct engine_event *p = realloc(q->ev, sizeof(*p) * (size_t) cap);
        if (p == NULL) {
            /* Out of memory: losing text is bad, losing a FINISH would leak
             * the request forever; both are unrecoverable here. */
            fprintf(stderr, "llmd-worker: out of memory for events\n");
            abort();
        }
        q->ev = p;
        q->cap = cap;
    }
    q->ev[q->n++] = *ev;
}

static void emit_text(struct engine *e, struct worker_request *r,
    const char *s, int n, int lp_upto)
{
    while (n > 0) {
        struct engine_event ev = { .req = r, .kind = ENGINE_TEXT };
        int chunk = n < ENGINE_EVENT_TEXT ? n : ENGINE_EVENT_TEXT;

        if (chunk == n)
            ev.lp_upto = lp_upto;
        ev.len = (uint8_t) chunk;
        memcpy(ev.text, s, (size_t) chunk);
        queue_push(&e->step_events, &ev);
        s += chunk;
        n -= chunk;
    }
}

/* With logprobs, text goes out in whole tokens so that each piece carries
 * the logprobs of exactly the tokens that make it up; all = the request is
 * finishing, every token goes. */
static void flush_text(struct engine *e, struct worker_request *r, int upto,
    bool all)
{
    if (r->logprobs != NULL) {
        int k = r->lp_sent, end = r->text_sent;

        while (k < r->n_generated && (all || r->logprobs[k].text_end <= upto))
            end = r->logprobs[k++].text_end;
        if (!all)
            upto = end < upto ? end : upto;
        r->lp_sent = k;
    }
    if (upto > r->text_sent) {
        emit_text(e, r, r->text + r->text_sent, upto - r->text_sent, r->lp_sent);
        r->text_sent = upto;
    }
}

static void finish_request(struct engine *e, struct worker_request *r,
    enum finish_reason why, double now)
{
    struct engine_event ev = { .req = r, .kind = ENGINE_FINISH };
    int kind = why == FINISH_STOP ? SUCCESS_STOP
               : why == FINISH_LENGTH ? SUCCESS_LENGTH : SUCCESS_ABORT;

    if (r->pd_src != NULL) {
        /* pages pushed to a decode worker: the transfer frees them */
        sched_detach(&e->sched, r);
        r->finish = why;
        pd_source_end(r->pd_src, r, why != FINISH_ABORT);
        return;
    }
    if (r->state == REQ_WAITING || r->state == REQ_RUNNING)
        sched_finish(&e->sched, r, why);
    r->state = REQ_FINISHED;
    r->finish = why;
    if (why != FINISH_ABORT)
        flush_text(e, r, r->text_len, true);
    counter_add(&e->metrics->success[kind], 1);
    histogram_observe(&e->metrics->e2e, now - r->arrival);
    queue_push(&e->step_events, &ev);
}

static void publish_events(struct engine *e)
{
    bool was_empty;

    if (e->step_events.n == 0)
        return;
    pthread_mutex_lock(&e->out_lock);
    was_empty = e->outbox.n == 0;
    if (was_empty) {
        /* swap instead of copying: the common case when the HTTP side
         * keeps up */
        struct event_queue tmp = e->outbox;
        e->outbox = e->step_events;
        e->step_events = tmp;
    } else {
        for (int i = 0; i < e->step_events.n; i++)
            queue_push(&e->outbox, &e->step_events.ev[i]);
    }
    e->step_events.n = 0;
    pthread_mutex_unlock(&e->out_lock);
    if (was_empty && e->notify)
        e->notify(e->notify_arg);
}

void engine_take_events(struct engine *e, struct event_queue *q)
{
    struct event_queue tmp;

    q->n = 0;
    pthread_mutex_lock(&e->out_lock);
    tmp = e->outbox;
    e->outbox = *q;
    *q = tmp;
    pthread_mutex_unlock(&e->out_lock);
}

/* ------------------------------------------------------------------------ */
/* one step */

static void admit_new(struct engine *e, struct worker_request *list, double now)
{
    while (list) {
        struct worker_request *r = list;

        list = r->next;
        r->next = NULL;
        if (atomic_load(&r->cancel_requested) || sched_add(&e->sched, r) != 0)
            finish_request(e, r, FINISH_ABORT, now);
    }
}

static void process_cancels(struct engine *e, double now)
{
    struct scheduler *s = &e->sched;
    int n = s->n_running + s->n_waiting, found = 0;
    struct worker_request **gone;

    if (n == 0)
        return;
    /* collect first: finishing reorders both the running list and the heap */
    gone = malloc(sizeof(*gone) * (size_t) n);
    if (gone == NULL) {
        atomic_fetch_add(&e->cancels_pending, 1);    /* retry next step */
        return;
    }
    for (int i = 0; i < s->n_running; i++) {
        struct worker_request *r = s->running[i];
        if (!atomic_load(&r->cancel_requested))
            continue;
        if (r->pd_state == PD_WAITING) {
            /* the prefill worker may still be writing its pages: they are
             * freed once the transfer has ended */
            if (!r->pd_abort_sent && e->pd_client)
                pd_client_abort(e->pd_client, r);
            r->pd_abort_sent = true;
            continue;
        }
        gone[found++] = r;
    }
    for (int i = 0; i < s->n_waiting; i++)
        if (atomic_load(&s->waiting[i]->cancel_requested))
            gone[found++] = s->waiting[i];
    for (int i = 0; i < found; i++)
        finish_request(e, gone[i], FINISH_ABORT, now);
    free(gone);
}

static void on_token(struct engine *e, struct worker_request *r, int32_t tok,
    double now)
{
    struct worker_metrics *m = e->metrics;
    enum finish_reason why = FINISH_NONE;

    if (r->pd_src != NULL) {
        /* the prompt's KV is computed and pushed; the decode worker samples
         * its own first token */
        (void) tok;
        finish_request(e, r, FINISH_LENGTH, now);
        return;
    }
    r->tokens[r->n_tokens++] = tok;
    r->n_generated++;
    counter_add(&m->generation_tokens, 1);
    if (r->n_generated == 1) {
        struct engine_event ev = { .req = r, .kind = ENGINE_FIRST };

        histogram_observe(&m->ttft, now - r->arrival);
        engine_stats_first_token(&e->stats, now - r->arrival);
        r->first_token_at = now;
        queue_push(&e->step_events, &ev);
    } else {
        histogram_observe(&m->itl, now - r->last_token_at);
    }
    r->last_token_at = now;

    if (model_token_ends(e->backend.vocab, e->backend.info.eos_token, tok)) {
        why = FINISH_STOP;
    } else {
        char byte;
        int n;
        const char *text = model_token_text(e->backend.vocab, r, &byte, &n);

        if (!model_text_reserve(r, n))
            why = FINISH_ABORT;
        else if (stop_append(r, text, n))
            why = FINISH_STOP;
    }
    if (r->logprobs != NULL && r->n_generated <= r->params.max_tokens)
        r->logprobs[r->n_generated - 1].text_end = r->text_len;
    if (why == FINISH_NONE && (r->n_generated >= r->params.max_tokens
                               || r->n_tokens >= e->max_model_len))
        why = FINISH_LENGTH;

    if (why != FINISH_NONE)
        finish_request(e, r, why, now);
    else if (e->backend.vocab == NULL)
        flush_text(e, r, stop_sendable(r), false);
    else    /* a token may end inside a UTF-8 character */
        flush_text(e, r, utf8_whole_prefix(r->text, stop_sendable(r),
                                           r->text_sent), false);
}

/* the backend finished layer `layer` of the current batch */
static void on_layer_done(void *arg, int layer)
{
    struct engine *e = arg;
    const struct batch *b = e->cur_batch;

    e->layer_seen = true;
    for (int i = 0; i < b->n; i++) {
        struct worker_request *r = b->items[i].req;
        if (r->pd_src)
            pd_source_layer(r->pd_src, r, layer, b->items[i].start,
                            b->items[i].n_tokens);
    }
}

/* Starts the transfers the plan admitted; before the forward pass, sends
 * the pages a prefill-side request found in this worker's cache. */
static bool pd_before_forward(struct engine *e, const struct batch *b)
{
    bool streams = false;

    for (int i = 0; i < e->sched.n_pd_new; i++) {
        struct worker_request *r = e->sched.pd_new[i];
        if (e->pd_client) {
            pd_client_start(e->pd_client, r);
        } else {
            r->error = "this worker has no KV transfer client";
            engine_pd_landed(e, r);
        }
    }
    for (int i = 0; i < b->n; i++) {
        struct worker_request *r = b->items[i].req;
        if (r->pd_src == NULL)
            continue;
        streams = true;
        if (b->items[i].start == r->prefix_hit_tokens)
            pd_source_begin(r->pd_src, r, r->prefix_hit_tokens);
    }
    return streams;
}

static bool run_step(struct engine *e)
{
    struct batch b;
    double now;
    bool streams;
    int rc;

    sched_plan(&e->sched, &b);
    streams = pd_before_forward(e, &b);
    if (b.n == 0)
        return e->sched.n_pd_new > 0;
    now = now_seconds();
    for (int i = 0; i < b.n; i++) {
        struct worker_request *r = b.items[i].req;
        if (!r->counted_prompt) {
            /* first time scheduled: the queue time is over */
            r->counted_prompt = true;
            counter_add(&e->metrics->prompt_tokens, (uint64_t) r->n_prompt);
            histogram_observe(&e->metrics->queue_time, now - r->arrival);
        }
    }
    if (streams) {
        e->cur_batch = &b;
        e->layer_seen = false;
        e->backend.layer_done = on_layer_done;
        e->backend.layer_arg = e;
    }
    rc = e->backend.ops->forward(&e->backend, &b, e->next_tokens);
    if (streams) {
        /* a backend without the hook: every layer is done now */
        for (int l = 0; !e->layer_seen && l < e->kv.geo.num_layers; l++)
            on_layer_done(e, l);
        e->backend.layer_done = NULL;
        e->cur_batch = NULL;
    }
    if (rc != 0) {
        /* the backend failed the step (a device error): its pages and
         * tokens cannot be trusted, so the batch's requests end here with
         * an error rather than with made-up text */
        now = now_seconds();
        for (int i = 0; i < b.n; i++) {
            b.items[i].req->error = "the model backend failed";
            b.items[i].req->pd_peer[0] = '\0';     /* not a transfer error */
            finish_request(e, b.items[i].req, FINISH_ABORT, now);
        }
        return true;
    }
    sched_commit(&e->sched, &b);
    engine_stats_step(&e->stats, b.n_decode, b.n_prefill_tokens,
                      now_seconds() - now);
    now = now_seconds();
    for (int i = 0; i < b.n; i++)
        if (b.items[i].sample)
            on_token(e, b.items[i].req, e->next_tokens[i], now);
    return true;
}

/* Transfers that ended: decode here, recompute here, or fail. */
static void pd_apply_landed(struct engine *e, struct worker_request *list,
    double now)
{
    while (list) {
        struct worker_request *r = list;

        list = r->next;
        r->next = NULL;
        pd_client_forget(r);
        if (r->pd_ok) {
            counter_add(&e->metrics->pd_landed, 1);
            counter_add(&e->metrics->pd_bytes_in, r->pd_bytes);
            counter_add(&e->metrics->pd_bytes_early, r->pd_bytes_early);
            histogram_observe(&e->metrics->pd_exposed, r->pd_exposed);
            if (atomic_load(&r->cancel_requested))
                finish_request(e, r, FINISH_ABORT, now);
            else
                sched_pd_landed(&e->sched, r, r->n_tokens - 1);
            continue;
        }
        r->pd_state = PD_LOCAL;
        if (atomic_load(&r->cancel_requested)) {
            finish_request(e, r, FINISH_ABORT, now);
        } else if (e->cfg.pd_recompute) {
            /* its pages are allocated: prefill it here from its own
             * cached prefix on */
            counter_add(&e->metrics->pd_recomputed, 1);
            fprintf(stderr, "llmd-worker: kv transfer %016llx from %s failed "
                    "(%s); prefilling locally\n", (unsigned long long) r->pd_xfer,
                    r->pd_peer, r->error ? r->error : "?");
            r->error = NULL;
        } else {
            counter_add(&e->metrics->pd_failed, 1);
            fprintf(stderr, "llmd-worker: kv transfer %016llx from %s failed "
                    "(%s); failing the request (--pd-failure fail)\n",
                    (unsigned long long) r->pd_xfer, r->pd_peer,
                    r->error ? r->error : "?");
            finish_request(e, r, FINISH_ABORT, now);
        }
    }
}

/* Pages a decode worker has received (or will never get): free them. */
static void pd_apply_released(struct engine *e, struct worker_request *list)
{
    while (list) {
        struct worker_request *r = list;

        list = r->next;
        sched_release(&e->sched, r);
        request_free(r);
    }
}

static void update_gauges(struct engine *e)
{
    struct worker_metrics *m = e->metrics;

    atomic_store_explicit(&m->running, e->sched.n_running, memory_order_relaxed);
    atomic_store_explicit(&m->waiting, e->sched.n_waiting, memory_order_relaxed);
    atomic_store_explicit(&m->kv_used_blocks, (uint64_t) e->kv.n_used,
                          memory_order_relaxed);
    atomic_store_explicit(&m->prefix_queries, e->sched.prefix_queries,
                          memory_order_relaxed);
    atomic_store_explicit(&m->prefix_hits, e->sched.prefix_hits,
                          memory_order_relaxed);
    atomic_store_explicit(&m->preemptions, e->sched.preemptions,
                          memory_order_relaxed);
    {
        uint64_t queued;

        /* about to sleep: count afresh, or a stale backlog stays in the
         * heartbeat until the next request wakes the engine */
        if (!e->progressed || sched_idle(&e->sched))
            e->stats.queued_at = 0;
        queued = engine_stats_queued_prefill(&e->stats, &e->sched);
        atomic_store_explicit(&m->queued_prefill_tokens, queued,
                              memory_order_relaxed);
        engine_stats_publish(&e->stats, queued);
    }
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;

    atomic_store(&e->alive, true);
    for (;;) {
        struct worker_request *incoming, *landed, *released;
        int cancels;
        double now;

        pthread_mutex_lock(&e->in_lock);
        /* requests waiting only for their KV do not keep it busy */
        while (!e->stopping && e->inbox_head == NULL
               && atomic_load(&e->cancels_pending) == 0
               && e->pd_landed == NULL && e->pd_released == NULL
               && (sched_idle(&e->sched) || !e->progressed))
            pthread_cond_wait(&e->in_wake, &e->in_lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->in_lock);
            break;
        }
        incoming = e->inbox_head;
        e->inbox_head = e->inbox_tail = NULL;
        landed = e->pd_landed;
        released = e->pd_released;
        e->pd_landed = e->pd_released = NULL;
        pthread_mutex_unlock(&e->in_lock);

        now = now_seconds();
        cancels = atomic_exchange(&e->cancels_pending, 0);
        pd_apply_released(e, released);
        admit_new(e, incoming, now);
        pd_apply_landed(e, landed, now);
        if (cancels)
            process_cancels(e, now);
        e->progressed = run_step(e);
        update_gauges(e);
        publish_events(e);
    }
    atomic_store(&e->alive, false);
    return NULL;
}

/* ------------------------------------------------------------------------ */

/* the engine as pd/ sees it (pd/pd_engine.h) */
static void port_submit(void *e, struct worker_request *r) { engine_submit(e, r); }
static void port_cancel(void *e, struct worker_request *r) { engine_cancel(e, r); }
static void port_landed(void *e, struct worker_request *r) { engine_pd_landed(e, r); }
static void port_release(void *e, struct worker_request *r) { engine_pd_release(e, r); }

static bool port_remote_prefilled(void *arg, struct prefix_claim *c)
{
    struct engine *e = arg;

    if (e->remote_prefilled == NULL)
        return false;
    e->remote_prefilled(e->remote_prefilled_arg, c);
    return true;
}

static void pd_port_init(struct engine *e)
{
    e->pd_port = (struct pd_engine) {
        .ctx = e, .kv = &e->kv, .metrics = e->metrics,
        .max_model_len = e->max_model_len,
        .submit = port_submit, .cancel = port_cancel,
        .landed = port_landed, .release = port_release,
        .remote_prefilled = port_remote_prefilled,
    };
}

int engine_init(struct engine *e, const struct worker_config *cfg,
    struct worker_metrics *metrics, char *err, int err_len)
{
    const struct backend_ops *ops = backend_find(cfg->backend);
    struct kv_geometry geo;
    struct sched_config sc;
    int capacity;

    memset(e, 0, sizeof(*e));
    e->cfg = *cfg;
    e->metrics = metrics;
    if (ops == NULL) {
        snprintf(err, (size_t) err_len, "--backend %s is not available in "
                 "this build", cfg->backend);
        return -1;
    }
    e->backend.ops = ops;
    if (ops->init(&e->backend, cfg, err, err_len) != 0)
        return -1;

    geo.num_blocks = cfg->kv_blocks;
    geo.block_tokens = cfg->block_tokens;
    geo.num_layers = e->backend.info.num_layers;
    geo.kv_heads = e->backend.info.kv_heads;
    geo.head_dim = e->backend.info.head_dim;
    geo.dtype_bytes = e->backend.info.dtype_bytes;
    if (kv_init(&e->kv, &geo) != 0) {
        snprintf(err, (size_t) err_len, "cannot allocate %d KV blocks",
                 cfg->kv_blocks);
        return -1;
    }
    ops->attach_kv(&e->backend, &e->kv);

    e->max_model_len = e->backend.info.max_model_len;
    if (cfg->max_model_len > e->max_model_len) {
        snprintf(err, (size_t) err_len, "--max-model-len %d exceeds the "
                 "model's context of %d tokens", cfg->max_model_len,
                 e->max_model_len);
        return -1;
    }
    if (cfg->max_model_len > 0)
        e->max_model_len = cfg->max_model_len;
    /* a request must fit the cache on its own, or it could never finish */
    capacity = cfg->kv_blocks * cfg->block_tokens;
    if (e->max_model_len > capacity)
        e->max_model_len = capacity;

    sc.max_batch = cfg->max_batch;
    sc.max_batch_tokens = cfg->max_batch_tokens;
    sc.priority_aging = cfg->priority_aging;
    if (sched_init(&e->sched, &sc, &e->kv) != 0) {
        snprintf(err, (size_t) err_len, "bad scheduler settings");
        return -1;
    }
    e->next_tokens = calloc((size_t) cfg->max_batch, sizeof(int32_t));
    if (e->next_tokens == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    pthread_mutex_init(&e->in_lock, NULL);
    pthread_cond_init(&e->in_wake, NULL);
    pthread_mutex_init(&e->out_lock, NULL);
    metrics_init(metrics, (uint64_t) cfg->kv_blocks, cfg->block_tokens);
    engine_stats_init(&e->stats);
    pd_port_init(e);
    return 0;
}

int engine_start(struct engine *e, void (*notify)(void *), void *arg)
{
    e->notify = notify;
    e->notify_arg = arg;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
        return -1;
    e->started = true;
    return 0;
}

void engine_stop(struct engine *e)
{
    if (!e->started)
        return;
    pthread_mutex_lock(&e->in_lock);
    e->stopping = true;
    pthread_cond_signal(&e->in_wake);
    pthread_mutex_unlock(&e->in_lock);
    pthread_join(e->thread, NULL);
    e->started = false;
}

void engine_destroy(struct engine *e)
{
    engine_stop(e);
    sched_destroy(&e->sched);
    kv_free(&e->kv);
    engine_stats_destroy(&e->stats);
    if (e->backend.ops && e->backend.state)
        e->backend.ops->free(&e->backend);
    free(e->outbox.ev);
    free(e->step_events.ev);
    free(e->next_tokens);
}

void engine_set_kv_listener(struct engine *e, kv_event_fn fn, void *arg)
{
    kv_set_event_cb(&e->kv, fn, arg);
}

void engine_submit(struct engine *e, struct worker_request *r)
{
    r->next = NULL;
    pthread_mutex_lock(&e->in_lock);
    if (e->inbox_tail)
        e->inbox_tail->next = r;
    else
        e->inbox_head = r;
    e->inbox_tail = r;
    pthread_cond_signal(&e->in_wake);
    pthread_mutex_unlock(&e->in_lock);
}

static void push_locked(struct engine *e, struct worker_request **list,
    struct worker_request *r)
{
    pthread_mutex_lock(&e->in_lock);
    r->next = *list;
    *list = r;
    pthread_cond_signal(&e->in_wake);
    pthread_mutex_unlock(&e->in_lock);
}

void engine_pd_landed(struct engine *e, struct worker_request *r)
{
    push_locked(e, &e->pd_landed, r);
}

void engine_pd_release(struct engine *e, struct worker_request *r)
{
    push_locked(e, &e->pd_released, r);
}

void engine_cancel(struct engine *e, struct worker_request *r)
{
    atomic_store(&r->cancel_requested, 1);
    pthread_mutex_lock(&e->in_lock);
    atomic_fetch_add(&e->cancels_pending, 1);
    pthread_cond_signal(&e->in_wake);
    pthread_mutex_unlock(&e->in_lock);
}
