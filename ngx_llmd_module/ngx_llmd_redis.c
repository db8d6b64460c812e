/*
 * The Redis mirror: one nginx worker process per upstream (chosen through a
 * lock in the shared zone, taken over when its owner dies) keeps two async
 * hiredis connections on nginx's own event loop:
 *
 *   state:  every interval, HGETALL of worker heartbeats and of the other
 *           gateways' load, and our own load and placements published;
 *   stream: XREAD BLOCK on the cache-event and placement streams, so an
 *           event reaches shared memory as soon as Redis has it.
 *
 * Everything lands in the shared zone; the request path never talks to
 * Redis.  When Redis goes away routing continues on the last known state,
 * and past llmd_redis stale= the balancer falls back to local load and
 * approximate prefixes.
 */

#include "ngx_llmd.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_LLMD_REDIS_BACKOFF_MIN  100
#define NGX_LLMD_REDIS_BACKOFF_MAX  5000
#define NGX_LLMD_REDIS_FORGET       60000   /* HDEL heartbeats silent this long */
#define NGX_LLMD_RECORD_BUF         (64 * 1024)


typedef struct {
    ngx_llmd_srv_conf_t  *conf;
    redisAsyncContext    *state;
    redisAsyncContext    *stream;
    ngx_event_t           timer;
    ngx_msec_t            backoff;
    ngx_msec_t            retry_at;
    ngx_msec_t            sent_at;
    ngx_uint_t            pending;          /* state replies outstanding */
    ngx_uint_t            connected;        /* contexts connected (0..2) */
    unsigned              owner:1;
    unsigned              have_ids:1;       /* stream positions known */
    unsigned              stream_busy:1;
    unsigned              down_logged:1;
    uint64_t              seq;
    uint64_t              snap_synced[NGX_LLMD_MAX_PEERS / 64];
    ngx_uint_t            state_seen;       /* last logged redis_state */
    char                  gw_id[LLMD_WIRE_ID_MAX];
    ngx_log_t            *log;
} ngx_llmd_redis_t;


static ngx_array_t  *ngx_llmd_redis_clients;    /* this process's */
static uint64_t      ngx_llmd_event_keys[LLMD_WIRE_MAX_KEYS];
static char          ngx_llmd_record_buf[NGX_LLMD_RECORD_BUF];


static void ngx_llmd_redis_tick(ngx_event_t *ev);
static void ngx_llmd_redis_close(ngx_llmd_redis_t *cl, const char *why);
static void ngx_llmd_redis_read_streams(ngx_llmd_redis_t *cl);


/* ---- hiredis on nginx's event loop ---- */

static void
ngx_llmd_redis_add_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    /* level-triggered: hiredis reads at most 16 KiB per call */
    if (!c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_llmd_redis_del_read(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_llmd_redis_add_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (!c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_llmd_redis_del_write(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_llmd_redis_cleanup(void *privdata)
{
    ngx_connection_t  *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* hiredis closes the descriptor itself, right after this */
    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}


static void
ngx_llmd_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleRead(c->data);      /* may free c: touch nothing after */
}


static void
ngx_llmd_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    redisAsyncHandleWrite(c->data);
}


static void
ngx_llmd_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_llmd_redis_t  *cl = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        if (ac == cl->state) {
            cl->state = NULL;
        } else {
            cl->stream = NULL;
        }
        ngx_llmd_redis_close(cl, ac->errstr);
        return;
    }

    if (++cl->connected == 2) {
        ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                      "llmd: redis connected, mirroring pool \"%V\"",
                      &cl->conf->redis->pool);
        cl->backoff = NGX_LLMD_REDIS_BACKOFF_MIN;
        cl->down_logged = 0;
        ngx_memzero(cl->snap_synced, sizeof(cl->snap_synced));
    }
}


static void
ngx_llmd_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_llmd_redis_t  *cl = ac->data;

    if (ac == cl->state) {
        cl->state = NULL;
    } else if (ac == cl->stream) {
        cl->stream = NULL;
        cl->stream_busy = 0;
    }

    if (cl->connected) {
        cl->connected--;
    }

    if (status != REDIS_OK) {
        ngx_llmd_redis_close(cl, ac->errstr);
    }
}


