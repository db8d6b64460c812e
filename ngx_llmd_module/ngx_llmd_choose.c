/*
 * The choice of a peer for one try of the balancer (ngx_llmd_balancer.c).
 *
 * Candidates are the live server lines plus, with llmd_redis, the workers
 * discovered through their heartbeats.  Choice among them:
 *   0. with fresh fleet state for every candidate: among those predicted
 *      to meet llmd_slo, the prefix holder unless it is predicted slower
 *      than the fastest by more than llmd_stickiness, else the fastest
 *      ("predicted"; "slo-miss" when none is predicted to meet the SLO);
 *   1. if in-flight requests are imbalanced (max - min > abs threshold and
 *      max > rel threshold x min), the least loaded peer wins ("balance");
 *   2. otherwise the highest score wins:
 *          prefix_weight     x matched_blocks / request_blocks
 *        + prefix_weight / 2 x home_blocks / request_blocks
 *        - load_weight       x (in_flight_tokens / weight) / max over candidates
 *      matched blocks are those the peer holds.  Home blocks were sent to
 *      a worker that publishes cache events and evicted by it since: a
 *      prefix that nobody holds goes back to where it was, and one that is
 *      held elsewhere is still drawn there, by half.  When the fleet's
 *      cache overflows, each worker thus keeps its share of the prefixes
 *      instead of every prefix visiting every worker ("affinity" when the
 *      winner holds part of the prompt, "home" when it only had it, else
 *      "load");
 *   3. ties are broken by a cursor shared by all workers, so cold starts
 *      and identical scores spread evenly.
 *
 * With llmd_pd the choice is made earlier, once: nginx evaluates the
 * proxy_set_header values in u->create_request, before peer.init and get
 * (ngx_http_upstream_init_request), and the prefill/decode decision those
 * headers carry depends on the decode peer's prefix match.  So the first
 * evaluation of $llmd_prefill_peer or $llmd_transfer_id runs the same
 * choice here (ngx_llmd_preview), counting nothing, and the first get()
 * takes that peer while it is still a candidate; retries choose afresh.
 */

#include "ngx_llmd_balancer.h"


/*
 * The decode peer this request will go to, chosen now (see the top): the
 * same candidates and policy as get(), over the primary list and then the
 * backup list, with nothing counted against the peer.  NGX_DECLINED when
 * there is no candidate.
 */
