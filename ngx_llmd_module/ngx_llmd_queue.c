/*
 * The shared queue of flow control (ngx_llmd_flow.c) and the saturation
 * detector that gates it.  Everything here runs with the zone's mutex held
 * (shpool), except ngx_llmd_flow_saturated, which takes it.
 */

#include "ngx_llmd_flow.h"


#define NGX_LLMD_FLOW_ORPHAN        5000        /* ms past a deadline */
#define NGX_LLMD_FLOW_MODELS        8           /* room cache per dispatch */


const char *ngx_llmd_admissions[NGX_LLMD_ADMIT_NOUTCOMES] = {
    "none", "admitted", "queued", "shed", "rejected", "displaced",
    "timeout", "cancelled"
};

const ngx_uint_t ngx_llmd_wait_le_ms[NGX_LLMD_WAIT_BUCKETS] = {
    1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 30000, 60000
};


/* The grant counters of a model: its own, a free slot, or slot 0, which
 * every model's room counts (a request naming no model, or too many). */
static ngx_llmd_grant_t *
ngx_llmd_flow_grants(ngx_llmd_shctx_t *sh, uint64_t model)
{
    ngx_uint_t         i;
    ngx_llmd_grant_t  *g, *spare;

    if (model == 0) {
        return &sh->grants[0];
    }

    spare = NULL;

    for (i = 1; i < NGX_LLMD_GRANT_MODELS; i++) {
        g = &sh->grants[i];

        if (g->model == model) {
            return g;
        }

        if (spare == NULL && g->entries == 0 && g->held == 0) {
            spare = g;
        }
    }

    if (spare == NULL) {
        return &sh->grants[0];
    }

    spare->model = model;
    spare->held_min = 0;
    spare->window = ngx_current_msec;

    return spare;
}


/* Room let go for requests to this model and not yet picked. */
static ngx_uint_t
ngx_llmd_flow_granted(ngx_llmd_shctx_t *sh, uint64_t model)
{
    ngx_uint_t         i;
    ngx_llmd_grant_t  *g;

    if (model == 0) {
        return sh->granted;
    }

    g = &sh->grants[0];

    for (i = 1; i < NGX_LLMD_GRANT_MODELS; i++) {
        if (sh->grants[i].model == model) {
            return g->entries + g->held + sh->grants[i].entries
                   + sh->grants[i].held;
        }
    }

    return g->entries + g->held;
}


/* entry: a GRANTED queue entry; else a request on its way to a pick. */
void
ngx_llmd_flow_grant(ngx_llmd_shctx_t *sh, uint64_t model, ngx_uint_t entry)
{
    ngx_llmd_grant_t  *g;

    g = ngx_llmd_flow_grants(sh, model);

    if (entry) {
        g->entries++;

    } else {
        g->held++;
    }

    sh->granted++;
}


void
ngx_llmd_flow_ungrant(ngx_llmd_shctx_t *sh, uint64_t model, ngx_uint_t entry)
{
    ngx_llmd_grant_t  *g;

    g = ngx_llmd_flow_grants(sh, model);

    if (entry && g->entries) {
        g->entries--;

    } else if (!entry && g->held) {
        g->held--;
        g->held_min = ngx_min(g->held_min, g->held);

    } else {
        return;     /* released as leaked already */
    }

    if (sh->granted) {
        sh->granted--;
    }
}


/* A request holds its grant for the moment between admission and its
 * pick, within one event; a process that died in between holds it for
 * ever.  So what was held all through NGX_LLMD_FLOW_ORPHAN ms is let go. */
void
ngx_llmd_flow_leaks(ngx_llmd_shctx_t *sh)
{
    ngx_uint_t         i;
    ngx_llmd_grant_t  *g;

    for (i = 0; i < NGX_LLMD_GRANT_MODELS; i++) {
        g = &sh->grants[i];

        if ((ngx_msec_int_t) (ngx_current_msec - g->window)
            < NGX_LLMD_FLOW_ORPHAN)
        {
            continue;
        }

        if (g->held_min) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llmd: %ui admission grants held for %d ms "
                          "released (a worker process died?)",
                          g->held_min, NGX_LLMD_FLOW_ORPHAN);
            g->held -= g->held_min;
            sh->granted -= ngx_min(sh->granted, g->held_min);
        }

        g->held_min = g->held;
        g->window = ngx_current_msec;
    }
}


