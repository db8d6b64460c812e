/*
 * Disaggregated prefill/decode (llmd_pd): whether a prefill-role worker
 * computes a request's prompt and ships its KV to the decode worker, and
 * which one.  The decode worker learns the decision from two request
 * headers the configuration sets from $llmd_prefill_peer (the prefill
 * worker's KV listener) and $llmd_transfer_id.
 *
 * The decision, made once per request, when one of those variables is
 * first evaluated (proxy's create_request, before the balancer runs):
 *   1. the prefill candidates are the live prefill-role workers that
 *      advertise a KV listener ("no-prefill-peer" when there are none, or
 *      the fleet state is stale);
 *   2. the decode peer is chosen now (ngx_llmd_preview); the prompt tokens
 *      it does not hold, counted with its tokenizer's bytes per token,
 *      must exceed threshold ("under-threshold" otherwise);
 *   3. a prefill worker's backlog is its queued prefill tokens (heartbeat)
 *      plus the prefill tokens this gateway sent it and has not seen
 *      answered; those over max_queue are skipped ("queue-full" when all
 *      are);
 *   4. the highest score wins, as for decode:
 *          prefix_weight x matched_blocks / request_blocks
 *        - load_weight   x backlog / max(max_queue, largest backlog)
 *      ties broken by a cursor of its own in the zone (sharing the decode
 *      pick's would advance both by two per request, and the decode pick
 *      would land on every other peer only).
 * A transfer id names the request across gateways and restarts: a random
 * 64-bit base drawn when the zone is created, plus a counter in the zone,
 * through a bijective mix, as 16 hex digits.
 */

#include "ngx_llmd.h"



const char  *ngx_llmd_pd_reasons[NGX_LLMD_PD_NREASONS] = {
    "remote", "no-prefill-peer", "under-threshold", "queue-full"
};


static ngx_uint_t ngx_llmd_pd_count(ngx_llmd_srv_conf_t *conf);
static ngx_uint_t ngx_llmd_pd_candidates(ngx_llmd_srv_conf_t *conf,
    uint64_t model, ngx_int_t *slots, ngx_uint_t max, uint64_t *max_backlog);
static ngx_uint_t ngx_llmd_pd_best(ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx, ngx_int_t *slots, ngx_uint_t *match, ngx_uint_t n,
    uint64_t max_backlog);
static ngx_int_t ngx_llmd_pd_assign(ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx, ngx_int_t slot,
    ngx_uint_t match);
static void ngx_llmd_pd_cleanup(void *data);


/* llmd_pd threshold=N [max_queue=M];  llmd_pd off; */
char *
ngx_llmd_pd_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i, *field;

    if (lcf->pd != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2
        && value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0)
    {
        lcf->pd = 0;
        return NGX_CONF_OK;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "threshold=", 10) == 0) {
            field = &lcf->pd_threshold;
            s.data = value[i].data + 10;

        } else if (ngx_strncmp(value[i].data, "max_queue=", 10) == 0) {
            field = &lcf->pd_max_queue;
            s.data = value[i].data + 10;

        } else {
            goto invalid;
        }

        s.len = value[i].data + value[i].len - s.data;

        n = ngx_atoi(s.data, s.len);
        if (n == NGX_ERROR || *field != NGX_CONF_UNSET_UINT) {
            goto invalid;
        }

        *field = (ngx_uint_t) n;
    }

    if (lcf->pd_threshold == NGX_CONF_UNSET_UINT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llmd_pd\" needs threshold=N or off");
        return NGX_CONF_ERROR;
    }

    lcf->pd = 1;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_llmd_pd_init_upstream(ngx_conf_t *cf, ngx_llmd_srv_conf_t *conf)
{
    ngx_conf_init_value(conf->pd, 0);

    if (!conf->pd) {
        return NGX_OK;
    }

    if (conf->redis == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"llmd_pd\" in upstream \"%V\" needs "
                           "\"llmd_redis\": prefill workers are found "
                           "through their heartbeats",
                           &conf->upstream->host);
        return NGX_ERROR;
    }

    ngx_conf_init_uint_value(conf->pd_max_queue, 4 * conf->pd_threshold);

    return NGX_OK;
}


/* splitmix64's finalizer: a bijection, so distinct inputs stay distinct */
static uint64_t
ngx_llmd_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;

    return x;
}


static ngx_uint_t
ngx_llmd_pd_eligible(ngx_llmd_peer_t *p)
{
    return p->hb_seen && p->alive && p->role == LLMD_ROLE_PREFILL
           && p->kv_addr_len;
}


static void
ngx_llmd_pd_local(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx,
    ngx_uint_t reason)
{
    ctx->pd_reason = ngx_llmd_pd_reasons[reason];
    (void) ngx_atomic_fetch_add(&conf->sh->pd_decisions[reason], 1);
}


