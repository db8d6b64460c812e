/*
 * Flow control: admission at the gateway (llmd_queue, llmd_saturation).
 *
 * A request is admitted at once while the candidates for its model have
 * room and nothing of its priority or higher waits.  Otherwise:
 *   - a sheddable request (priority < 0) gets 429 with Retry-After;
 *   - any other waits in the zone's queue, shared by every nginx worker
 *     process: strict priority between priorities, start-time fair
 *     queueing between fairness ids within one (each id's next request
 *     carries a start tag, the lowest goes first, so a tenant that sends
 *     five times more gets no more turns), first come first served within
 *     an id.  A full priority's queue answers 429, or with displace pushes
 *     out the newest request of the lowest lower priority.
 * Room: a peer is full when its requests in flight, through this gateway
 * and the others it hears of in Redis, reach its limit (llmd_saturation
 * inflight=, else the max_batch its heartbeat reports), when its KV blocks
 * are used past kv=, when its queued prefill would miss llmd_slo's TTFT,
 * or, without a count limit, when it reports waiting requests.  With stale
 * fleet state only the in-flight limits count, and the log says so once.
 *
 * Requests that were let go but have not been picked yet count against the
 * room (sh->grants, per model), so processes never admit the same room twice.  The
 * queue is dispatched when a response ends (ngx_llmd_flow_freed), when a
 * heartbeat poll ends, and every NGX_LLMD_FLOW_TICK ms in each process
 * that holds waiting requests; that tick also wakes the process's own
 * requests that another process let go, and ends those past the maximum
 * wait with 503.  Requests wait like limit_req's delayed ones: no blocking,
 * the client's connection watched for a close.
 */

#include "ngx_llmd_flow.h"


#define NGX_LLMD_FLOW_TICK          5           /* ms */


typedef struct {
    ngx_llmd_srv_conf_t    *conf;
    ngx_llmd_ctx_t         *ctx;
} ngx_llmd_flow_cleanup_t;


static ngx_queue_t   ngx_llmd_flow_waiters;
static ngx_event_t   ngx_llmd_flow_tick_ev;
static ngx_uint_t    ngx_llmd_flow_ticks;

static void ngx_llmd_flow_tick(ngx_event_t *ev);


/* ---- classification: priority and fairness id ------------------------ */

/* add: send the header even when the client sent none */
static ngx_int_t
ngx_llmd_flow_set_header(ngx_http_request_t *r, ngx_int_t priority,
    ngx_uint_t add)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    len = ngx_sprintf(p, "%i", priority) - p;
    found = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("X-LLMD-Priority") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-LLMD-Priority",
                               h[i].key.len) == 0)
        {
            /* the gateway's word, not the client's: every copy */
            h[i].value.data = p;
            h[i].value.len = len;
            found = 1;
        }
    }

    if (found || !add) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-LLMD-Priority");
    h->lowcase_key = (u_char *) "x-llmd-priority";
    h->value.data = p;
    h->value.len = len;

    return NGX_OK;
}


/* llmd_priority and llmd_fairness, evaluated once; the priority reaches
 * the worker as X-LLMD-Priority (higher first, as its scheduler reads). */
ngx_int_t
ngx_llmd_flow_classify(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx)
{
    ngx_int_t             n, sign;
    ngx_str_t             v;
    ngx_llmd_loc_conf_t  *llcf;

    if (ctx->flow_classified) {
        return NGX_OK;
    }

    ctx->flow_classified = 1;
    llcf = ngx_http_get_module_loc_conf(r, ngx_llmd_module);

    if (llcf->fairness) {
        if (ngx_http_complex_value(r, llcf->fairness, &ctx->fairness)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (llcf->priority == NULL) {
        /* no priority of the gateway's: a client's own is not passed on */
        return ngx_llmd_flow_set_header(r, 0, 0);
    }

    if (ngx_http_complex_value(r, llcf->priority, &v) != NGX_OK) {
        return NGX_ERROR;
    }

    sign = 1;
    if (v.len > 1 && v.data[0] == '-') {
        sign = -1;
        v.data++;
        v.len--;
    }

    n = v.len ? ngx_atoi(v.data, v.len) : 0;

    if (n == NGX_ERROR) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llmd: llmd_priority \"%V\" is not an integer, 0 used",
                      &v);
        n = 0;
    }

    ctx->priority = sign * ngx_min(n, 1000000);

    return ngx_llmd_flow_set_header(r, ctx->priority, 1);
}


