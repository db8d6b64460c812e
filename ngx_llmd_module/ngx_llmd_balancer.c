/*
 * The balancer: init_upstream, init_peer, get and free, on top of the
 * round-robin peer lists (so weight, max_fails, fail_timeout, max_conns,
 * backup and down behave as in the stock balancers).  Which candidate a
 * try takes is ngx_llmd_choose's (ngx_llmd_choose.c).
 */

#include "ngx_llmd_balancer.h"


static ngx_int_t ngx_llmd_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_llmd_get_peer(ngx_peer_connection_t *pc, void *data);
static void ngx_llmd_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state);
static ngx_int_t ngx_llmd_resolve_slots(ngx_llmd_srv_conf_t *conf,
    ngx_http_upstream_rr_peers_t *peers, ngx_uint_t backup);
static void ngx_llmd_use_static(ngx_llmd_peer_data_t *lp,
    ngx_peer_connection_t *pc, ngx_llmd_cand_t *cd, time_t now);
static ngx_int_t ngx_llmd_use_discovered(ngx_llmd_peer_data_t *lp,
    ngx_peer_connection_t *pc, ngx_llmd_cand_t *cd);
static void ngx_llmd_count_pick(ngx_llmd_peer_data_t *lp, ngx_llmd_cand_t *cd,
    ngx_uint_t nkeys);
static ngx_int_t ngx_llmd_try_backup(ngx_peer_connection_t *pc,
    ngx_llmd_peer_data_t *lp, ngx_http_upstream_rr_peers_t *peers);