/*
 * Decides once (see the top); the variables read the outcome.  Too late
 * once the balancer has picked: the headers have been sent without it.
 */
ngx_int_t
ngx_llmd_pd_decide(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx)
{
    uint64_t              max_backlog, uncached;
    ngx_int_t             rc, *slots;
    ngx_uint_t            n, nprefill, best;
    ngx_uint_t           *match;
    ngx_msec_int_t        t0;
    ngx_llmd_srv_conf_t  *conf;

    if (ctx->pd_decided || ctx->tries) {
        return NGX_OK;
    }

    ctx->pd_decided = 1;

    conf = ngx_llmd_location_upstream(r);

    if (conf == NULL || conf->pd != 1 || !ctx->inspected || conf->sh == NULL)
    {
        return NGX_OK;
    }

    t0 = ngx_llmd_now_ns();
    rc = NGX_OK;

    nprefill = ngx_llmd_redis_fresh(conf) ? ngx_llmd_pd_count(conf) : 0;

    if (nprefill == 0) {
        ngx_llmd_pd_local(conf, ctx, NGX_LLMD_PD_NO_PREFILL);
        goto done;
    }

    rc = ngx_llmd_preview(r, conf, ctx);

    if (rc != NGX_OK) {
        /* NGX_DECLINED: no decode peer, the request fails anyway */
        rc = (rc == NGX_ERROR) ? NGX_ERROR : NGX_OK;
        goto done;
    }

    uncached = ngx_llmd_uncached_tokens(conf, ctx->preview.slot,
                                        ctx->req.prefix.total_bytes,
                                        ctx->preview.match);

    if (uncached <= conf->pd_threshold) {
        ngx_llmd_pd_local(conf, ctx, NGX_LLMD_PD_UNDER);
        goto done;
    }

    slots = ngx_palloc(r->pool, nprefill * (sizeof(ngx_int_t)
                                            + sizeof(ngx_uint_t)));
    if (slots == NULL) {
        return NGX_ERROR;
    }

    match = (ngx_uint_t *) (slots + nprefill);

    n = ngx_llmd_pd_candidates(conf, ctx->model_hash, slots, nprefill,
                               &max_backlog);

    if (n == 0) {
        ngx_llmd_pd_local(conf, ctx, NGX_LLMD_PD_QUEUE_FULL);
        goto done;
    }

    best = ngx_llmd_pd_best(conf, ctx, slots, match, n, max_backlog);

    rc = ngx_llmd_pd_assign(r, conf, ctx, slots[best], match[best]);

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llmd pd: prefill on %V (%ui of %ui blocks held), "
                   "transfer %V, %uL uncached on the decode peer",
                   &ctx->pd_peer, match[best], ctx->req.prefix.nkeys,
                   &ctx->transfer_id, uncached);

done:

    ctx->decision_ns += ngx_llmd_now_ns() - t0;

    return rc;
}


/* the live prefill workers of the fleet */
static ngx_uint_t
ngx_llmd_pd_count(ngx_llmd_srv_conf_t *conf)
{
    ngx_uint_t  k, n;

    n = 0;

    for (k = 0; k < conf->sh->npeers; k++) {
        if (ngx_llmd_pd_eligible(&conf->sh->peers[k])) {
            n++;
        }
    }

    return n;
}


/* The prefill workers with room in their backlog, into slots (at most
 * max); *max_backlog gets the longest of their backlogs. */
static ngx_uint_t
ngx_llmd_pd_candidates(ngx_llmd_srv_conf_t *conf, uint64_t model,
    ngx_int_t *slots, ngx_uint_t max, uint64_t *max_backlog)
{
    uint64_t          backlog;
    ngx_uint_t        k, n;
    ngx_llmd_peer_t  *pr;

    n = 0;
    *max_backlog = 0;

    for (k = 0; k < conf->sh->npeers && n < max; k++) {
        pr = &conf->sh->peers[k];

        if (!ngx_llmd_pd_eligible(pr) || ngx_llmd_model_mismatch(pr, model)) {
            continue;
        }

        backlog = pr->queued_prefill_tokens + pr->pd_inflight_tokens;

        if (backlog > conf->pd_max_queue) {
            continue;
        }

        *max_backlog = ngx_max(*max_backlog, backlog);
        slots[n++] = k;
    }

    return n;
}


/* The candidate with the best prefix match less backlog (match gets each
 * candidate's held blocks); ties go round a shared cursor. */