/* How many more requests the peer takes now; UNBOUNDED without a limit. */
static ngx_uint_t
ngx_llmd_flow_peer_room(ngx_llmd_srv_conf_t *conf, ngx_llmd_peer_t *p,
    ngx_uint_t fresh)
{
    ngx_uint_t  busy, limit;

    limit = conf->sat_inflight ? conf->sat_inflight : p->max_batch;

    if (fresh && p->hb_seen) {
        if (p->kv_total && (uint64_t) p->kv_used * 100
                           >= (uint64_t) p->kv_total * conf->sat_kv)
        {
            return 0;
        }

        if (conf->slo_ttft && p->prefill_tps > 0.0
            && (double) (p->queued_prefill_tokens + p->pending_tokens)
               * 1000.0 / p->prefill_tps > (double) conf->slo_ttft)
        {
            return 0;
        }

        if (limit == 0 && p->waiting > 0) {
            return 0;
        }
    }

    if (limit == 0) {
        return NGX_LLMD_FLOW_UNBOUNDED;
    }

    busy = p->inflight + p->remote_inflight;

    return busy < limit ? limit - busy : 0;
}


/* The room of the candidates for a model, less what was let go and not yet
 * picked (called with the zone locked). */
ngx_uint_t
ngx_llmd_flow_room(ngx_llmd_srv_conf_t *conf, uint64_t model)
{
    ngx_uint_t         k, n, room, r, fresh;
    ngx_llmd_peer_t   *p;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;
    fresh = conf->redis == NULL || ngx_llmd_redis_fresh(conf);

    if (!fresh && !sh->stale_limits) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "llmd: fleet state is stale, admission falls back to "
                      "in-flight limits");
    }

    sh->stale_limits = !fresh;

    n = 0;
    room = 0;

    for (k = 0; k < sh->npeers; k++) {
        p = &sh->peers[k];

        if ((p->dynamic && !p->alive) || p->role == LLMD_ROLE_PREFILL
            || ngx_llmd_model_mismatch(p, model))
        {
            continue;
        }

        n++;
        r = ngx_llmd_flow_peer_room(conf, p, fresh);

        if (r == NGX_LLMD_FLOW_UNBOUNDED) {
            return r;
        }

        room += r;
    }

    if (n == 0) {
        return NGX_LLMD_FLOW_UNBOUNDED;     /* nothing known: the pick says */
    }

    n = ngx_llmd_flow_granted(sh, model);

    return room > n ? room - n : 0;
}


/*
 * Whether the room lets a request of this priority go: llmd_queue reserve=
 * keeps the last N of it for priorities above 0, so that an interactive
 * request finds a batch slot free instead of waiting for a long answer to
 * end (the gateway cannot preempt what a worker runs).
 */
ngx_uint_t
ngx_llmd_flow_fits(ngx_llmd_srv_conf_t *conf, ngx_uint_t room,
    ngx_int_t priority)
{
    if (room == NGX_LLMD_FLOW_UNBOUNDED) {
        return 1;
    }

    return room > (priority > 0 ? 0 : conf->queue_reserve);
}


ngx_uint_t
ngx_llmd_flow_saturated(ngx_llmd_srv_conf_t *conf, uint64_t model)
{
    ngx_uint_t  room;

    ngx_shmtx_lock(&conf->shpool->mutex);
    room = ngx_llmd_flow_room(conf, model);
    ngx_shmtx_unlock(&conf->shpool->mutex);

    return room == 0;
}



static ngx_llmd_band_t *
ngx_llmd_flow_band(ngx_llmd_shctx_t *sh, ngx_int_t priority)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_LLMD_BANDS; i++) {
        if (sh->bands[i].used && sh->bands[i].priority == priority) {
            return &sh->bands[i];
        }

        if (!sh->bands[i].used) {
            sh->bands[i].used = 1;
            sh->bands[i].priority = priority;
            return &sh->bands[i];
        }
    }

    return &sh->bands[NGX_LLMD_BANDS - 1];  /* the rest share the last */
}