ngx_int_t
ngx_llmd_init_upstream(ngx_conf_t *cf, ngx_http_upstream_srv_conf_t *us)
{
    size_t                          len;
    u_char                         *p;
    ngx_str_t                       name;
    ngx_llmd_srv_conf_t            *conf, **up;
    ngx_llmd_main_conf_t           *lmcf;
    ngx_http_upstream_rr_peers_t   *peers;

    conf = ngx_http_conf_upstream_srv_conf(us, ngx_llmd_module);

    if (conf->redis && (us->servers == NULL || us->servers->nelts == 0)) {
        /* every peer is discovered: an empty round-robin list */
        peers = ngx_pcalloc(cf->pool, sizeof(ngx_http_upstream_rr_peers_t));
        if (peers == NULL) {
            return NGX_ERROR;
        }

        peers->name = &us->host;
        us->peer.data = peers;

    } else if (ngx_http_upstream_init_round_robin(cf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    conf->upstream = us;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_llmd_module);
    up = ngx_array_push(&lmcf->upstreams);
    if (up == NULL) {
        return NGX_ERROR;
    }
    *up = conf;

    ngx_conf_init_size_value(conf->block_size, LLMD_PREFIX_BLOCK_DEFAULT);
    ngx_conf_init_uint_value(conf->max_blocks, LLMD_PREFIX_MAX_BLOCKS_DEFAULT);
    ngx_conf_init_value(conf->prefix_weight, 2 * NGX_LLMD_WEIGHT_SCALE);
    ngx_conf_init_value(conf->load_weight, 1 * NGX_LLMD_WEIGHT_SCALE);
    ngx_conf_init_uint_value(conf->balance_abs, 8);
    ngx_conf_init_value(conf->balance_rel, 3 * NGX_LLMD_WEIGHT_SCALE / 2);
    ngx_conf_init_uint_value(conf->default_max_tokens, 256);
    ngx_conf_init_uint_value(conf->policy, NGX_LLMD_POLICY_LLMD);
    /* predictions pick only where an SLO asks for them: without one, the
     * precise affinity/load score routed better in the routing benchmark
     * (bench/results/), and prediction stays one directive away */
    ngx_conf_init_value(conf->predict,
                        conf->slo_ttft != NGX_CONF_UNSET_MSEC
                        || conf->slo_itl != NGX_CONF_UNSET_MSEC);
    ngx_conf_init_msec_value(conf->stickiness, 2000);
    ngx_conf_init_msec_value(conf->slo_ttft, 0);
    ngx_conf_init_msec_value(conf->slo_itl, 0);

    if (conf->shm_zone == NULL) {
        /* no llmd_zone: an implicit zone named after the upstream */
        len = sizeof("llmd_") - 1 + us->host.len;
        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        name.data = p;
        name.len = ngx_cpymem(ngx_cpymem(p, "llmd_", 5), us->host.data,
                              us->host.len) - p;

        conf->shm_zone = ngx_shared_memory_add(cf, &name,
                                               NGX_LLMD_ZONE_DEFAULT_SIZE,
                                               &ngx_llmd_module);
        if (conf->shm_zone == NULL) {
            return NGX_ERROR;
        }

        conf->shm_zone->init = ngx_llmd_init_zone;
        conf->shm_zone->data = conf;
    }

    /* slot maps: filled on first use in each worker (see resolve_slots) */
    peers = us->peer.data;

    conf->nslots[0] = peers->number;
    conf->nslots[1] = peers->next ? peers->next->number : 0;

    conf->slots[0] = ngx_pcalloc(cf->pool,
                                 (conf->nslots[0] + conf->nslots[1] + 2)
                                 * sizeof(ngx_int_t));
    if (conf->slots[0] == NULL) {
        return NGX_ERROR;
    }

    conf->slots[1] = conf->slots[0] + conf->nslots[0] + 1;

    /* -2: not resolved yet in this process */
    conf->slots[0][conf->nslots[0]] = -2;
    conf->slots[1][conf->nslots[1]] = -2;

    us->peer.init = ngx_llmd_init_peer;

    return NGX_OK;
}


/*
 * Maps each round-robin peer to its zone slot by name.  The rr lists keep
 * their order (also when the zone directive copies them into shared
 * memory), so the map holds for the life of the configuration.
 */
static ngx_int_t
ngx_llmd_resolve_slots(ngx_llmd_srv_conf_t *conf,
    ngx_http_upstream_rr_peers_t *peers, ngx_uint_t backup)
{
    ngx_int_t                     *slots;
    ngx_uint_t                     i;
    ngx_http_upstream_rr_peer_t   *peer;

    slots = conf->slots[backup];

    if (slots[conf->nslots[backup]] != -2) {
        return NGX_OK;
    }

    for (peer = peers->peer, i = 0;
         peer && i < conf->nslots[backup];
         peer = peer->next, i++)
    {
        if (peer->name.len == sizeof(NGX_LLMD_PLACEHOLDER) - 1
            && ngx_strncmp(peer->name.data, NGX_LLMD_PLACEHOLDER,
                           peer->name.len) == 0)
        {
            slots[i] = -1;      /* stands in for discovered peers */
            continue;
        }

        slots[i] = ngx_llmd_zone_peer_slot(conf, &peer->name);

        if (slots[i] < 0) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llmd: zone is full, peer %V is balanced "
                          "without shared state", &peer->name);
            continue;
        }

        /* its heartbeat may have come first, or it was discovered before
         * a reload made it a server line: it is a candidate as this line
         * only, not also as a discovered peer */
        conf->sh->peers[slots[i]].dynamic = 0;

        ngx_llmd_model_configure(conf, slots[i], &peer->name);
    }

    slots[conf->nslots[backup]] = -1;

    return NGX_OK;
}


/* The zone slots of the server lines, resolved on first use in each
 * worker process. */
void
ngx_llmd_resolve_peers(ngx_llmd_srv_conf_t *conf)
{
    ngx_http_upstream_rr_peers_t  *peers;

    peers = conf->upstream->peer.data;

    (void) ngx_llmd_resolve_slots(conf, peers, 0);
    if (peers->next) {
        (void) ngx_llmd_resolve_slots(conf, peers->next, 1);
    }
}


/* The candidate scratch arrays of one request. */
ngx_int_t
ngx_llmd_scratch(ngx_llmd_peer_data_t *lp, ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf)
{
    ngx_uint_t                      n;
    ngx_http_upstream_rr_peers_t   *peers;

    peers = conf->upstream->peer.data;

    ngx_llmd_resolve_peers(conf);

    n = ngx_max(conf->nslots[0], conf->nslots[1]);

    if (conf->redis) {
        n += NGX_LLMD_MAX_PEERS;
    }

    if (n == 0) {
        n = 1;
    }

    lp->cand = ngx_palloc(r->pool, n * (sizeof(ngx_llmd_cand_t)
                                        + sizeof(ngx_int_t)
                                        + 2 * sizeof(ngx_uint_t)));
    if (lp->cand == NULL) {
        return NGX_ERROR;
    }

    lp->slots = (ngx_int_t *) (lp->cand + n);
    lp->match = (ngx_uint_t *) (lp->slots + n);
    lp->home = lp->match + n;
    lp->ncand_max = n;
    lp->primary = peers;
    lp->request = r;
    lp->conf = conf;
    lp->slot = -1;

    return NGX_OK;
}