ngx_int_t
ngx_llmd_preview(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx)
{
    time_t                          now;
    ngx_int_t                       rc;
    ngx_uint_t                      backup, best, n;
    ngx_llmd_cand_t                *cd;
    ngx_llmd_peer_data_t           *lp;
    ngx_http_upstream_rr_peers_t   *peers;

    ctx->preview.valid = 0;

    if (ctx->inspected && ctx->block_size != conf->block_size) {
        ctx->req.prefix.nkeys = 0;
    }

    lp = ngx_pcalloc(r->pool, sizeof(ngx_llmd_peer_data_t));
    if (lp == NULL) {
        return NGX_ERROR;
    }

    if (ngx_llmd_scratch(lp, r, conf) != NGX_OK) {
        return NGX_ERROR;
    }

    lp->ctx = ctx;

    now = ngx_time();
    peers = lp->primary;

    for (backup = 0; backup < 2 && peers; backup++, peers = peers->next) {

        /* nothing tried yet */
        n = (peers->number + (8 * sizeof(uintptr_t) - 1))
            / (8 * sizeof(uintptr_t));

        lp->rrp.peers = peers;
        lp->rrp.tried = ngx_pcalloc(r->pool, ngx_max(n, 1) * sizeof(uintptr_t));
        if (lp->rrp.tried == NULL) {
            return NGX_ERROR;
        }

        ngx_http_upstream_rr_peers_rlock(peers);

        rc = ngx_llmd_choose(lp, peers, backup, now, &best);

        if (rc == NGX_OK) {
            cd = &lp->cand[best];

            ctx->preview.peer = cd->peer;
            ctx->preview.slot = cd->slot;
            ctx->preview.match = cd->match;
            ctx->preview.reason = ctx->reason;
            ctx->preview.predicted = ctx->predicted;
            ctx->preview.ttft = cd->ttft;
            ctx->preview.correction = cd->correction;
            ctx->preview.uncached = cd->uncached;
            ctx->preview.valid = 1;
        }

        ngx_http_upstream_rr_peers_unlock(peers);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    return NGX_DECLINED;
}


/*
 * Candidates of one peer list (locked by the caller) and the choice among
 * them: the previewed peer if it is still a candidate, else the policy's.
 * NGX_DECLINED: no candidate.
 */
ngx_int_t
ngx_llmd_choose(ngx_llmd_peer_data_t *lp, ngx_http_upstream_rr_peers_t *peers,
    ngx_uint_t backup, time_t now, ngx_uint_t *best)
{
    ngx_int_t             rc;
    ngx_uint_t            c, ncand, start, nkeys;
    ngx_llmd_ctx_t       *ctx;
    ngx_llmd_cand_t      *cd;
    ngx_llmd_srv_conf_t  *conf;

    conf = lp->conf;
    ctx = lp->ctx;

    ncand = ngx_llmd_static_candidates(lp, peers, backup, now);

    if (conf->redis && !backup) {
        ncand = ngx_llmd_discovered_candidates(lp, ncand, now);
    }

    if (ncand == 0) {
        return NGX_DECLINED;
    }

    /* prefix affinity: leading blocks each candidate holds */
    nkeys = ctx->inspected ? ctx->req.prefix.nkeys : 0;

    for (c = 0; c < ncand; c++) {
        lp->slots[c] = lp->cand[c].slot;
        lp->match[c] = 0;
        lp->home[c] = 0;
    }

    if (nkeys && lp->hints == NULL) {
        lp->hints = ngx_palloc(lp->request->pool, nkeys * sizeof(uint32_t));
        if (lp->hints == NULL) {
            return NGX_ERROR;
        }
    }

    if (nkeys) {
        ngx_memset(lp->hints, 0xff, nkeys * sizeof(uint32_t));
    }

    if (nkeys && ncand > 1) {
        ngx_llmd_zone_match(conf, ctx->req.prefix.keys, nkeys, lp->slots,
                            ncand, lp->match, lp->home, lp->hints);
    }

    for (c = 0; c < ncand; c++) {
        lp->cand[c].match = lp->match[c];
        lp->cand[c].home = lp->home[c];
    }

    if (ctx->preview.valid) {
        for (c = 0; c < ncand; c++) {
            cd = &lp->cand[c];

            if (cd->peer == ctx->preview.peer
                && (cd->peer || cd->slot == ctx->preview.slot))
            {
                cd->ttft = ctx->preview.ttft;
                cd->correction = ctx->preview.correction;
                cd->uncached = ctx->preview.uncached;
                ctx->reason = ctx->preview.reason;
                ctx->predicted = ctx->preview.predicted;
                *best = c;
                return NGX_OK;
            }
        }
    }

    start = ngx_atomic_fetch_add(&conf->sh->cursor, 1) % ncand;
    *best = start;
    ctx->predicted = 0;

    rc = NGX_DECLINED;

    switch (conf->policy) {

    case NGX_LLMD_POLICY_LLM_D:
        *best = ngx_llmd_pick_llm_d(lp, ncand, start, nkeys);
        break;

    case NGX_LLMD_POLICY_DYNAMO:
        *best = ngx_llmd_pick_dynamo(lp, ncand, start);
        break;

    default:
        if (conf->redis && conf->predict) {
            rc = ngx_llmd_pick_predicted(lp, ncand, start, best);
            ctx->predicted = (rc == NGX_OK);
        }

        if (rc != NGX_OK) {
            *best = ngx_llmd_pick_scored(lp, ncand, start, nkeys);
        }
    }

    return NGX_OK;
}