static redisAsyncContext *
ngx_llmd_redis_connect(ngx_llmd_redis_t *cl)
{
    char                   host[256];
    ngx_connection_t      *c;
    redisAsyncContext     *ac;
    ngx_llmd_redis_conf_t *rc;

    rc = cl->conf->redis;

    ngx_cpystrn((u_char *) host, rc->host.data,
                ngx_min(rc->host.len + 1, sizeof(host)));

    ac = rc->port ? redisAsyncConnect(host, (int) rc->port)
                  : redisAsyncConnectUnix(host);

    if (ac == NULL) {
        return NULL;
    }

    if (ac->err) {
        if (!cl->down_logged) {
            ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                          "llmd: redis \"%s\" unreachable: %s", host,
                          ac->errstr);
        }
        redisAsyncFree(ac);
        return NULL;
    }

    c = ngx_get_connection(ac->c.fd, cl->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NULL;
    }

    c->data = ac;
    c->read->handler = ngx_llmd_redis_read_handler;
    c->write->handler = ngx_llmd_redis_write_handler;
    c->read->log = cl->log;
    c->write->log = cl->log;

    ac->data = cl;
    ac->ev.data = c;
    ac->ev.addRead = ngx_llmd_redis_add_read;
    ac->ev.delRead = ngx_llmd_redis_del_read;
    ac->ev.addWrite = ngx_llmd_redis_add_write;
    ac->ev.delWrite = ngx_llmd_redis_del_write;
    ac->ev.cleanup = ngx_llmd_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_llmd_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, ngx_llmd_redis_on_disconnect);

    if (rc->password.len) {
        if (rc->user.len) {
            redisAsyncCommand(ac, NULL, NULL, "AUTH %b %b",
                              rc->user.data, rc->user.len,
                              rc->password.data, rc->password.len);
        } else {
            redisAsyncCommand(ac, NULL, NULL, "AUTH %b",
                              rc->password.data, rc->password.len);
        }
    }

    return ac;
}


/* Drops both connections; the tick reconnects after a backoff. */
static void
ngx_llmd_redis_close(ngx_llmd_redis_t *cl, const char *why)
{
    redisAsyncContext  *ac;

    if (!cl->down_logged) {
        ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                      "llmd: redis connection lost (%s), routing on the "
                      "last known state", why ? why : "closed");
        cl->down_logged = 1;
    }

    (void) ngx_atomic_fetch_add(&cl->conf->sh->redis_errors, 1);

    cl->retry_at = ngx_current_msec + cl->backoff;
    cl->backoff = ngx_min(cl->backoff * 2, NGX_LLMD_REDIS_BACKOFF_MAX);
    cl->pending = 0;
    cl->have_ids = 0;

    if (cl->state) {
        ac = cl->state;
        cl->state = NULL;
        redisAsyncFree(ac);
    }

    if (cl->stream) {
        ac = cl->stream;
        cl->stream = NULL;
        redisAsyncFree(ac);
    }

    cl->stream_busy = 0;
    cl->connected = 0;
}


/* ---- applying what Redis holds ---- */

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


static void
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
    ngx_int_t          slot;
    ngx_str_t          name;
    ngx_llmd_peer_t   *p;
    ngx_llmd_shctx_t  *sh;

    sh = cl->conf->sh;

    if (ngx_llmd_redis_peer_addr(cl, NULL, hb->addr) != NGX_OK) {
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
    p->queued_prefill_tokens = hb->queued_prefill_tokens;
    p->kv_used = hb->kv_used;
    p->kv_total = hb->kv_total;
    p->prefill_tps = hb->prefill_tps;
    p->decode_ms_base = hb->decode_ms_base;
    p->decode_ms_per_seq = hb->decode_ms_per_seq;
    p->worker_ttft_ms = hb->ttft_ms;

    seen[slot] = 1;
    (void) ngx_atomic_fetch_add(&sh->heartbeats, 1);
}