static ngx_int_t
ngx_llmd_init_peer(ngx_http_request_t *r, ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                      tokens, k;
    ngx_llmd_ctx_t                 *ctx;
    ngx_llmd_shctx_t               *sh;
    ngx_llmd_srv_conf_t            *conf;
    ngx_llmd_peer_data_t           *lp;

    conf = ngx_http_conf_upstream_srv_conf(us, ngx_llmd_module);
    sh = conf->sh;

    lp = ngx_pcalloc(r->pool, sizeof(ngx_llmd_peer_data_t));
    if (lp == NULL) {
        return NGX_ERROR;
    }

    r->upstream->peer.data = &lp->rrp;

    if (ngx_http_upstream_init_round_robin_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    r->upstream->peer.get = ngx_llmd_get_peer;
    r->upstream->peer.free = ngx_llmd_free_peer;

    if (ngx_llmd_scratch(lp, r, conf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (conf->redis) {
        /* discovered peers are candidates too, and count as tries */
        for (k = 0; k < sh->npeers; k++) {
            if (sh->peers[k].dynamic && sh->peers[k].alive
                && sh->peers[k].role != LLMD_ROLE_PREFILL)
            {
                r->upstream->peer.tries++;
            }
        }
    }

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx == NULL) {
        /* not inspected in the precontent phase (e.g. llmd_inspect off,
         * or a module other than proxy): use the body if it is here */
        ctx = ngx_llmd_inspect_body(r, conf);
    }

    if (ctx == NULL) {
        /* not an inference request: balanced on load alone, but the
         * variables and debug headers still say where it went */
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_llmd_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->status = NGX_DECLINED;
        ngx_http_set_ctx(r, ctx, ngx_llmd_module);
    }

    if (ctx->inspected && ctx->block_size != conf->block_size) {
        /* keys of another block size never match this zone's index */
        ctx->req.prefix.nkeys = 0;
    }

    lp->ctx = ctx;

    tokens = 0;
    lp->output = 0;

    if (ctx->inspected) {
        lp->output = ctx->req.max_tokens >= 0
                     ? (ngx_uint_t) ngx_min(ctx->req.max_tokens, 1 << 24)
                     : conf->default_max_tokens;
        tokens = ctx->req.prefix.total_bytes / NGX_LLMD_BYTES_PER_TOKEN
                 + lp->output;

        if (ctx->req.stream == 1) {
            /* tokens must reach the client as they are made */
            r->upstream->buffering = 0;
        }
    }

    lp->tokens = ngx_min(tokens, 1 << 28);

    return NGX_OK;
}


static ngx_int_t
ngx_llmd_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_llmd_peer_data_t  *lp = data;

    time_t                          now;
    ngx_int_t                       rc;
    ngx_uint_t                      best, nkeys, backup;
    ngx_msec_int_t                  t0;
    ngx_llmd_ctx_t                 *ctx;
    ngx_llmd_cand_t                *cd;
    ngx_http_upstream_rr_peers_t   *peers;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "llmd get peer, try: %ui", pc->tries);

    t0 = ngx_llmd_now_ns();
    ctx = lp->ctx;

    pc->cached = 0;
    pc->connection = NULL;

    now = ngx_time();

    peers = lp->rrp.peers;
    backup = (peers != lp->primary);

    ngx_http_upstream_rr_peers_wlock(peers);

    rc = ngx_llmd_choose(lp, peers, backup, now, &best);

    if (rc == NGX_DECLINED) {
        return ngx_llmd_try_backup(pc, lp, peers);
    }

    if (rc == NGX_ERROR) {
        ngx_http_upstream_rr_peers_unlock(peers);
        return NGX_ERROR;
    }

    /* the preview holds for the first pick only */
    ctx->preview.valid = 0;

    nkeys = ctx->inspected ? ctx->req.prefix.nkeys : 0;
    cd = &lp->cand[best];

    if (cd->peer) {
        ngx_llmd_use_static(lp, pc, cd, now);
        ngx_http_upstream_rr_peers_unlock(peers);

    } else {
        ngx_http_upstream_rr_peers_unlock(peers);

        if (ngx_llmd_use_discovered(lp, pc, cd) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    lp->slot = cd->slot;
    lp->predicted = ctx->predicted ? cd->ttft : 0.0;
    lp->correction = ctx->predicted ? cd->correction : 0.0;
    lp->pending = 0;

    if (cd->slot >= 0) {
        ngx_llmd_count_pick(lp, cd, nkeys);
    }

    /* admitted room becomes the peer's in-flight figure */
    ngx_llmd_flow_picked(lp->conf, ctx);

    ctx->peer = *pc->name;
    ctx->matched = cd->match;

    if (ctx->tries++ == 0) {
        ctx->decision_ns += ngx_llmd_now_ns() - t0;
    }
    ctx->predicted_ttft_ms = lp->predicted;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "llmd picked %V (%s), matched %ui of %ui blocks",
                   pc->name, ngx_llmd_pick_reasons[ctx->reason], cd->match,
                   nkeys);

    return NGX_OK;
}


/* A server line of the upstream: as round-robin marks its peers (under the
 * peers lock). */
static void
ngx_llmd_use_static(ngx_llmd_peer_data_t *lp, ngx_peer_connection_t *pc,
    ngx_llmd_cand_t *cd, time_t now)
{
    uintptr_t                     m;
    ngx_uint_t                    n;
    ngx_http_upstream_rr_peer_t  *peer;

    peer = cd->peer;

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

    peer->conns++;

    if (now - peer->checked > peer->fail_timeout) {
        peer->checked = now;
    }

    lp->rrp.current = peer;
    lp->discovered = 0;

    n = cd->index / (8 * sizeof(uintptr_t));
    m = (uintptr_t) 1 << cd->index % (8 * sizeof(uintptr_t));
    lp->rrp.tried[n] |= m;
}


/* A peer discovered through Redis: the connection gets its own copy of the
 * address, as the zone slot may be reused by another worker later. */
static ngx_int_t
ngx_llmd_use_discovered(ngx_llmd_peer_data_t *lp, ngx_peer_connection_t *pc,
    ngx_llmd_cand_t *cd)
{
    size_t             len;
    ngx_int_t          slot;
    ngx_str_t         *name;
    struct sockaddr   *sa;
    ngx_llmd_peer_t   *sp;

    slot = cd->slot;
    sp = &lp->conf->sh->peers[slot];
    len = sp->socklen;

    sa = ngx_palloc(lp->request->pool, len);
    name = ngx_palloc(lp->request->pool, sizeof(ngx_str_t));
    if (sa == NULL || name == NULL) {
        return NGX_ERROR;
    }

    name->data = ngx_pnalloc(lp->request->pool, sp->name_len);
    if (name->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(sa, sp->sockaddr, len);
    ngx_memcpy(name->data, sp->name, sp->name_len);
    name->len = sp->name_len;

    pc->sockaddr = sa;
    pc->socklen = len;
    pc->name = name;

    lp->rrp.current = NULL;
    lp->discovered = 1;
    lp->tried[slot / 64] |= (uint64_t) 1 << (slot % 64);

    return NGX_OK;
}


/* The pick in the zone: the work now in flight at the peer, its pick
 * counters, and the prefix's placement.  ngx_llmd_free_peer takes the
 * in-flight part back. */
static void
ngx_llmd_count_pick(ngx_llmd_peer_data_t *lp, ngx_llmd_cand_t *cd,
    ngx_uint_t nkeys)
{
    ngx_llmd_ctx_t       *ctx;
    ngx_llmd_peer_t      *sp;
    ngx_llmd_srv_conf_t  *conf;

    conf = lp->conf;
    ctx = lp->ctx;
    sp = &conf->sh->peers[cd->slot];

    /* with a prefill worker doing the prompt, the decode worker only
     * receives its KV */
    lp->uncached = ctx->pd_remote ? 0 : ngx_llmd_cand_uncached(lp, cd);
    lp->work = lp->uncached + lp->output;
    (void) ngx_atomic_fetch_add(&sp->inflight_uncached, lp->uncached);
    (void) ngx_atomic_fetch_add(&sp->inflight_work, lp->work);

    /* a retry's earlier try was released by free_peer */
    ctx->prefill_conf = conf;
    ctx->prefill_slot = cd->slot;
    ctx->prefill_tokens = lp->uncached;
    (void) ngx_atomic_fetch_add(&sp->prefilling, lp->uncached);
    (void) ngx_atomic_fetch_add(&sp->inflight, 1);
    (void) ngx_atomic_fetch_add(&sp->inflight_tokens, lp->tokens);
    (void) ngx_atomic_fetch_add(&sp->picks, 1);
    (void) ngx_atomic_fetch_add(&sp->prefix_hit_blocks, cd->match);
    (void) ngx_atomic_fetch_add(&sp->prefix_blocks, nkeys);

    switch (ctx->reason) {
    case NGX_LLMD_PICK_AFFINITY:
        (void) ngx_atomic_fetch_add(&sp->affinity_picks, 1);
        break;
    case NGX_LLMD_PICK_BALANCE:
        (void) ngx_atomic_fetch_add(&sp->balance_picks, 1);
        break;
    case NGX_LLMD_PICK_HOME:
        (void) ngx_atomic_fetch_add(&sp->home_picks, 1);
        break;
    case NGX_LLMD_PICK_PREDICTED:
    case NGX_LLMD_PICK_SLO_MISS:
        (void) ngx_atomic_fetch_add(&sp->predicted_picks, 1);
        sp->predicted_ttft_ms = cd->ttft;
        /* until its next heartbeat, the worker is busier than it said */
        lp->pending = ctx->pd_remote ? 0 : cd->uncached;
        sp->pending_tokens += lp->pending;
        break;
    default:
        break;
    }

    /* the placement: for a worker without cache events it is all we know;
     * for one with events, what it holds comes from them, and this is the
     * prefix's home once it evicts it (see the top) */
    if (nkeys) {
        ngx_llmd_zone_record(conf, ctx->req.prefix.keys, nkeys, cd->slot,
                             conf->redis != NULL, lp->hints, cd->home, 0);
    }
}


/* No live candidate in this list: the backup servers, as round-robin does
 * (called with the peers locked). */
static ngx_int_t
ngx_llmd_try_backup(ngx_peer_connection_t *pc, ngx_llmd_peer_data_t *lp,
    ngx_http_upstream_rr_peers_t *peers)
{
    ngx_int_t   rc;
    ngx_uint_t  i, n;

    if (peers->next) {

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pc->log, 0, "llmd backup servers");

        lp->rrp.peers = peers->next;

        n = (lp->rrp.peers->number + (8 * sizeof(uintptr_t) - 1))
                / (8 * sizeof(uintptr_t));

        for (i = 0; i < n; i++) {
            lp->rrp.tried[i] = 0;
        }

        ngx_http_upstream_rr_peers_unlock(peers);

        rc = ngx_llmd_get_peer(pc, lp);

        if (rc != NGX_BUSY) {
            return rc;
        }

        ngx_http_upstream_rr_peers_wlock(peers);
    }

    ngx_http_upstream_rr_peers_unlock(peers);

    lp->ctx->preview.valid = 0;
    pc->name = peers->name;

    return NGX_BUSY;
}


/* The TTFT this request showed: the time to the response header for a
 * stream (workers send headers with the first token), else the worker's
 * X-LLMD-TTFT-Ms header. */
static ngx_int_t
ngx_llmd_observed_ttft(ngx_llmd_peer_data_t *lp, double *ms)
{
    ngx_uint_t                  i;
    ngx_list_part_t            *part;
    ngx_table_elt_t            *h;
    ngx_http_upstream_t        *u;
    ngx_http_upstream_state_t  *us;

    u = lp->request->upstream;
    us = u ? u->state : NULL;

    if (us == NULL || us->header_time == (ngx_msec_t) -1) {
        return NGX_DECLINED;
    }

    if (lp->ctx->req.stream == 1) {
        *ms = (double) us->header_time;
        return NGX_OK;
    }

    part = &u->headers_in.headers.part;
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

        if (h[i].key.len == sizeof("X-LLMD-TTFT-Ms") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-LLMD-TTFT-Ms",
                               h[i].key.len) == 0)
        {
            *ms = strtod((char *) h[i].value.data, NULL);
            return *ms >= 0.0 ? NGX_OK : NGX_DECLINED;
        }
    }

    return NGX_DECLINED;
}