/* ---- admission -------------------------------------------------------- */

/* The tick of this process, now: a request of its own was let go. */
void
ngx_llmd_flow_post(void)
{
    if (!ngx_llmd_flow_tick_ev.posted) {
        ngx_post_event(&ngx_llmd_flow_tick_ev, &ngx_posted_events);
    }
}


static void
ngx_llmd_flow_cleanup(void *data)
{
    ngx_llmd_flow_cleanup_t  *cln = data;

    ngx_llmd_ctx_t     *ctx;
    ngx_llmd_shctx_t   *sh;
    ngx_llmd_waiter_t  *w;

    ctx = cln->ctx;
    sh = cln->conf->sh;
    w = ctx->waiter;

    if (w == NULL && !ctx->flow_reserved) {
        return;
    }

    ngx_shmtx_lock(&cln->conf->shpool->mutex);

    if (w) {
        /* the client left while it waited */
        if (sh->queue[w->index].seq == w->seq
            && sh->queue[w->index].pid == ngx_pid)
        {
            ngx_llmd_flow_release(sh, w->index);
        }

        if (cln->conf->waiters[w->index] == w) {
            cln->conf->waiters[w->index] = NULL;
        }

        ngx_queue_remove(&w->queue);
        ctx->waiter = NULL;
        ctx->queue_ms = ngx_current_msec - w->start;
        ngx_llmd_flow_count(cln->conf, ctx, NGX_LLMD_ADMIT_CANCELLED);
    }

    if (ctx->flow_reserved) {
        ctx->flow_reserved = 0;
        ngx_llmd_flow_ungrant(sh, ctx->model_hash, 0);
        ngx_llmd_flow_dispatch(cln->conf);
    }

    ngx_shmtx_unlock(&cln->conf->shpool->mutex);
}


/* An error answer of admission: 429 or 503 with Retry-After. */
static ngx_int_t
ngx_llmd_flow_refuse(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx,
    ngx_uint_t outcome)
{
    ngx_int_t  status;

    ngx_llmd_flow_count(conf, ctx, outcome);

    ctx->error_type = "rate_limit_error";
    ctx->retry_after = ngx_max(1, conf->queue_timeout / 1000 / 10);
    ctx->flow_done = 1;

    switch (outcome) {

    case NGX_LLMD_ADMIT_TIMEOUT:
        ngx_str_set(&ctx->error, "the fleet stayed saturated for as long as "
                    "the request could wait at the gateway; retry later");
        ctx->error_type = "server_error";
        ctx->error_code = "queue_timeout";
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        break;

    case NGX_LLMD_ADMIT_SHED:
        ngx_str_set(&ctx->error, "the fleet is saturated and the request is "
                    "sheddable; retry later");
        ctx->error_code = "rate_limit_exceeded";
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        break;

    case NGX_LLMD_ADMIT_DISPLACED:
        ngx_str_set(&ctx->error, "the request gave its place in the gateway "
                    "queue to one of higher priority; retry later");
        ctx->error_code = "rate_limit_exceeded";
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        break;

    default:    /* NGX_LLMD_ADMIT_REJECTED */
        ngx_str_set(&ctx->error, "the gateway queue for this priority is "
                    "full; retry later");
        ctx->error_code = "rate_limit_exceeded";
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        break;
    }

    ctx->status = status;

    return status;
}


/* Puts the request in the queue (zone locked): NGX_OK, or an error status
 * when it cannot wait. */
