/*
 * Fleet-state publisher: see publisher.h.  Here: the records (heartbeats,
 * cache events, snapshots), the tick with the link's watchdog, and the
 * API; the connection itself is redis_link.c.
 */

#include "publisher_internal.h"
#include "pd/pd_prefill.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "llmd_prefix.h"
#include "llmd_wire.h"
#include "sched/prefix_map.h"
#include "base/redis_url.h"

static uint64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* records */

static int send_event(struct publisher *p, uint32_t type, const uint64_t *keys,
    size_t nkeys, bool as_snapshot)
{
    llmd_cache_event_t ev;
    size_t len;

    memset(&ev, 0, sizeof(ev));
    memcpy(ev.id, p->hb.id, sizeof(ev.id));
    memcpy(ev.addr, p->hb.addr, sizeof(ev.addr));
    ev.type = type;
    ev.ts_ms = unix_ms();
    ev.block_size = (uint32_t) p->prefix_block;
    ev.nkeys = (uint32_t) nkeys;
    ev.max_keys = (uint32_t) nkeys;
    ev.keys = (uint64_t *) keys;
    if (llmd_wire_pack_event(&ev, p->packbuf, LLMD_WIRE_MAX_RECORD, &len)
        != LLMD_WIRE_OK)
        return -1;
    if (as_snapshot)
        return link_command(p, NULL, "SET %s %b", p->snap_key, p->packbuf, len);
    return link_command(p, NULL, "XADD %s MAXLEN ~ 100000 * e %b", p->events_key,
                   p->packbuf, len);
}

static void send_snapshot(struct publisher *p)
{
    size_t n = prefix_map_keys(p->map, p->keybuf, LLMD_WIRE_MAX_KEYS);

    send_event(p, LLMD_EVENT_SNAPSHOT, p->keybuf, n, true);
    p->last_snapshot = now_seconds();
}

/* Everything held, from scratch: CLEARED, then STORED in chunks, then the
 * snapshot.  After a gap, this is what makes the stream true again. */
static void send_resync(struct publisher *p)
{
    size_t n = prefix_map_keys(p->map, p->keybuf, LLMD_WIRE_MAX_KEYS);

    send_event(p, LLMD_EVENT_CLEARED, NULL, 0, false);
    if (n > 0)
        send_event(p, LLMD_EVENT_STORED, p->keybuf, n, false);
    send_event(p, LLMD_EVENT_SNAPSHOT, p->keybuf, n, true);
    p->last_snapshot = now_seconds();
    p->resync = false;
    p->n_changes = 0;
}

static void send_heartbeat(struct publisher *p)
{
    struct worker_metrics *m = p->metrics;
    struct engine_stats_snapshot es;
    llmd_heartbeat_t *hb = &p->hb;
    uint64_t requests = 0;
    size_t len;

    engine_stats_read(&p->engine->stats, &es);
    for (int i = 0; i < SUCCESS_KINDS; i++)
        requests += atomic_load_explicit(&m->success[i], memory_order_relaxed);
    hb->seq++;
    hb->ts_ms = unix_ms();
    hb->running = (uint32_t) atomic_load(&m->running);
    hb->waiting = (uint32_t) atomic_load(&m->waiting);
    hb->queued_prefill_tokens = es.queued_prefill_tokens;
    hb->kv_used = (uint32_t) atomic_load(&m->kv_used_blocks);
    hb->prefill_tps = es.prefill_tps;
    hb->decode_ms_base = es.decode_ms_base;
    hb->decode_ms_per_seq = es.decode_ms_per_seq;
    hb->ttft_ms = es.ttft_ms;
    hb->requests_total = requests;
    hb->prompt_tokens_total = atomic_load(&m->prompt_tokens);
    hb->generation_tokens_total = atomic_load(&m->generation_tokens);
    hb->prefix_hit_tokens_total = atomic_load(&m->prefix_hits);
    if (llmd_wire_pack_heartbeat(hb, p->packbuf, LLMD_WIRE_MAX_RECORD, &len)
        != LLMD_WIRE_OK)
        return;
    link_command(p, NULL, "HSET %s %s %b", p->hb_key, hb->id, p->packbuf, len);
    /* the hash itself goes when the whole pool falls silent */
    link_command(p, NULL, "PEXPIRE %s %u", p->hb_key, hb->ttl_ms);
    p->last_beat = now_seconds();
}
/* The link is READY: the heartbeat now, and everything held, anew. */
void publisher_link_ready(struct publisher *p)
{
    send_heartbeat(p);
    send_resync(p);
}

