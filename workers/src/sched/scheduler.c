/*
 * Scheduler: see scheduler.h for the policy.
 */

#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* waiting queue: binary max-heap on (sched_key, then lower id) */

static bool more_urgent(const struct worker_request *a,
    const struct worker_request *b)
{
    if (a->sched_key != b->sched_key)
        return a->sched_key > b->sched_key;
    return a->id < b->id;
}

static void heap_set(struct scheduler *s, int i, struct worker_request *r)
{
    s->waiting[i] = r;
    r->heap_pos = i;
}

static void heap_up(struct scheduler *s, int i)
{
    struct worker_request *r = s->waiting[i];

    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!more_urgent(r, s->waiting[parent]))
            break;
        heap_set(s, i, s->waiting[parent]);
        i = parent;
    }
    heap_set(s, i, r);
}

static void heap_down(struct scheduler *s, int i)
{
    struct worker_request *r = s->waiting[i];

    for (;;) {
        int child = 2 * i + 1;
        if (child >= s->n_waiting)
            break;
        if (child + 1 < s->n_waiting
            && more_urgent(s->waiting[child + 1], s->waiting[child]))
            child++;
        if (!more_urgent(s->waiting[child], r))
            break;
        heap_set(s, i, s->waiting[child]);
        i = child;
    }
    heap_set(s, i, r);
}

static int heap_push(struct scheduler *s, struct worker_request *r)
{
    if (s->n_waiting == s->cap_waiting) {
        int cap = s->cap_waiting ? s->cap_waiting * 2 : 64;
        void *p = realloc(s->waiting, sizeof(*s->waiting) * (size_t) cap);
        if (p == NULL)
            return -1;
        s->waiting = p;
        s->cap_waiting = cap;
    }
    s->waiting[s->n_waiting++] = r;
    heap_up(s, s->n_waiting - 1);
    return 0;
}

static void heap_remove(struct scheduler *s, struct worker_request *r)
{
    int i = r->heap_pos;
    struct worker_request *last = s->waiting[--s->n_waiting];

    r->heap_pos = -1;
    if (i == s->n_waiting)
        return;
    heap_set(s, i, last);
    heap_up(s, i);
    heap_down(s, last->heap_pos);
}

/* ------------------------------------------------------------------------ */

int sched_init(struct scheduler *s, const struct sched_config *cfg,
    struct kv_manager *kv)
{
    memset(s, 0, sizeof(*s));
    if (cfg->max_batch < 1 || cfg->max_batch_tokens < cfg->max_batch
        || cfg->priority_aging <= 0)
        return -1;
    s->cfg = *cfg;
    s->kv = kv;
    s->running = calloc((size_t) cfg->max_batch, sizeof(*s->running));
    s->order = calloc((size_t) cfg->max_batch, sizeof(*s->order));
    s->items = calloc((size_t) cfg->max_batch, sizeof(*s->items));
    s->pd_new = calloc((size_t) cfg->max_batch, sizeof(*s->pd_new));
    if (!s->running || !s->order || !s->items || !s->pd_new) {
        sched_destroy(s);
        return -1;
    }
    return 0;
}

void sched_destroy(struct scheduler *s)
{
    free(s->waiting);
    free(s->running);
    free(s->order);
    free(s->items);
    free(s->pd_new);
    memset(s, 0, sizeof(*s));
}

int sched_add(struct scheduler *s, struct worker_request *r)
{
    r->sched_key = r->params.priority * s->cfg.priority_aging - r->arrival;
    r->state = REQ_WAITING;
    return heap_push(s, r);
}

static void release_blocks(struct scheduler *s, struct worker_request *r)
{
    for (int i = 0; i < r->n_blocks; i++)
        kv_release(s->kv, r->blocks[i]);
    r->n_blocks = 0;
    r->n_committed = 0;
    r->num_computed = 0;
}

static void running_remove(struct scheduler *s, struct worker_request *r)
{
    for (int i = 0; i < s->n_running; i++) {
        if (s->running[i] == r) {
            memmove(&s->running[i], &s->running[i + 1],
                    sizeof(*s->running) * (size_t) (s->n_running - i - 1));
            s->n_running--;
            return;
        }
    }
}