static ngx_int_t
ngx_llmd_flow_enqueue(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx)
{
    ngx_int_t           i;
    ngx_llmd_flow_t    *f;
    ngx_llmd_shctx_t   *sh;
    ngx_llmd_waiter_t  *w;
    ngx_llmd_qentry_t  *e;

    sh = conf->sh;

    w = ngx_pcalloc(r->pool, sizeof(ngx_llmd_waiter_t));
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    i = ngx_llmd_flow_slot(conf, ctx->priority);
    if (i == NGX_ERROR) {
        return ngx_llmd_flow_refuse(conf, ctx, NGX_LLMD_ADMIT_REJECTED);
    }

    e = &sh->queue[i];
    e->priority = ctx->priority;
    e->model = ctx->model_hash;
    e->seq = ++sh->queue_seq;
    e->flow = ngx_llmd_flow_id(sh, &ctx->fairness);
    e->pid = ngx_pid;
    e->deadline = ngx_current_msec + conf->queue_timeout;
    e->state = NGX_LLMD_Q_WAITING;

    f = &sh->flows[e->flow];

    if (f->waiting++ == 0 && f->vtime < sh->vclock) {
        /* back after a pause: no credit for the time it sent nothing */
        f->vtime = sh->vclock;
    }

    sh->queued++;

    w->request = r;
    w->conf = conf;
    w->ctx = ctx;
    w->index = i;
    w->seq = e->seq;
    w->start = ngx_current_msec;

    conf->waiters[i] = w;
    ngx_queue_insert_tail(&ngx_llmd_flow_waiters, &w->queue);
    ctx->waiter = w;

    return NGX_OK;
}


/*
 * Admission of an inspected request bound for conf: NGX_DECLINED to go on
 * now, NGX_DONE while it waits (the phase resumes later), or the error
 * status it is answered with.
 */
ngx_int_t
ngx_llmd_flow_admit(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_uint_t                room;
    ngx_pool_cleanup_t       *cln;
    ngx_llmd_shctx_t         *sh;
    ngx_llmd_flow_cleanup_t  *fc;

    sh = conf->sh;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_llmd_flow_cleanup_t));
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fc = cln->data;
    fc->conf = conf;
    fc->ctx = ctx;
    cln->handler = ngx_llmd_flow_cleanup;

    ngx_llmd_resolve_peers(conf);

    ngx_shmtx_lock(&conf->shpool->mutex);

    ngx_llmd_flow_leaks(sh);

    if (sh->queued) {
        ngx_llmd_flow_orphans(sh);
    }

    room = ngx_llmd_flow_room(conf, ctx->model_hash);
    sh->saturated = (room == 0);

    if (ngx_llmd_flow_fits(conf, room, ctx->priority)
        && !ngx_llmd_flow_ahead(sh, ctx->priority, ctx->model_hash))
    {
        ngx_llmd_flow_grant(sh, ctx->model_hash, 0);
        ctx->flow_reserved = 1;
        ctx->flow_done = 1;
        ngx_llmd_flow_count(conf, ctx, NGX_LLMD_ADMIT_DIRECT);
        ngx_shmtx_unlock(&conf->shpool->mutex);
        return NGX_DECLINED;
    }

    if (ctx->priority < 0) {
        rc = ngx_llmd_flow_refuse(conf, ctx, NGX_LLMD_ADMIT_SHED);
        ngx_shmtx_unlock(&conf->shpool->mutex);
        return rc;
    }

    rc = ngx_llmd_flow_enqueue(r, conf, ctx);

    if (rc == NGX_OK) {
        /* room may have come with the requests ahead of it gone */
        ngx_llmd_flow_dispatch(conf);
    }

    ngx_shmtx_unlock(&conf->shpool->mutex);

    if (rc != NGX_OK) {
        return rc;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llmd: queued at priority %i, %ui waiting",
                   ctx->priority, sh->queued);

    /* wait as limit_req's delay does: watch the client, block writing */
    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    if (!ngx_llmd_flow_tick_ev.timer_set && !ngx_llmd_flow_tick_ev.posted) {
        ngx_add_timer(&ngx_llmd_flow_tick_ev, NGX_LLMD_FLOW_TICK);
    }

    if (sh->queue[((ngx_llmd_waiter_t *) ctx->waiter)->index].state
        == NGX_LLMD_Q_GRANTED)
    {
        ngx_llmd_flow_post();
    }

    return NGX_DONE;
}