/* ------------------------------------------------------------------------ */
/* events: the map's changes, batched per loop tick */

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    size_t i = 0;

    (void) fd;
    (void) what;
    if (p->state != LINK_READY || p->stopping) {
        p->n_changes = 0;
        return;
    }
    if (p->resync || p->pending > MAX_PENDING) {
        /* too far behind to send changes one by one: send the state */
        if (p->pending <= MAX_PENDING)
            send_resync(p);
        else
            p->resync = true;
        p->n_changes = 0;
        return;
    }
    /* one event per run of the same type, as the map produced them */
    while (i < p->n_changes) {
        uint32_t type = p->changes[i].type;
        size_t n = 0;

        while (i < p->n_changes && p->changes[i].type == type
               && n < LLMD_WIRE_MAX_KEYS)
            p->keybuf[n++] = p->changes[i++].key;
        send_event(p, type, p->keybuf, n, false);
    }
    p->n_changes = 0;
}

static void on_map_change(void *arg, uint32_t type, uint64_t key)
{
    struct publisher *p = arg;

    if (p->state != LINK_READY) {
        p->resync = true;       /* sent in full once connected */
        return;
    }
    if (p->n_changes == p->cap_changes) {
        size_t cap = p->cap_changes ? p->cap_changes * 2 : 1024;
        struct change *c = realloc(p->changes, sizeof(*c) * cap);
        if (c == NULL) {
            p->resync = true;
            return;
        }
        p->changes = c;
        p->cap_changes = cap;
    }
    p->changes[p->n_changes].key = key;
    p->changes[p->n_changes].type = type;
    if (p->n_changes++ == 0)
        event_active(p->flush, EV_TIMEOUT, 0);
}

/* Engine thread: a block left the cache.  Only a push under a lock; the
 * lookup happens on the HTTP thread. */
static void on_kv_event(void *arg, const struct kv_event *ev)
{
    struct publisher *p = arg;
    bool wake = false;

    if (ev->kind != KV_EVENT_REMOVED)
        return;
    pthread_mutex_lock(&p->kv_lock);
    if (p->kv_n == p->kv_cap) {
        size_t cap = p->kv_cap ? p->kv_cap * 2 : 1024;
        uint64_t *q = cap <= KV_QUEUE_MAX ? realloc(p->kv_q, cap * 8) : NULL;
        if (q == NULL) {
            p->kv_overflow = true;
        } else {
            p->kv_q = q;
            p->kv_cap = cap;
        }
    }
    if (p->kv_n < p->kv_cap) {
        wake = p->kv_n == 0;
        p->kv_q[p->kv_n++] = ev->hash;
    }
    pthread_mutex_unlock(&p->kv_lock);
    if (wake)
        event_active(p->kv_wake, EV_TIMEOUT, 0);
}

/* Engine thread: a prefill made for a decode worker is cached here. */
static void on_remote_prefilled(void *arg, struct prefix_claim *c)
{
    struct publisher *p = arg;
    struct claim_link *l = malloc(sizeof(*l));

    if (l == NULL) {
        prefix_claim_free(c);
        return;
    }
    l->claim = c;
    pthread_mutex_lock(&p->kv_lock);
    l->next = p->remote_claims;
    p->remote_claims = l;
    pthread_mutex_unlock(&p->kv_lock);
    event_active(p->kv_wake, EV_TIMEOUT, 0);
}

static void adopt_remote_claims(struct publisher *p, struct claim_link *l)
{
    while (l) {
        struct claim_link *next = l->next;
        prefix_map_adopt(p->map, l->claim);
        free(l);
        l = next;
    }
}

static void on_kv_wake(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    struct claim_link *claims;
    uint64_t *q;
    size_t n, cap;
    bool overflow;

    (void) fd;
    (void) what;
    /* swap buffers so the engine is held for a few instructions only */
    pthread_mutex_lock(&p->kv_lock);
    q = p->kv_q;
    n = p->kv_n;
    cap = p->kv_cap;
    overflow = p->kv_overflow;
    p->kv_q = p->kv_spare;
    p->kv_cap = p->kv_spare_cap;
    p->kv_n = 0;
    p->kv_overflow = false;
    claims = p->remote_claims;
    p->remote_claims = NULL;
    pthread_mutex_unlock(&p->kv_lock);
    p->kv_spare = q;
    p->kv_spare_cap = cap;

    if (overflow) {
        /* evictions were lost: nothing advertised can be trusted */
        struct prefix_map *fresh = prefix_map_new(LLMD_WIRE_MAX_KEYS,
            (uint32_t) (p->hb.kv_total > MAP_MAX_EDGES_MIN / 4
                        ? p->hb.kv_total * 4 : MAP_MAX_EDGES_MIN),
            on_map_change, p);
        if (fresh) {
            prefix_map_free(p->map);
            p->map = fresh;
            p->resync = true;
            event_active(p->flush, EV_TIMEOUT, 0);
        }
        adopt_remote_claims(p, claims);
        return;
    }
    for (size_t i = 0; i < n; i++)
        prefix_map_block_removed(p->map, q[i]);
    adopt_remote_claims(p, claims);
}