void sched_finish(struct scheduler *s, struct worker_request *r,
    enum finish_reason why)
{
    if (r->state == REQ_WAITING)
        heap_remove(s, r);
    else if (r->state == REQ_RUNNING)
        running_remove(s, r);
    release_blocks(s, r);
    r->state = REQ_FINISHED;
    r->finish = why;
}

static void preempt(struct scheduler *s, struct worker_request *r)
{
    running_remove(s, r);
    release_blocks(s, r);
    r->n_preemptions++;
    s->preemptions++;
    /* the key is unchanged, so it keeps the urgency it had earned; if the
     * heap cannot grow the request stays runnable rather than be lost */
    r->state = REQ_WAITING;
    if (heap_push(s, r) != 0) {
        r->state = REQ_RUNNING;
        s->running[s->n_running++] = r;
    }
}

/* The least urgent running request not yet planned this step, other than r. */
static struct worker_request *pick_victim(struct scheduler *s,
    const struct worker_request *r)
{
    struct worker_request *victim = NULL;

    for (int i = 0; i < s->n_running; i++) {
        struct worker_request *c = s->running[i];
        /* pages in flight to or from another worker cannot move */
        if (c == r || c->planned_step == s->step
            || c->pd_state == PD_WAITING || c->pd_src != NULL)
            continue;
        if (victim == NULL || more_urgent(victim, c))
            victim = c;
    }
    return victim;
}

/* Give r blocks for positions [0, upto), preempting less urgent requests
 * when the cache is full.  False when r itself had to be preempted. */
static bool ensure_blocks(struct scheduler *s, struct worker_request *r,
    int upto, bool *preempted)
{
    int bt = s->kv->geo.block_tokens;
    int need = (upto + bt - 1) / bt - r->n_blocks;

    while (need > kv_available(s->kv)) {
        struct worker_request *victim = pick_victim(s, r);

        *preempted = true;
        if (victim == NULL || more_urgent(victim, r)) {
            preempt(s, r);
            return false;
        }
        preempt(s, victim);
    }
    while (need-- > 0)
        r->blocks[r->n_blocks++] = kv_alloc(s->kv);
    return true;
}

static void add_item(struct scheduler *s, struct batch *b,
    struct worker_request *r, int n)
{
    struct batch_item *it = &b->items[b->n++];

    it->req = r;
    it->start = r->num_computed;
    it->n_tokens = n;
    it->sample = r->num_computed + n == r->n_tokens;
    r->planned_step = s->step;
    b->n_tokens += n;
    if (n == 1 && it->sample && r->num_computed > 0) {
        b->n_decode++;
        b->decode_kv_tokens += r->num_computed + 1;
    } else {
        b->n_prefill_tokens += n;
        b->prefill_attention += (double) n * (r->num_computed + n);
    }
}

static void sort_by_urgency(struct scheduler *s)
{
    memcpy(s->order, s->running, sizeof(*s->order) * (size_t) s->n_running);
    for (int i = 1; i < s->n_running; i++) {
        struct worker_request *r = s->order[i];
        int j = i;
        while (j > 0 && more_urgent(r, s->order[j - 1])) {
            s->order[j] = s->order[j - 1];
            j--;
        }
        s->order[j] = r;
    }
}

