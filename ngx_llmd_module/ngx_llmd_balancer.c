/*
 * The balancer: init_upstream, init_peer, get and free, on top of the
 * round-robin peer lists (so weight, max_fails, fail_timeout, max_conns,
 * backup and down behave as in the stock balancers).
 *
 * Choice among the live candidates of one get():
 *   1. if in-flight requests are imbalanced (max - min > abs threshold and
 *      max > rel threshold x min), the least loaded peer wins ("balance");
 *   2. otherwise the highest score wins:
 *          prefix_weight x matched_blocks / request_blocks
 *        - load_weight   x (in_flight_tokens / weight) / max over candidates
 *      ("affinity" when the winner holds part of the prompt, else "load");
 *   3. ties are broken by a cursor shared by all workers, so cold starts
 *      and identical scores spread evenly.
 */

#include "ngx_llmd.h"


typedef struct {
    /* the round-robin data must come first: rr callbacks receive it */
    ngx_http_upstream_rr_peer_data_t   rrp;

    ngx_http_request_t                *request;
    ngx_llmd_srv_conf_t               *conf;
    ngx_llmd_ctx_t                    *ctx;

    ngx_int_t                          slot;        /* of the current try */
    ngx_uint_t                         tokens;      /* this request's load */

    /* scratch of get(), sized for the larger peer list */
    ngx_http_upstream_rr_peers_t      *primary;
    ngx_http_upstream_rr_peer_t      **cand;
    ngx_int_t                         *cand_slot;
    ngx_uint_t                        *cand_match;
    ngx_uint_t                        *cand_index;    /* in the rr list */
} ngx_llmd_peer_data_t;


static ngx_int_t ngx_llmd_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_llmd_get_peer(ngx_peer_connection_t *pc, void *data);
static void ngx_llmd_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state);
static ngx_int_t ngx_llmd_resolve_slots(ngx_llmd_srv_conf_t *conf,
    ngx_http_upstream_rr_peers_t *peers, ngx_uint_t backup);


ngx_int_t
ngx_llmd_init_upstream(ngx_conf_t *cf, ngx_http_upstream_srv_conf_t *us)
{
    size_t                          len;
    u_char                         *p;
    ngx_str_t                       name;
    ngx_llmd_srv_conf_t            *conf;
    ngx_http_upstream_rr_peers_t   *peers;

    if (ngx_http_upstream_init_round_robin(cf, us) != NGX_OK) {
        return NGX_ERROR;
    }

    conf = ngx_http_conf_upstream_srv_conf(us, ngx_llmd_module);

    ngx_conf_init_size_value(conf->block_size, LLMD_PREFIX_BLOCK_DEFAULT);
    ngx_conf_init_uint_value(conf->max_blocks, LLMD_PREFIX_MAX_BLOCKS_DEFAULT);
    ngx_conf_init_value(conf->prefix_weight, 2 * NGX_LLMD_WEIGHT_SCALE);
    ngx_conf_init_value(conf->load_weight, 1 * NGX_LLMD_WEIGHT_SCALE);
    ngx_conf_init_uint_value(conf->balance_abs, 8);
    ngx_conf_init_value(conf->balance_rel, 3 * NGX_LLMD_WEIGHT_SCALE / 2);
    ngx_conf_init_uint_value(conf->default_max_tokens, 256);

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
        slots[i] = ngx_llmd_zone_peer_slot(conf, &peer->name);

        if (slots[i] < 0) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llmd: zone is full, peer %V is balanced "
                          "without shared state", &peer->name);
        }
    }

    slots[conf->nslots[backup]] = -1;

    return NGX_OK;
}