/* The decode peer answered (or failed): its prefill of this request is
 * no longer ahead of the next one. */
void
ngx_llmd_prefill_release(ngx_llmd_ctx_t *ctx)
{
    ngx_llmd_peer_t  *pr;

    if (ctx == NULL || ctx->prefill_conf == NULL) {
        return;
    }

    pr = &ctx->prefill_conf->sh->peers[ctx->prefill_slot];

    (void) ngx_atomic_fetch_add(&pr->prefilling,
                                -(ngx_atomic_int_t) ctx->prefill_tokens);
    ctx->prefill_conf = NULL;
    ctx->prefill_tokens = 0;
}


static void
ngx_llmd_free_peer(ngx_peer_connection_t *pc, void *data, ngx_uint_t state)
{
    ngx_llmd_peer_data_t  *lp = data;

    double                      observed;
    ngx_int_t                   slot;
    ngx_msec_t                  t;
    ngx_atomic_int_t            ewma, sample;
    ngx_llmd_peer_t            *sp;
    ngx_http_upstream_state_t  *us;

    slot = lp->slot;
    sp = slot >= 0 ? &lp->conf->sh->peers[slot] : NULL;

    /* no answer (a failed try, or one that never got a header) */
    ngx_llmd_prefill_release(lp->ctx);

    if (sp) {
        (void) ngx_atomic_fetch_add(&sp->inflight, -1);
        (void) ngx_atomic_fetch_add(&sp->inflight_tokens,
                                    -(ngx_atomic_int_t) lp->tokens);
        (void) ngx_atomic_fetch_add(&sp->inflight_uncached,
                                    -(ngx_atomic_int_t) lp->uncached);
        (void) ngx_atomic_fetch_add(&sp->inflight_work,
                                    -(ngx_atomic_int_t) lp->work);

        if (state & NGX_PEER_FAILED) {
            (void) ngx_atomic_fetch_add(&sp->failures, 1);

            /* the work never reached it */
            if (sp->pending_tokens >= lp->pending) {
                sp->pending_tokens -= lp->pending;
            }
        }

        /* time to the response header, kept as an EWMA (1/8) */
        us = lp->request->upstream ? lp->request->upstream->state : NULL;

        if (state == 0 && us && us->header_time != (ngx_msec_t) -1
            && us->header_time > 0)
        {
            t = us->header_time;
            sample = (ngx_atomic_int_t) t * 1000;
            ewma = (ngx_atomic_int_t) sp->header_time_ewma;
            sp->header_time_ewma = ewma ? ewma + (sample - ewma) / 8 : sample;
        }

        if (state == 0 && lp->ctx->inspected
            && ngx_llmd_observed_ttft(lp, &observed) == NGX_OK)
        {
            lp->ctx->observed = 1;
            lp->ctx->observed_ttft_ms = observed;
            ngx_llmd_observe_ttft(lp->conf, slot, observed);

            if (lp->ctx->predicted) {
                ngx_llmd_predict_observe(lp->conf, slot, lp->predicted,
                                         lp->correction, observed);
            }
        }

        lp->slot = -1;

        ngx_llmd_flow_freed(lp->conf);
    }

    if (lp->discovered) {
        /* not an rr peer: its failures are kept in the zone, and it sits
         * out 10 s after one (max_fails=1 fail_timeout=10s) */
        if (sp && (state & NGX_PEER_FAILED)) {
            sp->dyn_fails++;
            sp->dyn_checked = ngx_time();

        } else if (sp && state == 0) {
            sp->dyn_fails = 0;
        }

        lp->discovered = 0;

        if (pc->tries) {
            pc->tries--;
        }

        return;
    }

    ngx_http_upstream_free_round_robin_peer(pc, data, state);
}