/* Admit the head of the waiting queue if it fits; false when it does not. */
static bool admit_one(struct scheduler *s, struct batch *b, int *budget)
{
    struct worker_request *r = s->waiting[0];
    int bt = s->kv->geo.block_tokens;
    int matched, n, need;
    bool whole;

    matched = kv_match_prefix(s->kv, r->tokens, r->n_tokens, r->block_hashes,
                              r->blocks);
    /* hold the matched blocks before allocating, or allocation could evict
     * them */
    for (int i = 0; i < matched; i++)
        kv_acquire(s->kv, r->blocks[i]);
    r->n_blocks = r->n_committed = matched;
    r->num_computed = matched * bt;

    /* a remote prefill whose prompt is cached here but for less than a
     * block needs no transfer: cached pages are never sent again, and a
     * partial block is cheaper to compute than to ask for */
    if (r->pd_state == PD_PENDING && r->n_tokens - 1 - r->num_computed < bt)
        r->pd_state = PD_LOCAL;
    /* pages that another worker writes, or that are pushed to one, are
     * allocated whole at admission: they can then never be preempted */
    whole = r->pd_state == PD_PENDING || r->pd_src != NULL;

    n = r->n_tokens - r->num_computed;
    if (n > *budget)
        n = *budget;
    need = ((whole ? r->n_tokens : r->num_computed + n) + bt - 1) / bt - matched;
    if (need > kv_available(s->kv)) {
        release_blocks(s, r);
        return false;
    }
    while (need-- > 0)
        r->blocks[r->n_blocks++] = kv_alloc(s->kv);

    heap_remove(s, r);
    r->state = REQ_RUNNING;
    s->running[s->n_running++] = r;
    s->prefix_queries += (uint64_t) r->n_tokens;
    s->prefix_hits += (uint64_t) r->num_computed;
    r->prefix_hit_tokens = r->num_computed;
    if (r->pd_state == PD_PENDING) {
        /* its KV comes from a prefill worker: nothing to compute yet */
        r->pd_state = PD_WAITING;
        r->planned_step = s->step;
        s->pd_new[s->n_pd_new++] = r;
        return true;
    }
    add_item(s, b, r, n);
    *budget -= n;
    return true;
}

void sched_plan(struct scheduler *s, struct batch *b)
{
    int budget = s->cfg.max_batch_tokens;
    bool preempted = false;
    int n_order;

    s->step++;
    memset(b, 0, sizeof(*b));
    b->items = s->items;
    s->n_pd_new = 0;

    sort_by_urgency(s);
    n_order = s->n_running;

    /* pass 0: decodes (one token each); pass 1: prefill chunks */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n_order && budget > 0; i++) {
            struct worker_request *r = s->order[i];
            int remaining = r->n_tokens - r->num_computed;
            int n;

            if (r->state != REQ_RUNNING || r->planned_step == s->step
                || r->pd_state == PD_WAITING)
                continue;
            if ((pass == 0) != (remaining == 1))
                continue;
            n = remaining < budget ? remaining : budget;
            if (!ensure_blocks(s, r, r->num_computed + n, &preempted))
                continue;
            add_item(s, b, r, n);
            budget -= n;
        }
    }

    /* after a preemption the cache is full: admitting would only thrash */
    while (!preempted && s->n_waiting > 0 && s->n_running < s->cfg.max_batch
           && budget > 0) {
        if (!admit_one(s, b, &budget))
            break;
    }
}

/* register the blocks of r that became full */
static void commit_full_blocks(struct scheduler *s, struct worker_request *r)
{
    int bt = s->kv->geo.block_tokens;
    int full = r->num_computed / bt;

    for (int k = r->n_committed; k < full; k++) {
        uint64_t parent = k ? r->block_hashes[k - 1] : KV_HASH_SEED;
        const int32_t *toks = r->tokens + (size_t) k * bt;

        r->block_hashes[k] = kv_block_hash(parent, toks, bt);
        kv_commit(s->kv, r->blocks[k], r->block_hashes[k], parent, toks);
    }
    if (full > r->n_committed)
        r->n_committed = full;
}

void sched_commit(struct scheduler *s, const struct batch *b)
{
    for (int i = 0; i < b->n; i++) {
        struct worker_request *r = b->items[i].req;

        r->num_computed += b->items[i].n_tokens;
        commit_full_blocks(s, r);
    }
}

void sched_pd_landed(struct scheduler *s, struct worker_request *r, int upto)
{
    r->num_computed = upto;
    r->pd_state = PD_LANDED;
    commit_full_blocks(s, r);
}

void sched_detach(struct scheduler *s, struct worker_request *r)
{
    if (r->state == REQ_WAITING)
        heap_remove(s, r);
    else if (r->state == REQ_RUNNING)
        running_remove(s, r);
    r->state = REQ_FINISHED;
}

void sched_release(struct scheduler *s, struct worker_request *r)
{
    release_blocks(s, r);
}