static void
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
            && ngx_current_msec - sh->peers[n].hb_seen > NGX_LLMD_REDIS_FORGET)
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

        p->alive = seen[n] && ngx_current_msec - p->hb_seen <= p->ttl;
    }

    sh->redis_ok = ngx_current_msec;
    (void) ngx_atomic_fetch_add(&sh->polls, 1);
}


static void
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
    static ngx_atomic_uint_t  req[NGX_LLMD_MAX_PEERS], tok[NGX_LLMD_MAX_PEERS];

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
            }
        }
    }

    for (n = 0; n < sh->npeers; n++) {
        sh->peers[n].remote_inflight = req[n];
        sh->peers[n].remote_tokens = tok[n];
    }

    sh->remote_gateways = gateways;
}


static void
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
        /* another gateway's pick: only for peers without their own events */
        if (slot < 0 || ngx_strcmp(ev->id, cl->gw_id) == 0
            || sh->peers[slot].events)
        {
            return;
        }

        ngx_llmd_zone_record(cl->conf, ev->keys, ev->nkeys, slot, 0);
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
    }

    p = &sh->peers[slot];
    p->events = 1;

    switch (ev->type) {

    case LLMD_EVENT_STORED:
        ngx_llmd_zone_record(cl->conf, ev->keys, ev->nkeys, slot, 0);
        break;

    case LLMD_EVENT_REMOVED:
        ngx_llmd_zone_remove(cl->conf, ev->keys, ev->nkeys, slot);
        break;

    default:    /* CLEARED, SNAPSHOT */
        ngx_llmd_zone_forget_peer(cl->conf, slot);
        if (ev->type == LLMD_EVENT_SNAPSHOT) {
            ngx_llmd_zone_record(cl->conf, ev->keys, ev->nkeys, slot, 0);
        }
        break;
    }

    ngx_llmd_redis_staleness(sh, ev->ts_ms);
    (void) ngx_atomic_fetch_add(&sh->events_applied, 1);
}


static void
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
static void
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


static void
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
static void
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


static void
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


/* ---- what this gateway publishes ---- */

static void
ngx_llmd_redis_publish_load(ngx_llmd_redis_t *cl)
{
    size_t                 len;
    ngx_uint_t             n;
    ngx_time_t            *tp;
    ngx_llmd_shctx_t      *sh;
    llmd_gateway_load_t   *gw;
    static char            out[NGX_LLMD_RECORD_BUF];

    sh = cl->conf->sh;
    gw = (llmd_gateway_load_t *) ngx_llmd_record_buf;
    tp = ngx_timeofday();

    ngx_memzero(gw, sizeof(llmd_gateway_load_t));
    ngx_cpystrn((u_char *) gw->id, (u_char *) cl->gw_id, sizeof(gw->id));
    gw->seq = ++cl->seq;
    gw->ts_ms = (uint64_t) tp->sec * 1000 + tp->msec;

    for (n = 0; n < sh->npeers && gw->npeers < LLMD_WIRE_MAX_PEERS; n++) {
        if (sh->peers[n].inflight == 0) {
            continue;
        }

        ngx_memcpy(gw->peers[gw->npeers].addr, sh->peers[n].name,
                   ngx_min(sh->peers[n].name_len, LLMD_WIRE_ADDR_MAX - 1));
        gw->peers[gw->npeers].inflight = sh->peers[n].inflight;
        gw->peers[gw->npeers].inflight_tokens = sh->peers[n].inflight_tokens;
        gw->npeers++;
    }

    if (llmd_wire_pack_gateway(gw, out, sizeof(out), &len) != LLMD_WIRE_OK) {
        return;
    }

    if (redisAsyncCommand(cl->state, ngx_llmd_redis_on_reply, cl,
                          "HSET %s %s %b", cl->conf->redis->gw_key,
                          cl->gw_id, out, len)
        == REDIS_OK)
    {
        cl->pending++;
    }
}