/* ------------------------------------------------------------------------ */
/* the tick: heartbeat, snapshot, watchdog */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct publisher *p = arg;
    double now = now_seconds();

    (void) fd;
    (void) what;
    if (p->stopping)
        return;
    if (p->state == LINK_CONNECTING && now - p->progress_at > CONNECT_TIMEOUT_S) {
        link_drop(p, "connect timed out");
        return;
    }
    if (p->state >= LINK_HANDSHAKE && p->pending > 0
        && now - p->progress_at > REPLY_TIMEOUT_S) {
        link_drop(p, "no reply in time");
        return;
    }
    if (p->state != LINK_READY || p->pending > MAX_PENDING)
        return;
    /* half a tick of slack, so that a 100 ms beat does not slip to 200 */
    if ((now - p->last_beat) * 1e3 >= p->interval_ms - TICK_MAX_MS / 2.0
        || p->interval_ms <= TICK_MAX_MS)
        send_heartbeat(p);
    if (now - p->last_snapshot >= SNAPSHOT_EVERY_S)
        send_snapshot(p);
}

/* ------------------------------------------------------------------------ */
/* identity */

static int is_wildcard(const char *host)
{
    return host[0] == '\0' || strcmp(host, "0.0.0.0") == 0
           || strcmp(host, "::") == 0 || strcmp(host, "[::]") == 0;
}

static void identity(const struct worker_config *cfg, int port,
    llmd_heartbeat_t *hb)
{
    char host[256] = "localhost";
    const char *h = cfg->listen_host;

    gethostname(host, sizeof(host) - 1);
    if (cfg->worker_id[0])
        snprintf(hb->id, sizeof(hb->id), "%s", cfg->worker_id);
    else
        snprintf(hb->id, sizeof(hb->id), "%.50s-%d", host, port);
    if (cfg->advertise[0])
        snprintf(hb->addr, sizeof(hb->addr), "%s", cfg->advertise);
    else if (is_wildcard(h))
        snprintf(hb->addr, sizeof(hb->addr), "%.56s:%d", host, port);
    else if (strchr(h, ':'))
        snprintf(hb->addr, sizeof(hb->addr), "[%.54s]:%d", h, port);
    else
        snprintf(hb->addr, sizeof(hb->addr), "%.56s:%d", h, port);
}

/* ------------------------------------------------------------------------ */

struct publisher *publisher_new(struct event_base *base,
    const struct worker_config *cfg, struct engine *engine,
    struct worker_metrics *metrics, int port, char *err, size_t err_len)
{
    struct publisher *p = calloc(1, sizeof(*p));
    llmd_heartbeat_t *hb;
    uint32_t max_edges;