void
ngx_llmd_flow_count(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx,
    ngx_uint_t outcome)
{
    ngx_uint_t        b;
    ngx_llmd_band_t  *band;

    ngx_llmd_flow_t  *f;

    ctx->admission = outcome;
    band = ngx_llmd_flow_band(conf->sh, ctx->priority);
    (void) ngx_atomic_fetch_add(&band->outcomes[outcome], 1);

    f = &conf->sh->flows[ngx_llmd_flow_id(conf->sh, &ctx->fairness)];

    if (outcome == NGX_LLMD_ADMIT_DIRECT || outcome == NGX_LLMD_ADMIT_QUEUED) {
        (void) ngx_atomic_fetch_add(&f->admitted, 1);

    } else if (outcome != NGX_LLMD_ADMIT_CANCELLED) {
        (void) ngx_atomic_fetch_add(&f->shed, 1);
    }

    if (outcome != NGX_LLMD_ADMIT_QUEUED) {
        return;
    }

    for (b = 0; b < NGX_LLMD_WAIT_BUCKETS; b++) {
        if (ctx->queue_ms <= ngx_llmd_wait_le_ms[b]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&band->wait_le[b], 1);
    (void) ngx_atomic_fetch_add(&band->wait_sum_ms, ctx->queue_ms);
}


/* The fairness id's entry in flows[]: found, a free one, or one nobody
 * waits in; when all are busy, ids share by hash. */
ngx_uint_t
ngx_llmd_flow_id(ngx_llmd_shctx_t *sh, ngx_str_t *name)
{
    uint64_t          id;
    ngx_uint_t        i, k, spare;
    ngx_llmd_flow_t  *f;

    id = name->len ? ngx_llmd_model_hash(name->data, name->len) : 1;
    spare = NGX_LLMD_FLOWS;

    for (i = 0; i < NGX_LLMD_FLOWS; i++) {
        k = (id + i) % NGX_LLMD_FLOWS;
        f = &sh->flows[k];

        if (f->id == id) {
            return k;
        }

        if (f->id == 0) {
            spare = spare < NGX_LLMD_FLOWS ? spare : k;
            break;
        }

        if (f->waiting == 0 && spare == NGX_LLMD_FLOWS) {
            spare = k;
        }
    }

    if (spare == NGX_LLMD_FLOWS) {
        return id % NGX_LLMD_FLOWS;
    }

    f = &sh->flows[spare];
    ngx_memzero(f, sizeof(ngx_llmd_flow_t));
    f->id = id;
    f->vtime = sh->vclock;
    f->name_len = ngx_min(name->len, NGX_LLMD_FLOW_NAME_LEN);
    ngx_memcpy(f->name, name->data, f->name_len);

    return spare;
}


/* Frees an entry in any state, keeping the counters whole. */
void
ngx_llmd_flow_release(ngx_llmd_shctx_t *sh, ngx_uint_t i)
{
    ngx_llmd_qentry_t  *e;

    e = &sh->queue[i];

    if (e->state == NGX_LLMD_Q_WAITING) {
        sh->queued--;
        sh->flows[e->flow].waiting--;

    } else if (e->state == NGX_LLMD_Q_GRANTED) {
        ngx_llmd_flow_ungrant(sh, e->model, 1);
    }

    e->state = NGX_LLMD_Q_FREE;
}


/* Entries whose process must be gone: every live waiter leaves by its
 * deadline. */
void
ngx_llmd_flow_orphans(ngx_llmd_shctx_t *sh)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_LLMD_QUEUE_MAX; i++) {
        if (sh->queue[i].state != NGX_LLMD_Q_FREE
            && (ngx_msec_int_t) (ngx_current_msec - sh->queue[i].deadline)
               > NGX_LLMD_FLOW_ORPHAN)
        {
            ngx_llmd_flow_release(sh, i);
        }
    }
}


/* Whether entry a goes before entry b. */
static ngx_uint_t
ngx_llmd_flow_before(ngx_llmd_shctx_t *sh, ngx_llmd_qentry_t *a,
    ngx_llmd_qentry_t *b)
{
    uint64_t  va, vb;

    if (a->priority != b->priority) {
        return a->priority > b->priority;
    }

    va = sh->flows[a->flow].vtime;
    vb = sh->flows[b->flow].vtime;

    if (va != vb) {
        return va < vb;
    }

    return a->seq < b->seq;
}


static void
ngx_llmd_flow_wake(ngx_llmd_srv_conf_t *conf, ngx_uint_t i)
{
    /* another process's request: it sees the grant at its next tick */
    if (conf->sh->queue[i].pid == ngx_pid && conf->waiters
        && conf->waiters[i])
    {
        ngx_llmd_flow_post();
    }
}


