/*
 * Applying what Redis holds to the shared zone: worker heartbeats (peers,
 * load, timings), cache events (the precise prefix index), other gateways'
 * load and placements.  Every record is decoded with common/llmd_wire,
 * which bounds and type-checks it first; rejected records are counted.
 */

#include "ngx_llmd_redis.h"


static ngx_int_t
ngx_llmd_redis_peer_addr(ngx_llmd_redis_t *cl, ngx_llmd_peer_t *p,
    const char *addr)
{
    ngx_int_t         rc;
    ngx_addr_t        a;
    ngx_pool_t       *pool;

    pool = ngx_create_pool(1024, cl->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_parse_addr_port(pool, &a, (u_char *) addr, ngx_strlen(addr));

    if (rc == NGX_OK
        && (ngx_inet_get_port(a.sockaddr) == 0
            || a.socklen > sizeof(p->sockaddr)
            || (cl->conf->redis->allow
                && ngx_cidr_match(a.sockaddr, cl->conf->redis->allow)
                   != NGX_OK)))
    {
        rc = NGX_DECLINED;
    }

    if (rc == NGX_OK && p) {
        ngx_memcpy(p->sockaddr, a.sockaddr, a.socklen);
        p->socklen = a.socklen;
    }

    ngx_destroy_pool(pool);
    return rc;
}


void
ngx_llmd_redis_reject(ngx_llmd_redis_t *cl, const char *what,
    llmd_wire_status_t st)
{
    (void) ngx_atomic_fetch_add(&cl->conf->sh->records_rejected, 1);

    ngx_log_error(NGX_LOG_INFO, cl->log, 0, "llmd: rejected %s record: %s",
                  what, st == LLMD_WIRE_OK ? "address not allowed"
                                           : llmd_wire_strerror(st));
}


static void
ngx_llmd_redis_apply_heartbeat(ngx_llmd_redis_t *cl, llmd_heartbeat_t *hb,
    u_char *seen)
{
    size_t             kv_len;
    ngx_int_t          slot;
    ngx_str_t          name;
    ngx_llmd_peer_t   *p;
    ngx_llmd_shctx_t  *sh;

    sh = cl->conf->sh;

    /* the KV listener ends up in a request header to decode workers: it
     * must be an address the allow list admits, like the worker's own */
    kv_len = ngx_strlen(hb->kv_addr);

    if (ngx_llmd_redis_peer_addr(cl, NULL, hb->addr) != NGX_OK
        || (kv_len && ngx_llmd_redis_peer_addr(cl, NULL, hb->kv_addr)
                      != NGX_OK))
    {
        ngx_llmd_redis_reject(cl, "heartbeat", LLMD_WIRE_OK);
        return;
    }

    name.data = (u_char *) hb->addr;
    name.len = ngx_strlen(hb->addr);

    slot = ngx_llmd_zone_find_peer(cl->conf, name.data, name.len);

    if (slot < 0) {
        slot = ngx_llmd_zone_peer_slot(cl->conf, &name);
        if (slot < 0) {
            return;
        }

        /* not a server line: a discovered peer */
        p = &sh->peers[slot];
        if (ngx_llmd_redis_peer_addr(cl, p, hb->addr) != NGX_OK) {
            return;
        }
        p->dynamic = 1;
    }

    p = &sh->peers[slot];

    if (hb->seq != p->hb_seq || p->hb_seen == 0) {
        p->hb_seq = hb->seq;
        p->hb_seen = ngx_current_msec;
        p->pending_tokens = 0;
    }

    ngx_cpystrn(p->worker_id, (u_char *) hb->id, sizeof(p->worker_id));
    p->ttl = hb->ttl_ms ? hb->ttl_ms : 10 * cl->conf->redis->interval;
    p->role = hb->role & 3;
    p->events = hb->events ? 1 : 0;
    p->running = hb->running;
    p->waiting = hb->waiting;
    p->max_batch = hb->max_batch;
    p->mean_output = hb->requests_total
                     ? (double) hb->generation_tokens_total
                       / hb->requests_total
                     : 0.0;
    p->queued_prefill_tokens = hb->queued_prefill_tokens;
    p->kv_used = hb->kv_used;
    p->kv_total = hb->kv_total;
    p->prefill_tps = hb->prefill_tps;
    p->decode_ms_base = hb->decode_ms_base;
    p->decode_ms_per_seq = hb->decode_ms_per_seq;
    p->worker_ttft_ms = hb->ttft_ms;
    p->bytes_per_token = hb->bytes_per_token;
    ngx_llmd_model_learn(p, hb->model);

    /* written only when it changes: requests copy it without a lock */
    if (kv_len != p->kv_addr_len
        || ngx_memcmp(p->kv_addr, hb->kv_addr, kv_len) != 0)
    {
        p->kv_addr_len = 0;
        ngx_memory_barrier();
        ngx_memcpy(p->kv_addr, hb->kv_addr, kv_len);
        ngx_memory_barrier();
        p->kv_addr_len = kv_len;
    }

    seen[slot] = 1;
    (void) ngx_atomic_fetch_add(&sh->heartbeats, 1);
}


void
ngx_llmd_redis_on_heartbeats(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_llmd_redis_t  *cl = privdata;
    redisReply        *reply = r;

    u_char              seen[NGX_LLMD_MAX_PEERS];
    size_t              i;
    ngx_uint_t          n;
    ngx_llmd_peer_t    *p;
    ngx_llmd_shctx_t   *sh;
    llmd_heartbeat_t    hb;
    llmd_wire_status_t  st;
    redisReply         *f, *v;

    if (reply == NULL) {
        return;         /* disconnected: pending callbacks get NULL */
    }

    if (cl->pending) {
        cl->pending--;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        (void) ngx_atomic_fetch_add(&cl->conf->sh->redis_errors, 1);
        return;
    }

    sh = cl->conf->sh;
    ngx_memzero(seen, sizeof(seen));

    for (i = 0; i + 1 < reply->elements; i += 2) {
        f = reply->element[i];
        v = reply->element[i + 1];

        if (v->type != REDIS_REPLY_STRING) {
            ngx_llmd_redis_reject(cl, "heartbeat", LLMD_WIRE_ETYPE);
            continue;
        }

        st = llmd_wire_unpack_heartbeat(v->str, v->len, &hb);
        if (st != LLMD_WIRE_OK) {
            ngx_llmd_redis_reject(cl, "heartbeat", st);
            continue;
        }

        ngx_llmd_redis_apply_heartbeat(cl, &hb, seen);

        /* a worker that died without saying goodbye: forget it after a
         * while, so the hash does not grow forever */
        n = ngx_llmd_zone_find_peer(cl->conf, (u_char *) hb.addr,
                                    ngx_strlen(hb.addr));
        if ((ngx_int_t) n >= 0
            && ngx_llmd_since(sh->peers[n].hb_seen) > NGX_LLMD_REDIS_FORGET)
        {
            redisAsyncCommand(ac, NULL, NULL, "HDEL %s %b",
                              cl->conf->redis->hb_key, f->str, f->len);
        }
    }

    for (n = 0; n < sh->npeers; n++) {
        p = &sh->peers[n];

        if (p->hb_seen == 0) {
            continue;   /* never published: a plain server line */
        }

        p->alive = seen[n] && ngx_llmd_since(p->hb_seen) <= p->ttl;
    }

    ngx_llmd_model_default(cl->conf);

    sh->redis_ok = ngx_current_msec;
    (void) ngx_atomic_fetch_add(&sh->polls, 1);

    /* the heartbeats may show room for queued requests */
    ngx_llmd_flow_freed(cl->conf);
}


void
ngx_llmd_redis_on_gateways(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_llmd_redis_t  *cl = privdata;
    redisReply        *reply = r;

    size_t                i;
    uint32_t              k;
    ngx_int_t             slot;
    ngx_uint_t            n, gateways;
    uint64_t              now_ms;
    ngx_llmd_shctx_t     *sh;
    llmd_wire_status_t    st;
    llmd_gateway_load_t  *gw;
    redisReply           *v;
    static ngx_atomic_uint_t  req[NGX_LLMD_MAX_PEERS], tok[NGX_LLMD_MAX_PEERS],
                              work[NGX_LLMD_MAX_PEERS];

    if (reply == NULL) {
        return;
    }

    if (cl->pending) {
        cl->pending--;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    sh = cl->conf->sh;
    gw = (llmd_gateway_load_t *) ngx_llmd_record_buf;
    now_ms = (uint64_t) ngx_time() * 1000;
    gateways = 0;

    ngx_memzero(req, sizeof(req));
    ngx_memzero(tok, sizeof(tok));
    ngx_memzero(work, sizeof(work));

    for (i = 0; i + 1 < reply->elements; i += 2) {
        v = reply->element[i + 1];

        if (v->type != REDIS_REPLY_STRING) {
            continue;
        }

        st = llmd_wire_unpack_gateway(v->str, v->len, gw);
        if (st != LLMD_WIRE_OK) {
            ngx_llmd_redis_reject(cl, "gateway", st);
            continue;
        }

        if (ngx_strcmp(gw->id, cl->gw_id) == 0
            || gw->ts_ms + 3 * cl->conf->redis->interval + 2000 < now_ms)
        {
            continue;   /* ourselves, or a gateway that went away */
        }

        gateways++;

        for (k = 0; k < gw->npeers; k++) {
            slot = ngx_llmd_zone_find_peer(cl->conf,
                                           (u_char *) gw->peers[k].addr,
                                           ngx_strlen(gw->peers[k].addr));
            if (slot >= 0) {
                req[slot] += gw->peers[k].inflight;
                tok[slot] += gw->peers[k].inflight_tokens;
                work[slot] += gw->peers[k].inflight_work;
            }
        }
    }

    for (n = 0; n < sh->npeers; n++) {
        sh->peers[n].remote_inflight = req[n];
        sh->peers[n].remote_tokens = tok[n];
        sh->peers[n].remote_work = work[n];
    }

    sh->remote_gateways = gateways;
}


void
ngx_llmd_redis_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_llmd_redis_t  *cl = privdata;
    redisReply        *reply = r;

    if (reply == NULL) {
        return;
    }

    if (cl->pending) {
        cl->pending--;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        (void) ngx_atomic_fetch_add(&cl->conf->sh->redis_errors, 1);
        ngx_log_error(NGX_LOG_WARN, cl->log, 0, "llmd: redis error: %s",
                      reply->str);
    }
}


static void
ngx_llmd_redis_staleness(ngx_llmd_shctx_t *sh, uint64_t ts_ms)
{
    uint64_t    now_ms, ms;
    ngx_uint_t  b;
    ngx_time_t *tp;

    tp = ngx_timeofday();
    now_ms = (uint64_t) tp->sec * 1000 + tp->msec;
    ms = now_ms > ts_ms ? now_ms - ts_ms : 0;

    /* buckets: <1, <2, <5, <10, <20, <50, <100, more (ms) */
    b = ms < 1 ? 0 : ms < 2 ? 1 : ms < 5 ? 2 : ms < 10 ? 3 : ms < 20 ? 4
        : ms < 50 ? 5 : ms < 100 ? 6 : 7;

    (void) ngx_atomic_fetch_add(&sh->staleness[b], 1);
    (void) ngx_atomic_fetch_add(&sh->staleness_sum_ms, ms);
}


static void
ngx_llmd_redis_apply_event(ngx_llmd_redis_t *cl, llmd_cache_event_t *ev,
    ngx_uint_t placement)
{
    ngx_int_t          slot;
    ngx_str_t          name;
    ngx_llmd_peer_t   *p;
    ngx_llmd_shctx_t  *sh;

    sh = cl->conf->sh;

    if (ev->block_size != cl->conf->block_size) {
        ngx_llmd_redis_reject(cl, "cache event", LLMD_WIRE_ETYPE);
        return;
    }

    name.data = (u_char *) ev->addr;
    name.len = ngx_strlen(ev->addr);

    slot = ngx_llmd_zone_find_peer(cl->conf, name.data, name.len);

    if (placement) {
        /* another gateway's pick: where the prefix is, for a worker without
         * events; its home, for one with (never that it holds it) */
        if (slot < 0 || ngx_strcmp(ev->id, cl->gw_id) == 0) {
            return;
        }

        ngx_llmd_zone_record(cl->conf, ev->keys, ev->nkeys, slot, 0, NULL, 0,
                             0);
        return;
    }

    if (slot < 0) {
        if (ngx_llmd_redis_peer_addr(cl, NULL, ev->addr) != NGX_OK) {
            ngx_llmd_redis_reject(cl, "cache event", LLMD_WIRE_OK);
            return;
        }

        slot = ngx_llmd_zone_peer_slot(cl->conf, &name);
        if (slot < 0) {
            return;
        }

        /* a worker's events can come before its first heartbeat: register
         * it as discovered now, as its heartbeat would, or the heartbeat
         * finds a slot that looks like a server line and the worker is
         * never a candidate */
        p = &sh->peers[slot];
        if (!p->dynamic) {
            if (ngx_llmd_redis_peer_addr(cl, p, ev->addr) != NGX_OK) {
                return;
            }
            p->dynamic = 1;
        }
    }

    p = &sh->peers[slot];
    p->events = 1;

    /* as the requests for its model are (ngx_llmd_model.c) */
    llmd_prefix_salt(ev->keys, ev->nkeys, p->model_hash);

    switch (ev->type) {

    case LLMD_EVENT_STORED:
        ngx_llmd_zone_record(cl->conf, ev->keys, ev->nkeys, slot, 0, NULL, 0,
                             1);
        break;

    case LLMD_EVENT_REMOVED:
        /* no longer held; still its home (ngx_llmd_zone_match) */
        ngx_llmd_zone_remove(cl->conf, ev->keys, ev->nkeys, slot);
        break;

    default:    /* CLEARED, SNAPSHOT */
        ngx_llmd_zone_clear_peer(cl->conf, slot);
        if (ev->type == LLMD_EVENT_SNAPSHOT) {
            ngx_llmd_zone_record(cl->conf, ev->keys, ev->nkeys, slot, 0, NULL,
                                 0, 1);
        }
        break;
    }

    ngx_llmd_redis_staleness(sh, ev->ts_ms);
    (void) ngx_atomic_fetch_add(&sh->events_applied, 1);
}


void
ngx_llmd_redis_decode_event(ngx_llmd_redis_t *cl, redisReply *v,
    ngx_uint_t placement)
{
    llmd_wire_status_t  st;
    llmd_cache_event_t  ev;

    if (v->type != REDIS_REPLY_STRING) {
        ngx_llmd_redis_reject(cl, "cache event", LLMD_WIRE_ETYPE);
        return;
    }

    ev.keys = ngx_llmd_event_keys;
    ev.max_keys = LLMD_WIRE_MAX_KEYS;

    st = llmd_wire_unpack_event(v->str, v->len, &ev);
    if (st != LLMD_WIRE_OK) {
        ngx_llmd_redis_reject(cl, "cache event", st);
        return;
    }

    ngx_llmd_redis_apply_event(cl, &ev, placement);
}


/* XREAD reply: [[stream, [[id, [field, value, ...]], ...]], ...] */
void
ngx_llmd_redis_on_streams(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_llmd_redis_t  *cl = privdata;
    redisReply        *reply = r;

    char               *pos;
    size_t              i, j, k;
    ngx_uint_t          placement;
    redisReply         *s, *entries, *e, *fields;
    ngx_llmd_shctx_t   *sh;

    cl->stream_busy = 0;

    if (reply == NULL) {
        return;
    }

    sh = cl->conf->sh;

    if (reply->type == REDIS_REPLY_ARRAY) {

        for (i = 0; i < reply->elements; i++) {
            s = reply->element[i];

            if (s->type != REDIS_REPLY_ARRAY || s->elements != 2
                || s->element[0]->type != REDIS_REPLY_STRING
                || s->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            placement = ngx_strcmp(s->element[0]->str,
                                   cl->conf->redis->placements_key) == 0;
            pos = placement ? sh->placements_id : sh->events_id;
            entries = s->element[1];

            for (j = 0; j < entries->elements; j++) {
                e = entries->element[j];

                if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
                    || e->element[0]->type != REDIS_REPLY_STRING
                    || e->element[0]->len >= sizeof(sh->events_id))
                {
                    continue;
                }

                ngx_cpystrn((u_char *) pos, (u_char *) e->element[0]->str,
                            e->element[0]->len + 1);

                fields = e->element[1];
                if (fields->type != REDIS_REPLY_ARRAY) {
                    continue;
                }

                for (k = 0; k + 1 < fields->elements; k += 2) {
                    if (fields->element[k]->type == REDIS_REPLY_STRING
                        && fields->element[k]->len == 1
                        && fields->element[k]->str[0] == 'e')
                    {
                        ngx_llmd_redis_decode_event(cl, fields->element[k + 1],
                                                    placement);
                    }
                }
            }
        }

    } else if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_WARN, cl->log, 0, "llmd: redis XREAD: %s",
                      reply->str);
        return;
    }

    if (cl->owner && !ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_llmd_redis_read_streams(cl);
    }
}