static ngx_uint_t
ngx_llmd_pd_best(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx,
    ngx_int_t *slots, ngx_uint_t *match, ngx_uint_t n, uint64_t max_backlog)
{
    uint64_t          denom;
    ngx_int_t         score, best_score;
    ngx_uint_t        k, c, start, best, nkeys;
    ngx_llmd_peer_t  *pr;

    nkeys = ctx->req.prefix.nkeys;
    ngx_memzero(match, n * sizeof(ngx_uint_t));

    if (nkeys) {
        ngx_llmd_zone_match(conf, ctx->req.prefix.keys, nkeys, slots, n,
                            match, NULL, NULL);
    }

    /* fixed point as in ngx_llmd_pick_scored; higher is better */
    denom = ngx_max(conf->pd_max_queue, max_backlog);
    start = ngx_atomic_fetch_add(&conf->sh->pd_cursor, 1) % n;
    best = start;
    best_score = NGX_MAX_INT_T_VALUE;

    for (k = 0; k < n; k++) {
        c = (start + k) % n;
        pr = &conf->sh->peers[slots[c]];

        score = 0;

        if (nkeys) {
            score += conf->prefix_weight * (ngx_int_t) match[c]
                     / (ngx_int_t) nkeys;
        }

        if (denom) {
            score -= (ngx_int_t) ((uint64_t) conf->load_weight
                                  * (pr->queued_prefill_tokens
                                     + pr->pd_inflight_tokens)
                                  / denom);
        }

        if (-score < best_score) {
            best_score = -score;
            best = c;
        }
    }

    return best;
}


/* The request is prefilled on the worker in slot: its KV address and a
 * transfer id for the headers, its backlog counted until the request
 * ends (ngx_llmd_pd_cleanup), and the prefix placed there. */
static ngx_int_t
ngx_llmd_pd_assign(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx, ngx_int_t slot, ngx_uint_t match)
{
    u_char              *p;
    uint64_t             id;
    ngx_uint_t           nkeys;
    ngx_llmd_peer_t     *pr;
    ngx_llmd_shctx_t    *sh;
    ngx_pool_cleanup_t  *cln;

    sh = conf->sh;
    pr = &sh->peers[slot];
    nkeys = ctx->req.prefix.nkeys;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    p = ngx_pnalloc(r->pool, LLMD_WIRE_ADDR_MAX + 16);
    if (cln == NULL || p == NULL) {
        return NGX_ERROR;
    }

    /* kv_addr changes only when the worker restarts elsewhere: a copy
     * taken while it does is at worst a failed transfer, which the decode
     * worker handles */
    ctx->pd_peer.len = ngx_min(pr->kv_addr_len, LLMD_WIRE_ADDR_MAX);
    ctx->pd_peer.data = p;
    ngx_memcpy(p, pr->kv_addr, ctx->pd_peer.len);

    id = ngx_llmd_mix64(sh->transfer_base
                        + (uint64_t) ngx_atomic_fetch_add(&sh->transfer_seq,
                                                          1));

    ctx->transfer_id.data = p + LLMD_WIRE_ADDR_MAX;
    ctx->transfer_id.len = ngx_sprintf(ctx->transfer_id.data, "%016xL", id)
                           - ctx->transfer_id.data;

    ctx->pd_remote = 1;
    ctx->pd_conf = conf;
    ctx->pd_slot = slot;
    ctx->pd_tokens = ngx_llmd_uncached_tokens(conf, slot,
                                              ctx->req.prefix.total_bytes,
                                              match);

    (void) ngx_atomic_fetch_add(&pr->pd_inflight_tokens, ctx->pd_tokens);
    (void) ngx_atomic_fetch_add(&pr->pd_assigned, 1);

    cln->handler = ngx_llmd_pd_cleanup;
    cln->data = ctx;

    ngx_llmd_pd_local(conf, ctx, NGX_LLMD_PD_REMOTE);

    /* a prefill worker without cache events is placed like a decode one */
    if (nkeys && !(pr->events && ngx_llmd_redis_fresh(conf))) {
        ngx_llmd_zone_record(conf, ctx->req.prefix.keys, nkeys, slot,
                             1, NULL, match, 0);
    }

    return NGX_OK;
}


/* The prefill is done once the decode worker answers (or the request
 * ends): its tokens leave the prefill worker's backlog. */
void
ngx_llmd_pd_release(ngx_llmd_ctx_t *ctx)
{
    ngx_llmd_peer_t  *pr;

    if (ctx->pd_tokens == 0 || ctx->pd_conf == NULL) {
        return;
    }

    pr = &ctx->pd_conf->sh->peers[ctx->pd_slot];

    (void) ngx_atomic_fetch_add(&pr->pd_inflight_tokens,
                                -(ngx_atomic_int_t) ctx->pd_tokens);
    ctx->pd_tokens = 0;
}


static void
ngx_llmd_pd_cleanup(void *data)
{
    ngx_llmd_pd_release(data);
}