    if (p == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (redis_url_parse(cfg->redis_url, &p->url, err, err_len) != 0) {
        free(p);
        return NULL;
    }
    redis_url_describe(&p->url, p->where, sizeof(p->where));
    pthread_mutex_init(&p->kv_lock, NULL);
    p->base = base;
    p->engine = engine;
    p->metrics = metrics;
    p->prefix_block = (size_t) cfg->prefix_block;
    p->block_tokens = cfg->block_tokens;
    p->interval_ms = cfg->heartbeat_ms;
    p->backoff_ms = BACKOFF_MIN_MS;
    snprintf(p->hb_key, sizeof(p->hb_key), "%s%s" LLMD_KEY_HB, cfg->redis_prefix, cfg->pool);
    snprintf(p->events_key, sizeof(p->events_key), "%s%s" LLMD_KEY_EVENTS,
             cfg->redis_prefix, cfg->pool);

    hb = &p->hb;
    identity(cfg, port, hb);
    snprintf(p->snap_key, sizeof(p->snap_key), "%s%s" LLMD_KEY_SNAP "%s",
             cfg->redis_prefix, cfg->pool, hb->id);
    snprintf(hb->pool, sizeof(hb->pool), "%s", cfg->pool);
    snprintf(hb->model, sizeof(hb->model), "%s", cfg->model_name);
    if (p->engine->pd_server)
        snprintf(hb->kv_addr, sizeof(hb->kv_addr), "%s",
                 pd_server_addr(p->engine->pd_server));
    hb->role = strcmp(cfg->role, "prefill") == 0 ? LLMD_ROLE_PREFILL
               : strcmp(cfg->role, "decode") == 0 ? LLMD_ROLE_DECODE
               : LLMD_ROLE_BOTH;
    hb->interval_ms = (uint32_t) cfg->heartbeat_ms;
    hb->ttl_ms = (uint32_t) cfg->heartbeat_ms * 10;
    hb->kv_total = (uint32_t) cfg->kv_blocks;
    hb->max_batch = (uint32_t) cfg->max_batch;
    hb->block_tokens = (uint32_t) cfg->block_tokens;
    hb->events = 1;

    /* room to link every KV block to a few claims */
    max_edges = cfg->kv_blocks > MAP_MAX_EDGES_MIN / 4
                ? (uint32_t) cfg->kv_blocks * 4 : MAP_MAX_EDGES_MIN;
    p->map = prefix_map_new(LLMD_WIRE_MAX_KEYS, max_edges, on_map_change, p);
    p->keybuf = malloc(sizeof(uint64_t) * LLMD_WIRE_MAX_KEYS);
    p->packbuf = malloc(LLMD_WIRE_MAX_RECORD);
    p->tick = event_new(base, -1, EV_PERSIST, on_tick, p);
    p->retry = evtimer_new(base, link_on_retry, p);
    p->flush = event_new(base, -1, 0, on_flush, p);
    p->kv_wake = event_new(base, -1, 0, on_kv_wake, p);
    if (!p->map || !p->keybuf || !p->packbuf || !p->tick || !p->retry
        || !p->flush || !p->kv_wake) {
        snprintf(err, err_len, "out of memory");
        publisher_free(p);
        return NULL;
    }
    engine_set_kv_listener(engine, on_kv_event, p);
    engine->remote_prefilled = on_remote_prefilled;
    engine->remote_prefilled_arg = p;
    return p;
}

void publisher_start(struct publisher *p)
{
    int tick_ms = p->interval_ms < TICK_MAX_MS ? p->interval_ms : TICK_MAX_MS;
    struct timeval tv = ms_to_tv(tick_ms);

    event_add(p->tick, &tv);
    link_connect(p);
}

struct prefix_claim *publisher_claim(struct publisher *p, const void *canon,
    size_t len, const int32_t *prompt, int n_prompt)
{
    struct prefix_claim *c;

    c = prefix_claim_new(canon, len, prompt, n_prompt, p->prefix_block,
                         p->block_tokens, LLMD_PREFIX_MAX_BLOCKS_DEFAULT);

    /* gateways count prompts in bytes; this tells them how many bytes make
     * a token of this model, so their predictions speak in real tokens */
    if (c)
        p->hb.bytes_per_token = p->hb.bytes_per_token == 0
            ? c->bytes_per_token
            : p->hb.bytes_per_token
              + 0.05 * (c->bytes_per_token - p->hb.bytes_per_token);
    return c;
}

void publisher_prefilled(struct publisher *p, struct prefix_claim *c)
{
    if (c)
        prefix_map_adopt(p->map, c);
}

/* ------------------------------------------------------------------------ */
/* shutdown */

static void finish_shutdown(struct publisher *p)
{
    void (*done)(void *) = p->done;

    p->done = NULL;
    if (p->shutdown_timer)
        event_del(p->shutdown_timer);
    if (done)
        done(p->done_arg);
}

static void on_hdel(redisAsyncContext *ac, void *r, void *privdata)
{
    struct publisher *p = privdata;

    (void) r;
    if (ac == p->ac)
        p->pending--;
    finish_shutdown(p);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    finish_shutdown(arg);
}

void publisher_shutdown(struct publisher *p, void (*done)(void *), void *arg)
{
    struct timeval tv = ms_to_tv(SHUTDOWN_WAIT_MS);

    p->stopping = true;
    p->done = done;
    p->done_arg = arg;
    event_del(p->tick);
    event_del(p->retry);
    if (p->state != LINK_READY
        || link_command(p, on_hdel, "HDEL %s %s", p->hb_key, p->hb.id) != 0) {
        finish_shutdown(p);
        return;
    }
    p->shutdown_timer = evtimer_new(p->base, on_shutdown_timeout, p);
    if (p->shutdown_timer == NULL)
        finish_shutdown(p);
    else
        evtimer_add(p->shutdown_timer, &tv);
}

void publisher_free(struct publisher *p)
{
    redisAsyncContext *ac;

    if (p == NULL)
        return;
    while (p->remote_claims) {
        struct claim_link *l = p->remote_claims;
        p->remote_claims = l->next;
        prefix_claim_free(l->claim);
        free(l);
    }
    p->stopping = true;
    p->done = NULL;
    ac = p->ac;
    p->ac = NULL;
    if (ac)
        redisAsyncFree(ac);
    if (p->tick)
        event_free(p->tick);
    if (p->retry)
        event_free(p->retry);
    if (p->flush)
        event_free(p->flush);
    if (p->kv_wake)
        event_free(p->kv_wake);
    if (p->shutdown_timer)
        event_free(p->shutdown_timer);
    prefix_map_free(p->map);
    free(p->changes);
    free(p->keybuf);
    free(p->packbuf);
    free(p->kv_q);
    free(p->kv_spare);
    pthread_mutex_destroy(&p->kv_lock);
    free(p);
}