/* Approximate placements this gateway made, grouped by peer, for other
 * gateways (workers that publish events need none). */
static void
ngx_llmd_redis_publish_placements(ngx_llmd_redis_t *cl)
{
    size_t                  len;
    uint32_t                slot;
    ngx_uint_t              i, n, tail, head, done;
    ngx_time_t             *tp;
    ngx_llmd_shctx_t       *sh;
    llmd_cache_event_t      ev;
    ngx_llmd_placement_t   *pl;
    static char             out[NGX_LLMD_RECORD_BUF];
    static ngx_llmd_placement_t  batch[1024];

    sh = cl->conf->sh;

    ngx_shmtx_lock(&cl->conf->shpool->mutex);

    tail = sh->placements_tail;
    head = sh->placements_head;
    n = ngx_min(head - tail, 1024);

    for (i = 0; i < n; i++) {
        batch[i] = sh->placements[(tail + i) % NGX_LLMD_PLACEMENTS];
    }

    sh->placements_tail = tail + n;

    ngx_shmtx_unlock(&cl->conf->shpool->mutex);

    if (n == 0) {
        return;
    }

    tp = ngx_timeofday();

    ngx_memzero(&ev, sizeof(ev));
    ngx_cpystrn((u_char *) ev.id, (u_char *) cl->gw_id, sizeof(ev.id));
    ev.type = LLMD_EVENT_STORED;
    ev.ts_ms = (uint64_t) tp->sec * 1000 + tp->msec;
    ev.block_size = cl->conf->block_size;
    ev.keys = ngx_llmd_event_keys;

    /* one event per peer, in pick order */
    for (done = 0; done < n; /* void */) {
        slot = NGX_LLMD_NIL;
        ev.nkeys = 0;

        for (i = 0; i < n; i++) {
            pl = &batch[i];
            if (pl->slot == NGX_LLMD_NIL) {
                continue;
            }
            if (slot == NGX_LLMD_NIL) {
                slot = pl->slot;
            }
            if (pl->slot == slot) {
                ngx_llmd_event_keys[ev.nkeys++] = pl->key;
                pl->slot = NGX_LLMD_NIL;
                done++;
            }
        }

        if (slot >= sh->npeers) {
            continue;
        }

        ngx_memzero(ev.addr, sizeof(ev.addr));
        ngx_memcpy(ev.addr, sh->peers[slot].name,
                   ngx_min(sh->peers[slot].name_len, LLMD_WIRE_ADDR_MAX - 1));

        if (sh->peers[slot].events
            || llmd_wire_pack_event(&ev, out, sizeof(out), &len)
               != LLMD_WIRE_OK)
        {
            continue;
        }

        if (redisAsyncCommand(cl->state, ngx_llmd_redis_on_reply, cl,
                              "XADD %s MAXLEN ~ 100000 * e %b",
                              cl->conf->redis->placements_key, out, len)
            == REDIS_OK)
        {
            cl->pending++;
        }
    }
}


/* ---- the tick ---- */

static void
ngx_llmd_redis_state_log(ngx_llmd_redis_t *cl)
{
    ngx_uint_t              state;
    ngx_llmd_shctx_t       *sh;
    ngx_llmd_redis_conf_t  *rc;

    sh = cl->conf->sh;
    rc = cl->conf->redis;

    if (sh->redis_ok == 0) {
        state = NGX_LLMD_REDIS_WAITING;

    } else if (ngx_current_msec - sh->redis_ok > rc->stale) {
        state = NGX_LLMD_REDIS_STALE;

    } else {
        state = NGX_LLMD_REDIS_FRESH;
    }

    if (state == sh->redis_state) {
        return;
    }

    if (state == NGX_LLMD_REDIS_STALE) {
        ngx_log_error(NGX_LOG_WARN, cl->log, 0,
                      "llmd: fleet state from redis is stale (older than "
                      "%M ms), falling back to local load and approximate "
                      "prefixes", rc->stale);

    } else if (state == NGX_LLMD_REDIS_FRESH) {
        ngx_log_error(NGX_LOG_NOTICE, cl->log, 0,
                      "llmd: fleet state from redis is fresh");
    }

    sh->redis_state = state;
}