static ngx_int_t
ngx_llmd_init_peer(ngx_http_request_t *r, ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                      n, tokens;
    ngx_llmd_ctx_t                 *ctx;
    ngx_llmd_srv_conf_t            *conf;
    ngx_llmd_peer_data_t           *lp;
    ngx_http_upstream_rr_peers_t   *peers;

    conf = ngx_http_conf_upstream_srv_conf(us, ngx_llmd_module);

    lp = ngx_palloc(r->pool, sizeof(ngx_llmd_peer_data_t));
    if (lp == NULL) {
        return NGX_ERROR;
    }

    r->upstream->peer.data = &lp->rrp;

    if (ngx_http_upstream_init_round_robin_peer(r, us) != NGX_OK) {
        return NGX_ERROR;
    }

    r->upstream->peer.get = ngx_llmd_get_peer;
    r->upstream->peer.free = ngx_llmd_free_peer;

    peers = lp->rrp.peers;

    ngx_llmd_resolve_slots(conf, peers, 0);
    if (peers->next) {
        ngx_llmd_resolve_slots(conf, peers->next, 1);
    }

    n = ngx_max(conf->nslots[0], conf->nslots[1]);

    lp->cand = ngx_palloc(r->pool, n * (sizeof(ngx_http_upstream_rr_peer_t *)
                                        + sizeof(ngx_int_t)
                                        + 2 * sizeof(ngx_uint_t)));
    if (lp->cand == NULL) {
        return NGX_ERROR;
    }

    lp->cand_slot = (ngx_int_t *) (lp->cand + n);
    lp->cand_match = (ngx_uint_t *) (lp->cand_slot + n);
    lp->cand_index = lp->cand_match + n;
    lp->primary = peers;

    lp->request = r;
    lp->conf = conf;
    lp->slot = -1;

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

    if (ctx && ctx->inspected) {
        tokens = ctx->req.prefix.total_bytes / NGX_LLMD_BYTES_PER_TOKEN
                 + (ctx->req.max_tokens >= 0
                    ? (ngx_uint_t) ngx_min(ctx->req.max_tokens, 1 << 24)
                    : conf->default_max_tokens);

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
    uintptr_t                       m;
    ngx_int_t                       slot, score, best_score, s, rel;
    ngx_uint_t                      i, n, k, c, ncand, start, best, nkeys;
    ngx_uint_t                      load, min_load, max_load, max_tokens;
    ngx_uint_t                      backup;
    ngx_llmd_ctx_t                 *ctx;
    ngx_llmd_peer_t                *sp;
    ngx_llmd_shctx_t               *sh;
    ngx_llmd_srv_conf_t            *conf;
    ngx_http_upstream_rr_peer_t    *peer;
    ngx_http_upstream_rr_peers_t   *peers;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "llmd get peer, try: %ui", pc->tries);

    conf = lp->conf;
    sh = conf->sh;
    ctx = lp->ctx;

    pc->cached = 0;
    pc->connection = NULL;

    now = ngx_time();

    peers = lp->rrp.peers;
    backup = (peers != lp->primary);

    ngx_http_upstream_rr_peers_wlock(peers);

    /* the live candidates, as the stock balancers define them */
    ncand = 0;

    for (peer = peers->peer, i = 0; peer; peer = peer->next, i++) {

        n = i / (8 * sizeof(uintptr_t));
        m = (uintptr_t) 1 << i % (8 * sizeof(uintptr_t));

        if (lp->rrp.tried[n] & m) {
            continue;
        }

        if (peer->down) {
            continue;
        }

        if (peer->max_fails
            && peer->fails >= peer->max_fails
            && now - peer->checked <= peer->fail_timeout)
        {
            continue;
        }

        if (peer->max_conns && peer->conns >= peer->max_conns) {
            continue;
        }

        lp->cand[ncand] = peer;
        lp->cand_slot[ncand] = (i < conf->nslots[backup])
                               ? conf->slots[backup][i] : -1;
        lp->cand_match[ncand] = 0;
        lp->cand_index[ncand] = i;
        ncand++;
    }

    if (ncand == 0) {
        goto failed;
    }

    /* prefix affinity: leading blocks each candidate holds */
    nkeys = (ctx && ctx->inspected) ? ctx->req.prefix.nkeys : 0;

    if (nkeys && ncand > 1) {
        ngx_llmd_zone_match(conf, ctx->req.prefix.keys, nkeys, lp->cand_slot,
                            ncand, lp->cand_match);
    }

    /* load */
    min_load = NGX_MAX_UINT32_VALUE;
    max_load = 0;
    max_tokens = 0;

    for (c = 0; c < ncand; c++) {
        slot = lp->cand_slot[c];
        sp = slot >= 0 ? &sh->peers[slot] : NULL;

        load = sp ? sp->inflight : 0;
        min_load = ngx_min(min_load, load);
        max_load = ngx_max(max_load, load);

        if (sp) {
            max_tokens = ngx_max(max_tokens,
                                 sp->inflight_tokens / lp->cand[c]->weight);
        }
    }

    rel = conf->balance_rel;
    start = ngx_atomic_fetch_add(&sh->cursor, 1) % ncand;
    best = start;
    best_score = NGX_MAX_INT_T_VALUE;

    if (max_load - min_load > conf->balance_abs
        && max_load * NGX_LLMD_WEIGHT_SCALE > rel * min_load)
    {
        /* imbalanced: the least loaded peer, stickiness notwithstanding */
        for (k = 0; k < ncand; k++) {
            c = (start + k) % ncand;
            slot = lp->cand_slot[c];
            load = slot >= 0 ? sh->peers[slot].inflight : 0;
            s = (ngx_int_t) load;
            if (s < best_score) {
                best_score = s;
                best = c;
            }
        }

        if (ctx) {
            ctx->reason = "balance";
        }

        goto found;
    }

    /* scores in fixed point; higher is better, kept negated as a cost */
    for (k = 0; k < ncand; k++) {
        c = (start + k) % ncand;
        slot = lp->cand_slot[c];

        score = 0;

        if (nkeys) {
            score += conf->prefix_weight * (ngx_int_t) lp->cand_match[c]
                     / (ngx_int_t) nkeys;
        }

        if (max_tokens && slot >= 0) {
            score -= (ngx_int_t) ((uint64_t) conf->load_weight
                                  * (sh->peers[slot].inflight_tokens
                                     / lp->cand[c]->weight)
                                  / max_tokens);
        }

        if (-score < best_score) {
            best_score = -score;
            best = c;
        }
    }

    if (ctx) {
        ctx->reason = lp->cand_match[best] ? "affinity" : "load";
    }

found:

    peer = lp->cand[best];
    slot = lp->cand_slot[best];

    i = lp->cand_index[best];

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

    peer->conns++;

    if (now - peer->checked > peer->fail_timeout) {
        peer->checked = now;
    }

    lp->rrp.current = peer;

    n = i / (8 * sizeof(uintptr_t));
    m = (uintptr_t) 1 << i % (8 * sizeof(uintptr_t));
    lp->rrp.tried[n] |= m;

    ngx_http_upstream_rr_peers_unlock(peers);

    lp->slot = slot;

    if (slot >= 0) {
        sp = &sh->peers[slot];

        (void) ngx_atomic_fetch_add(&sp->inflight, 1);
        (void) ngx_atomic_fetch_add(&sp->inflight_tokens, lp->tokens);
        (void) ngx_atomic_fetch_add(&sp->picks, 1);

        if (ctx && ctx->reason) {
            if (ctx->reason[0] == 'a') {
                (void) ngx_atomic_fetch_add(&sp->affinity_picks, 1);

            } else if (ctx->reason[0] == 'b') {
                (void) ngx_atomic_fetch_add(&sp->balance_picks, 1);
            }
        }

        if (nkeys) {
            ngx_llmd_zone_record(conf, ctx->req.prefix.keys, nkeys, slot);
        }
    }

    if (ctx) {
        ctx->peer = peer->name;
        ctx->matched = lp->cand_match[best];
        ctx->tries++;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "llmd picked %V (%s), matched %ui of %ui blocks",
                   &peer->name, ctx && ctx->reason ? ctx->reason : "-",
                   lp->cand_match[best], nkeys);

    return NGX_OK;

failed:

    if (peers->next) {

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pc->log, 0, "llmd backup servers");

        lp->rrp.peers = peers->next;

        n = (lp->rrp.peers->number + (8 * sizeof(uintptr_t) - 1))
                / (8 * sizeof(uintptr_t));

        for (i = 0; i < n; i++) {
            lp->rrp.tried[i] = 0;
        }

        ngx_http_upstream_rr_peers_unlock(peers);

        s = ngx_llmd_get_peer(pc, lp);

        if (s != NGX_BUSY) {
            return s;
        }

        ngx_http_upstream_rr_peers_wlock(peers);
    }

    ngx_http_upstream_rr_peers_unlock(peers);

    pc->name = peers->name;

    return NGX_BUSY;
}