/* Lets the first waiting requests go while their model has room. */
void
ngx_llmd_flow_dispatch(ngx_llmd_srv_conf_t *conf)
{
    uint64_t            models[NGX_LLMD_FLOW_MODELS];
    ngx_uint_t          rooms[NGX_LLMD_FLOW_MODELS];
    ngx_uint_t          i, m, nmodels, best, bm;
    ngx_llmd_flow_t    *f;
    ngx_llmd_shctx_t   *sh;
    ngx_llmd_qentry_t  *e;

    sh = conf->sh;
    nmodels = 0;

    while (sh->queued) {
        best = NGX_LLMD_QUEUE_MAX;
        bm = NGX_LLMD_FLOW_MODELS;

        for (i = 0; i < NGX_LLMD_QUEUE_MAX; i++) {
            e = &sh->queue[i];

            if (e->state != NGX_LLMD_Q_WAITING
                || (best < NGX_LLMD_QUEUE_MAX
                    && !ngx_llmd_flow_before(sh, e, &sh->queue[best])))
            {
                continue;
            }

            for (m = 0; m < nmodels && models[m] != e->model; m++) {
                /* void */
            }

            if (m == nmodels && nmodels == NGX_LLMD_FLOW_MODELS) {
                /* past the cache: asked afresh, sh->granted keeps it true */
                if (ngx_llmd_flow_fits(conf, ngx_llmd_flow_room(conf, e->model),
                                       e->priority))
                {
                    best = i;
                    bm = NGX_LLMD_FLOW_MODELS;
                }
                continue;
            }

            if (m == nmodels) {
                nmodels++;
                models[m] = e->model;
                rooms[m] = ngx_llmd_flow_room(conf, e->model);
            }

            if (ngx_llmd_flow_fits(conf, rooms[m], e->priority)) {
                best = i;
                bm = m;
            }
        }

        if (best == NGX_LLMD_QUEUE_MAX) {
            break;
        }

        e = &sh->queue[best];
        f = &sh->flows[e->flow];

        if (bm < NGX_LLMD_FLOW_MODELS && rooms[bm] != NGX_LLMD_FLOW_UNBOUNDED) {
            rooms[bm]--;
        }

        /* start-time fair queueing: the clock moves to the start tag
         * served, the flow's next request starts one later */
        sh->vclock = f->vtime;
        f->vtime++;
        f->waiting--;
        sh->queued--;
        ngx_llmd_flow_grant(sh, e->model, 1);
        e->state = NGX_LLMD_Q_GRANTED;

        ngx_llmd_flow_wake(conf, best);
    }
}


/* A free entry for a new waiter, after the per-priority limit: NGX_ERROR
 * when the request cannot queue. */
ngx_int_t
ngx_llmd_flow_slot(ngx_llmd_srv_conf_t *conf, ngx_int_t priority)
{
    ngx_uint_t          i, depth, free, victim;
    ngx_llmd_shctx_t   *sh;
    ngx_llmd_qentry_t  *e, *v;

    sh = conf->sh;
    depth = 0;
    free = NGX_LLMD_QUEUE_MAX;
    victim = NGX_LLMD_QUEUE_MAX;

    for (i = 0; i < NGX_LLMD_QUEUE_MAX; i++) {
        e = &sh->queue[i];

        if (e->state == NGX_LLMD_Q_FREE) {
            free = free < NGX_LLMD_QUEUE_MAX ? free : i;
            continue;
        }

        if (e->state != NGX_LLMD_Q_WAITING) {
            continue;
        }

        if (e->priority == priority) {
            depth++;
        }

        /* the lowest priority, its newest request */
        v = victim < NGX_LLMD_QUEUE_MAX ? &sh->queue[victim] : NULL;

        if (e->priority < priority
            && (v == NULL || e->priority < v->priority
                || (e->priority == v->priority && e->seq > v->seq)))
        {
            victim = i;
        }
    }

    if (depth < conf->queue_size && free < NGX_LLMD_QUEUE_MAX) {
        return free;
    }

    if (!conf->queue_displace || victim == NGX_LLMD_QUEUE_MAX) {
        return NGX_ERROR;
    }

    /* the arrival takes the victim's place in the queue; the victim's
     * process answers it 429 at its next tick (it finds its entry marked,
     * or taken when no other was free) */
    sh->queued--;
    sh->flows[sh->queue[victim].flow].waiting--;
    sh->queue[victim].state = NGX_LLMD_Q_DISPLACED;
    ngx_llmd_flow_wake(conf, victim);

    if (free < NGX_LLMD_QUEUE_MAX) {
        return free;
    }

    sh->queue[victim].state = NGX_LLMD_Q_FREE;

    return victim;
}



/* Whether anything of this priority or higher waits for the model. */
ngx_uint_t
ngx_llmd_flow_ahead(ngx_llmd_shctx_t *sh, ngx_int_t priority, uint64_t model)
{
    ngx_uint_t          i;
    ngx_llmd_qentry_t  *e;

    if (sh->queued == 0) {
        return 0;
    }

    for (i = 0; i < NGX_LLMD_QUEUE_MAX; i++) {
        e = &sh->queue[i];

        if (e->state == NGX_LLMD_Q_WAITING && e->priority >= priority
            && (e->model == model || e->model == 0 || model == 0))
        {
            return 1;
        }
    }

    return 0;
}