static void
ngx_llmd_redis_poll(ngx_llmd_redis_t *cl)
{
    ngx_uint_t              n;
    ngx_llmd_shctx_t       *sh;
    ngx_llmd_redis_conf_t  *rc;

    sh = cl->conf->sh;
    rc = cl->conf->redis;

    if (cl->pending) {
        /* no reply for a long time: the connection is stuck */
        if (ngx_current_msec - cl->sent_at > rc->stale) {
            ngx_llmd_redis_close(cl, "timed out");
        }
        return;
    }

    cl->sent_at = ngx_current_msec;

    if (!cl->have_ids) {
        /* both streams' newest ids in one reply */
        redisAsyncCommand(cl->state, NULL, NULL, "MULTI");
        redisAsyncCommand(cl->state, NULL, NULL,
                          "XREVRANGE %s + - COUNT 1", rc->events_key);
        redisAsyncCommand(cl->state, NULL, NULL,
                          "XREVRANGE %s + - COUNT 1", rc->placements_key);

        if (redisAsyncCommand(cl->state, ngx_llmd_redis_on_last_id, cl,
                              "EXEC") == REDIS_OK)
        {
            cl->pending++;
        }
    }

    if (redisAsyncCommand(cl->state, ngx_llmd_redis_on_heartbeats, cl,
                          "HGETALL %s", rc->hb_key) == REDIS_OK)
    {
        cl->pending++;
    }

    if (redisAsyncCommand(cl->state, ngx_llmd_redis_on_gateways, cl,
                          "HGETALL %s", rc->gw_key) == REDIS_OK)
    {
        cl->pending++;
    }

    ngx_llmd_redis_publish_load(cl);
    ngx_llmd_redis_publish_placements(cl);

    /* workers that publish events and were not synced on this connection:
     * their snapshot replaces whatever we believed */
    for (n = 0; n < sh->npeers; n++) {
        if (!sh->peers[n].events || !sh->peers[n].alive
            || (cl->snap_synced[n / 64] & ((uint64_t) 1 << (n % 64))))
        {
            continue;
        }

        cl->snap_synced[n / 64] |= (uint64_t) 1 << (n % 64);

        if (redisAsyncCommand(cl->state, ngx_llmd_redis_on_snapshot, cl,
                              "GET %s%s", rc->snap_prefix,
                              sh->peers[n].worker_id)
            == REDIS_OK)
        {
            cl->pending++;
        }
    }

    ngx_llmd_redis_read_streams(cl);
}


static void
ngx_llmd_redis_tick(ngx_event_t *ev)
{
    ngx_llmd_redis_t  *cl = ev->data;

    ngx_pid_t          owner;
    ngx_llmd_shctx_t  *sh;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    sh = cl->conf->sh;
    owner = (ngx_pid_t) sh->owner_pid;

    if (owner != ngx_pid) {
        /* take over when nobody owns the mirror or its owner went silent
         * (died, or exited on reload) */
        if (owner == 0
            || ngx_current_msec - sh->owner_beat
               > 3 * cl->conf->redis->interval + 1000)
        {
            if (ngx_atomic_cmp_set(&sh->owner_pid, owner, ngx_pid)) {
                ngx_log_error(NGX_LOG_INFO, cl->log, 0,
                              "llmd: this worker now mirrors redis");
                sh->owner_beat = ngx_current_msec;
                cl->owner = 1;
            }
        }

        if (!cl->owner) {
            ngx_add_timer(ev, cl->conf->redis->interval);
            return;
        }
    }

    cl->owner = 1;
    sh->owner_beat = ngx_current_msec;

    if (cl->state == NULL && cl->stream == NULL
        && (ngx_msec_int_t) (ngx_current_msec - cl->retry_at) >= 0)
    {
        cl->state = ngx_llmd_redis_connect(cl);
        cl->stream = cl->state ? ngx_llmd_redis_connect(cl) : NULL;

        if (cl->stream == NULL) {
            ngx_llmd_redis_close(cl, "connect failed");
        }
    }

    if (cl->connected == 2) {
        ngx_llmd_redis_poll(cl);
    }

    ngx_llmd_redis_state_log(cl);

    ngx_add_timer(ev, cl->conf->redis->interval);
}


