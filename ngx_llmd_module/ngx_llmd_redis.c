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

#include "ngx_llmd_redis.h"


static ngx_array_t  *ngx_llmd_redis_clients;    /* this process's */
uint64_t             ngx_llmd_event_keys[LLMD_WIRE_MAX_KEYS];
char                 ngx_llmd_record_buf[NGX_LLMD_RECORD_BUF];


static void ngx_llmd_redis_tick(ngx_event_t *ev);


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
void
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
        gw->peers[gw->npeers].inflight_work = sh->peers[n].inflight_work;
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


/* Placements this gateway made, grouped by peer, for other gateways: where
 * a prefix is for a worker without events, its home for one with. */
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

        if (llmd_wire_pack_event(&ev, out, sizeof(out), &len)
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

    } else if (ngx_llmd_since(sh->redis_ok) > rc->stale) {
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
            || ngx_llmd_since(sh->owner_beat)
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
