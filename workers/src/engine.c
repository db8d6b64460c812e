/*
 * Engine thread: inbox -> scheduler -> backend -> events.
 */

#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "model_text.h"
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
    for (int i = 0; i < s->n_running; i++)
        if (atomic_load(&s->running[i]->cancel_requested))
            gone[found++] = s->running[i];
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

static void run_step(struct engine *e)
{
    struct batch b;
    double now;

    sched_plan(&e->sched, &b);
    if (b.n == 0)
        return;
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
    e->backend.ops->forward(&e->backend, &b, e->next_tokens);
    sched_commit(&e->sched, &b);
    engine_stats_step(&e->stats, b.n_decode, b.n_prefill_tokens,
                      now_seconds() - now);
    now = now_seconds();
    for (int i = 0; i < b.n; i++)
        if (b.items[i].sample)
            on_token(e, b.items[i].req, e->next_tokens[i], now);
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
    engine_stats_publish(&e->stats,
                         engine_stats_queued_prefill(&e->stats, &e->sched));
}

static void *engine_main(void *arg)
{
    struct engine *e = arg;

    atomic_store(&e->alive, true);
    for (;;) {
        struct worker_request *incoming;
        int cancels;
        double now;

        pthread_mutex_lock(&e->in_lock);
        while (!e->stopping && e->inbox_head == NULL
               && atomic_load(&e->cancels_pending) == 0
               && sched_idle(&e->sched))
            pthread_cond_wait(&e->in_wake, &e->in_lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->in_lock);
            break;
        }
        incoming = e->inbox_head;
        e->inbox_head = e->inbox_tail = NULL;
        pthread_mutex_unlock(&e->in_lock);

        now = now_seconds();
        cancels = atomic_exchange(&e->cancels_pending, 0);
        admit_new(e, incoming, now);
        if (cancels)
            process_cancels(e, now);
        run_step(e);
        update_gauges(e);
        publish_events(e);
    }
    atomic_store(&e->alive, false);
    return NULL;
}

/* ------------------------------------------------------------------------ */

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

void engine_cancel(struct engine *e, struct worker_request *r)
{
    atomic_store(&r->cancel_requested, 1);
    pthread_mutex_lock(&e->in_lock);
    atomic_fetch_add(&e->cancels_pending, 1);
    pthread_cond_signal(&e->in_wake);
    pthread_mutex_unlock(&e->in_lock);
}