static void
ngx_llmd_flow_resume(ngx_http_request_t *r)
{
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


/* One waiter's fate at a tick (zone locked): 1 when it leaves the queue. */
static ngx_uint_t
ngx_llmd_flow_settle(ngx_llmd_waiter_t *w)
{
    ngx_uint_t           outcome;
    ngx_llmd_ctx_t      *ctx;
    ngx_llmd_shctx_t    *sh;
    ngx_llmd_qentry_t   *e;

    sh = w->conf->sh;
    e = &sh->queue[w->index];
    ctx = w->ctx;

    if (e->seq != w->seq || e->pid != ngx_pid
        || e->state == NGX_LLMD_Q_DISPLACED)
    {
        outcome = NGX_LLMD_ADMIT_DISPLACED;

    } else if (e->state == NGX_LLMD_Q_GRANTED) {
        outcome = NGX_LLMD_ADMIT_QUEUED;

    } else if ((ngx_msec_int_t) (ngx_current_msec - e->deadline) >= 0) {
        outcome = NGX_LLMD_ADMIT_TIMEOUT;

    } else {
        return 0;
    }

    if (e->seq == w->seq && e->pid == ngx_pid) {
        if (e->state == NGX_LLMD_Q_GRANTED) {
            /* still granted: the request's until it is picked */
            ngx_llmd_flow_ungrant(sh, e->model, 1);
            ngx_llmd_flow_grant(sh, e->model, 0);
            e->state = NGX_LLMD_Q_FREE;
            ctx->flow_reserved = 1;

        } else {
            ngx_llmd_flow_release(sh, w->index);
        }
    }

    if (w->conf->waiters[w->index] == w) {
        w->conf->waiters[w->index] = NULL;
    }

    ngx_queue_remove(&w->queue);
    ctx->waiter = NULL;
    ctx->queue_ms = ngx_current_msec - w->start;

    if (outcome == NGX_LLMD_ADMIT_QUEUED) {
        ngx_llmd_flow_count(w->conf, ctx, outcome);
        ctx->flow_done = 1;
        ctx->status = NGX_DECLINED;

    } else {
        (void) ngx_llmd_flow_refuse(w->conf, ctx, outcome);
    }

    w->request->write_event_handler = ngx_llmd_flow_resume;
    ngx_post_event(w->request->connection->write, &ngx_posted_events);

    return 1;
}


static void
ngx_llmd_flow_tick(ngx_event_t *ev)
{
    ngx_queue_t          *q, *next;
    ngx_llmd_waiter_t    *w;
    ngx_llmd_srv_conf_t  *conf;

    ngx_llmd_flow_ticks++;

    for (q = ngx_queue_head(&ngx_llmd_flow_waiters);
         q != ngx_queue_sentinel(&ngx_llmd_flow_waiters);
         q = next)
    {
        next = ngx_queue_next(q);
        w = ngx_queue_data(q, ngx_llmd_waiter_t, queue);
        conf = w->conf;

        ngx_shmtx_lock(&conf->shpool->mutex);

        if (conf->dispatched != ngx_llmd_flow_ticks) {
            conf->dispatched = ngx_llmd_flow_ticks;
            ngx_llmd_flow_orphans(conf->sh);
            ngx_llmd_flow_dispatch(conf);
        }

        (void) ngx_llmd_flow_settle(w);

        ngx_shmtx_unlock(&conf->shpool->mutex);
    }

    if (!ngx_queue_empty(&ngx_llmd_flow_waiters) && !ev->timer_set) {
        ngx_add_timer(ev, NGX_LLMD_FLOW_TICK);
    }
}


/* A response ended, or a heartbeat poll did: room may have come. */
void
ngx_llmd_flow_freed(ngx_llmd_srv_conf_t *conf)
{
    if (!conf->flow || conf->sh->queued == 0) {
        return;
    }

    ngx_shmtx_lock(&conf->shpool->mutex);
    ngx_llmd_flow_dispatch(conf);
    ngx_shmtx_unlock(&conf->shpool->mutex);
}


/* The balancer counted the request at its peer: its reserved room is now
 * in the peer's in-flight figure. */
void
ngx_llmd_flow_picked(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx)
{
    if (!ctx->flow_reserved) {
        return;
    }

    ngx_shmtx_lock(&conf->shpool->mutex);
    ctx->flow_reserved = 0;
    ngx_llmd_flow_ungrant(conf->sh, ctx->model_hash, 0);
    ngx_shmtx_unlock(&conf->shpool->mutex);
}


/* ---- configuration ---------------------------------------------------- */

/* In each worker process: its cycle's log, not the one configuration
 * was read under (the old cycle's, after a reload). */
void
ngx_llmd_flow_init_process(ngx_cycle_t *cycle)
{
    ngx_llmd_flow_tick_ev.handler = ngx_llmd_flow_tick;
    ngx_llmd_flow_tick_ev.log = cycle->log;
    ngx_llmd_flow_tick_ev.data = &ngx_llmd_flow_tick_ev;
    ngx_queue_init(&ngx_llmd_flow_waiters);
}


ngx_int_t
ngx_llmd_flow_init_upstream(ngx_conf_t *cf, ngx_llmd_srv_conf_t *conf)
{
    if (conf->flow != 1) {
        conf->flow = 0;
        return NGX_OK;
    }

    ngx_conf_init_uint_value(conf->sat_inflight, 0);
    ngx_conf_init_uint_value(conf->sat_kv, 95);

    if (conf->redis == NULL && conf->sat_inflight == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llmd_queue in upstream \"%V\" needs llmd_redis "
                           "or llmd_saturation inflight=N",
                           &conf->upstream->host);
        return NGX_ERROR;
    }

    conf->waiters = ngx_pcalloc(cf->pool,
                                NGX_LLMD_QUEUE_MAX * sizeof(void *));
    if (conf->waiters == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* llmd_queue [size=N] [timeout=time] [reserve=N] [displace]; */
char *
ngx_llmd_queue_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i;

    if (lcf->flow == 1) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->flow = 1;
    lcf->queue_size = 100;
    lcf->queue_timeout = 30000;
    lcf->queue_displace = 0;
    lcf->queue_reserve = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n <= 0 || n > NGX_LLMD_QUEUE_MAX) {
                goto invalid;
            }
            lcf->queue_size = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;
            lcf->queue_timeout = ngx_parse_time(&s, 0);
            if (lcf->queue_timeout == (ngx_msec_t) NGX_ERROR
                || lcf->queue_timeout == 0)
            {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "reserve=", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);
            if (n == NGX_ERROR || n > 65536) {
                goto invalid;
            }
            lcf->queue_reserve = n;
            continue;
        }

        if (value[i].len == 8 && ngx_strncmp(value[i].data, "displace", 8)
                                 == 0)
        {
            lcf->queue_displace = 1;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* llmd_saturation [inflight=N|auto] [kv=P%]; */
char *
ngx_llmd_saturation_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "inflight=", 9) == 0) {
            if (value[i].len == 13
                && ngx_strncmp(value[i].data + 9, "auto", 4) == 0)
            {
                lcf->sat_inflight = 0;
                continue;
            }

            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n <= 0) {
                goto invalid;
            }
            lcf->sat_inflight = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "kv=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3,
                         value[i].len - 3
                         - (value[i].data[value[i].len - 1] == '%'));
            if (n <= 0 || n > 100) {
                goto invalid;
            }
            lcf->sat_kv = n;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}