static void
ngx_llmd_free_peer(ngx_peer_connection_t *pc, void *data, ngx_uint_t state)
{
    ngx_llmd_peer_data_t  *lp = data;

    ngx_msec_t                  t;
    ngx_atomic_int_t            ewma, sample;
    ngx_llmd_peer_t            *sp;
    ngx_http_upstream_state_t  *us;

    if (lp->slot >= 0) {
        sp = &lp->conf->sh->peers[lp->slot];

        (void) ngx_atomic_fetch_add(&sp->inflight, -1);
        (void) ngx_atomic_fetch_add(&sp->inflight_tokens,
                                    -(ngx_atomic_int_t) lp->tokens);

        if (state & NGX_PEER_FAILED) {
            (void) ngx_atomic_fetch_add(&sp->failures, 1);
        }

        /* time to the response header: what a client waits for its first
         * token; kept as an EWMA (1/8) for the status and predictors */
        us = lp->request->upstream ? lp->request->upstream->state : NULL;

        if (state == 0 && us && us->header_time != (ngx_msec_t) -1
            && us->header_time > 0)
        {
            t = us->header_time;
            sample = (ngx_atomic_int_t) t * 1000;
            ewma = (ngx_atomic_int_t) sp->header_time_ewma;
            sp->header_time_ewma = ewma ? ewma + (sample - ewma) / 8 : sample;
        }

        lp->slot = -1;
    }

    ngx_http_upstream_free_round_robin_peer(pc, data, state);
}