ngx_uint_t
ngx_llmd_redis_fresh(ngx_llmd_srv_conf_t *conf)
{
    return conf->redis && conf->sh->redis_ok
           && ngx_current_msec - conf->sh->redis_ok <= conf->redis->stale;
}


ngx_int_t
ngx_llmd_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_llmd_redis_t       *cl;
    ngx_llmd_srv_conf_t   **ups;
    ngx_llmd_main_conf_t   *lmcf;

    if (ngx_process != NGX_PROCESS_WORKER && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;      /* not in cache managers and loaders */
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_llmd_module);
    if (lmcf == NULL) {
        return NGX_OK;
    }

    ngx_llmd_redis_clients = ngx_array_create(cycle->pool, 2,
                                              sizeof(ngx_llmd_redis_t));
    if (ngx_llmd_redis_clients == NULL) {
        return NGX_ERROR;
    }

    ups = lmcf->upstreams.elts;

    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        if (ups[i]->redis == NULL) {
            continue;
        }

        cl = ngx_array_push(ngx_llmd_redis_clients);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(cl, sizeof(ngx_llmd_redis_t));
        cl->conf = ups[i];
        cl->log = cycle->log;
        cl->backoff = NGX_LLMD_REDIS_BACKOFF_MIN;
        cl->state_seen = NGX_LLMD_REDIS_OFF;

        /* one id per nginx instance: the master's pid survives reloads */
        *ngx_snprintf((u_char *) cl->gw_id, sizeof(cl->gw_id) - 1, "%V-%P",
                      &cycle->hostname, getppid()) = '\0';

        if (ups[i]->sh->redis_state == NGX_LLMD_REDIS_OFF) {
            ups[i]->sh->redis_state = NGX_LLMD_REDIS_WAITING;
        }

        cl->timer.handler = ngx_llmd_redis_tick;
        cl->timer.data = cl;
        cl->timer.log = cycle->log;
        cl->timer.cancelable = 1;

        /* spread the first ticks of the workers a little */
        ngx_add_timer(&cl->timer, 1 + ngx_worker * 7 % 50);
    }

    return NGX_OK;
}


void
ngx_llmd_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t         i;
    ngx_llmd_redis_t  *cl;

    if (ngx_llmd_redis_clients == NULL) {
        return;
    }

    cl = ngx_llmd_redis_clients->elts;

    for (i = 0; i < ngx_llmd_redis_clients->nelts; i++) {
        if (cl[i].owner) {
            /* let another worker take over at once */
            (void) ngx_atomic_cmp_set(&cl[i].conf->sh->owner_pid, ngx_pid, 0);
        }

        cl[i].down_logged = 1;      /* a goodbye, not an outage */

        if (cl[i].state) {
            redisAsyncFree(cl[i].state);
            cl[i].state = NULL;
        }

        if (cl[i].stream) {
            redisAsyncFree(cl[i].stream);
            cl[i].stream = NULL;
        }
    }
}


/* ---- configuration ---- */

static char *
ngx_llmd_redis_key(ngx_conf_t *cf, ngx_llmd_redis_conf_t *rc,
    const char *suffix)
{
    u_char  *p;
    size_t   len;

    len = rc->prefix.len + rc->pool.len + ngx_strlen(suffix) + 1;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NULL;
    }

    *ngx_sprintf(p, "%V%V%s", &rc->prefix, &rc->pool, suffix) = '\0';
    return (char *) p;
}