void
ngx_llmd_redis_read_streams(ngx_llmd_redis_t *cl)
{
    char                    block[NGX_INT_T_LEN + 1];
    ngx_llmd_shctx_t       *sh;
    ngx_llmd_redis_conf_t  *rc;

    if (cl->stream == NULL || cl->stream_busy || !cl->have_ids) {
        return;
    }

    sh = cl->conf->sh;
    rc = cl->conf->redis;

    /* blocking on its own connection: an event is applied the moment
     * Redis has it; the timeout lets ownership and shutdown be noticed */
    *ngx_sprintf((u_char *) block, "%M", rc->interval) = '\0';

    if (redisAsyncCommand(cl->stream, ngx_llmd_redis_on_streams, cl,
                          "XREAD COUNT 1000 BLOCK %s STREAMS %s %s %s %s",
                          block, rc->events_key, rc->placements_key,
                          sh->events_id, sh->placements_id)
        == REDIS_OK)
    {
        cl->stream_busy = 1;
    }
}


/* The newest ids of both streams: a new mirror starts from now and takes
 * the past from the workers' snapshots. */
void
ngx_llmd_redis_on_last_id(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_llmd_redis_t  *cl = privdata;
    redisReply        *reply = r;

    ngx_uint_t         i;
    char              *pos;
    redisReply        *s, *id;
    ngx_llmd_shctx_t  *sh;

    if (reply == NULL) {
        return;
    }

    if (cl->pending) {
        cl->pending--;
    }

    sh = cl->conf->sh;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        return;
    }

    for (i = 0; i < 2; i++) {
        s = reply->element[i];
        pos = i == 0 ? sh->events_id : sh->placements_id;

        if (s->type == REDIS_REPLY_ARRAY && s->elements == 1
            && s->element[0]->type == REDIS_REPLY_ARRAY
            && s->element[0]->elements == 2
            && s->element[0]->element[0]->type == REDIS_REPLY_STRING
            && s->element[0]->element[0]->len < sizeof(sh->events_id))
        {
            id = s->element[0]->element[0];
            ngx_cpystrn((u_char *) pos, (u_char *) id->str, id->len + 1);

        } else {
            ngx_cpystrn((u_char *) pos, (u_char *) "0-0", 4);
        }
    }

    cl->have_ids = 1;
    ngx_llmd_redis_read_streams(cl);
}


void
ngx_llmd_redis_on_snapshot(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_llmd_redis_t  *cl = privdata;
    redisReply        *reply = r;

    if (reply == NULL) {
        return;
    }

    if (cl->pending) {
        cl->pending--;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        ngx_llmd_redis_decode_event(cl, reply, 0);
    }
}