static ngx_int_t
ngx_llmd_redis_placeholder(ngx_conf_t *cf)
{
    ngx_addr_t                    *addr;
    struct sockaddr_in            *sin;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    us = ngx_array_push(uscf->servers);
    addr = ngx_pcalloc(cf->pool, sizeof(ngx_addr_t));
    sin = ngx_pcalloc(cf->pool, sizeof(struct sockaddr_in));
    if (us == NULL || addr == NULL || sin == NULL) {
        return NGX_ERROR;
    }

    sin->sin_family = AF_INET;
    sin->sin_port = htons(9);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    addr->sockaddr = (struct sockaddr *) sin;
    addr->socklen = sizeof(struct sockaddr_in);
    ngx_str_set(&addr->name, NGX_LLMD_PLACEHOLDER);

    ngx_memzero(us, sizeof(ngx_http_upstream_server_t));
    us->name = addr->name;
    us->addrs = addr;
    us->naddrs = 1;
    us->weight = 1;
    us->down = 1;

    return NGX_OK;
}


/* llmd_redis unix:/path|host:port [password=] [user=] [prefix=] [pool=]
 *            [interval=] [stale=] [allow=CIDR]... */
char *
ngx_llmd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    u_char                 *colon;
    ngx_str_t              *value, s;
    ngx_uint_t              i;
    ngx_cidr_t             *cidr;
    ngx_llmd_redis_conf_t  *rc;

    if (lcf->redis) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_llmd_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        rc->host.data = value[1].data + 5;
        rc->host.len = value[1].len - 5;

    } else {
        colon = ngx_strlchr(value[1].data, value[1].data + value[1].len, ':');
        rc->port = colon ? ngx_atoi(colon + 1,
                                    value[1].data + value[1].len - colon - 1)
                         : 6379;
        if (rc->port == NGX_ERROR || rc->port < 1 || rc->port > 65535) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid redis address \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
        rc->host.data = value[1].data;
        rc->host.len = colon ? (size_t) (colon - value[1].data) : value[1].len;
    }

    if (rc->host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&rc->prefix, "llmd:");
    ngx_str_set(&rc->pool, "default");
    rc->interval = 100;
    rc->stale = 5000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rc->password.data = value[i].data + 9;
            rc->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rc->user.data = value[i].data + 5;
            rc->user.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rc->prefix.data = value[i].data + 7;
            rc->prefix.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "pool=", 5) == 0) {
            rc->pool.data = value[i].data + 5;
            rc->pool.len = value[i].len - 5;
            if (rc->pool.len == 0) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
            rc->interval = ngx_parse_time(&s, 0);
            if (rc->interval == (ngx_msec_t) NGX_ERROR || rc->interval < 10) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "stale=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;
            rc->stale = ngx_parse_time(&s, 0);
            if (rc->stale == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "allow=", 6) == 0) {
            if (rc->allow == NULL) {
                rc->allow = ngx_array_create(cf->pool, 2, sizeof(ngx_cidr_t));
                if (rc->allow == NULL) {
                    return NGX_CONF_ERROR;
                }
            }

            cidr = ngx_array_push(rc->allow);
            if (cidr == NULL) {
                return NGX_CONF_ERROR;
            }

            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (ngx_ptocidr(&s, cidr) == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (rc->stale < 2 * rc->interval) {
        rc->stale = 2 * rc->interval;
    }

    rc->hb_key = ngx_llmd_redis_key(cf, rc, ":hb");
    rc->events_key = ngx_llmd_redis_key(cf, rc, ":events");
    rc->gw_key = ngx_llmd_redis_key(cf, rc, ":gw");
    rc->placements_key = ngx_llmd_redis_key(cf, rc, ":placements");
    rc->snap_prefix = ngx_llmd_redis_key(cf, rc, ":snap:");

    if (rc->hb_key == NULL || rc->events_key == NULL || rc->gw_key == NULL
        || rc->placements_key == NULL || rc->snap_prefix == NULL)
    {
        return NGX_CONF_ERROR;
    }

    lcf->redis = rc;

    /* nginx insists on a server line in every upstream{}; discovered peers
     * need none, so a placeholder that is always down stands in */
    if (ngx_llmd_redis_placeholder(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}
