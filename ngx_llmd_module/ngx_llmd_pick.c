/*
 * Choosing among candidates: who is a candidate, and the policies that
 * pick one (llmd's prediction and score, and the reference policies).
 * See ngx_llmd_balancer.c for the order in which they apply.
 */

#include "ngx_llmd_balancer.h"


/* the names of ngx_llmd_pick_reason_e, as variables and headers show them */
const char  *ngx_llmd_pick_reasons[NGX_LLMD_PICK_NREASONS] = {
    "", "affinity", "home", "balance", "load", "predicted", "slo-miss",
    "llm-d", "dynamo"
};


/* Live server lines of the current list, as the stock balancers see them. */
ngx_uint_t
ngx_llmd_static_candidates(ngx_llmd_peer_data_t *lp,
    ngx_http_upstream_rr_peers_t *peers, ngx_uint_t backup, time_t now)
{
    uintptr_t                      m;
    ngx_int_t                      slot;
    ngx_uint_t                     i, n, ncand;
    ngx_llmd_cand_t               *c;
    ngx_llmd_srv_conf_t           *conf;
    ngx_http_upstream_rr_peer_t   *peer;

    conf = lp->conf;
    ncand = 0;

    for (peer = peers->peer, i = 0; peer; peer = peer->next, i++) {

        n = i / (8 * sizeof(uintptr_t));
        m = (uintptr_t) 1 << i % (8 * sizeof(uintptr_t));

        if ((lp->rrp.tried[n] & m)
            || peer->down
            || (peer->max_fails
                && peer->fails >= peer->max_fails
                && now - peer->checked <= peer->fail_timeout)
            || (peer->max_conns && peer->conns >= peer->max_conns))
        {
            continue;
        }

        slot = (i < conf->nslots[backup]) ? conf->slots[backup][i] : -1;

        if (slot >= 0
            && ngx_llmd_model_mismatch(&conf->sh->peers[slot],
                                       lp->ctx->model_hash))
        {
            continue;
        }

        c = &lp->cand[ncand++];
        c->peer = peer;
        c->slot = slot;
        c->index = i;
        c->weight = peer->weight;
    }

    return ncand;
}


/* Workers discovered through Redis that are alive, take decode work, were
 * not tried for this request and are not cooling down after a failure. */
ngx_uint_t
ngx_llmd_discovered_candidates(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    time_t now)
{
    ngx_uint_t         k;
    ngx_llmd_cand_t   *c;
    ngx_llmd_peer_t   *p;
    ngx_llmd_shctx_t  *sh;

    sh = lp->conf->sh;

    for (k = 0; k < sh->npeers && ncand < lp->ncand_max; k++) {
        p = &sh->peers[k];

        if (!p->dynamic || !p->alive || p->role == LLMD_ROLE_PREFILL
            || ngx_llmd_model_mismatch(p, lp->ctx->model_hash)
            || (lp->tried[k / 64] & ((uint64_t) 1 << (k % 64)))
            || (p->dyn_fails && now - p->dyn_checked <= 10))
        {
            continue;
        }

        c = &lp->cand[ncand++];
        c->peer = NULL;
        c->slot = k;
        c->index = k;
        c->weight = 1;
    }

    return ncand;
}


/* In-flight requests on a candidate's peer, this gateway's and others'. */
static ngx_uint_t
ngx_llmd_cand_load(ngx_llmd_shctx_t *sh, ngx_llmd_cand_t *cd)
{
    ngx_llmd_peer_t  *sp;

    if (cd->slot < 0) {
        return 0;
    }

    sp = &sh->peers[cd->slot];

    return sp->inflight + sp->remote_inflight;
}


/* Work in flight on a candidate's peer (uncached prompt + max_tokens),
 * this gateway's and others', per unit of weight. */
static ngx_uint_t
ngx_llmd_cand_work(ngx_llmd_shctx_t *sh, ngx_llmd_cand_t *cd)
{
    ngx_llmd_peer_t  *sp;

    if (cd->slot < 0) {
        return 0;
    }

    sp = &sh->peers[cd->slot];

    return (sp->inflight_work + sp->remote_work) / cd->weight;
}


/* Prefill this gateway sent a candidate's peer, not answered yet. */
static ngx_uint_t
ngx_llmd_cand_prefilling(ngx_llmd_shctx_t *sh, ngx_llmd_cand_t *cd)
{
    return cd->slot >= 0 ? sh->peers[cd->slot].prefilling : 0;
}


/*
 * Prediction: among the candidates predicted to meet llmd_slo, the one
 * holding the most of the prompt, unless its predicted TTFT is worse than
 * the fastest candidate's by more than llmd_stickiness; then the fastest.
 * Minimising each request's TTFT alone spreads a shared prefix over every
 * worker and evicts it everywhere (each pick is right, the fleet's cache is
 * lost); the margin is what a warm cache is worth to the requests after
 * this one.  NGX_DECLINED when some candidate lacks fresh fleet state.
 *
 * "The fastest" is any candidate within NGX_LLMD_PREDICT_TOLERANCE of the
 * lowest prediction, the one with the least work in flight: predictions come from
 * heartbeats and measured rates, and a few milliseconds between workers
 * are noise.  Taken at face value, a worker whose last steps measured a
 * slightly faster prefill would draw every cold request until its queue
 * showed in a heartbeat.
 */

#define NGX_LLMD_PREDICT_TOLERANCE  0.10    /* of the lowest, at least ... */
#define NGX_LLMD_PREDICT_TOLERANCE_STEPS  1 /* ... one decode step */

static ngx_uint_t
ngx_llmd_slo_met(ngx_llmd_srv_conf_t *conf, ngx_llmd_cand_t *cd)
{
    return !((conf->slo_ttft && cd->ttft > (double) conf->slo_ttft)
             || (conf->slo_itl && cd->itl > (double) conf->slo_itl));
}


/* Among the candidates about as fast as the fastest (and meeting the SLO
 * when slo is set): the longest match, then the least prefill this gateway
 * sent that has not been answered, then the least work in flight.  The
 * prediction sees a worker's queue only at its next heartbeat; a request
 * sent to a worker whose last one is still prefilling waits for it, the
 * collision round-robin avoids by turns (bench/results/uniform). */
static ngx_uint_t
ngx_llmd_pick_near(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t fast, ngx_uint_t slo)
{
    double             tol;
    ngx_uint_t         k, c, near, load, nload, pre, npre;
    ngx_llmd_cand_t   *cd;
    ngx_llmd_shctx_t  *sh;

    sh = lp->conf->sh;

    tol = ngx_max(lp->cand[fast].ttft * NGX_LLMD_PREDICT_TOLERANCE,
                  lp->cand[fast].itl * NGX_LLMD_PREDICT_TOLERANCE_STEPS);
    near = fast;
    nload = ngx_llmd_cand_work(sh, &lp->cand[fast]);
    npre = ngx_llmd_cand_prefilling(sh, &lp->cand[fast]);

    for (k = 0; k < ncand; k++) {
        c = (start + k) % ncand;
        cd = &lp->cand[c];

        if ((slo && !ngx_llmd_slo_met(lp->conf, cd))
            || cd->ttft > lp->cand[fast].ttft + tol)
        {
            continue;
        }

        load = ngx_llmd_cand_work(sh, cd);
        pre = ngx_llmd_cand_prefilling(sh, cd);

        if (cd->match > lp->cand[near].match
            || (cd->match == lp->cand[near].match
                && (pre < npre || (pre == npre && load < nload))))
        {
            near = c;
            nload = load;
            npre = pre;
        }
    }

    return near;
}


ngx_int_t
ngx_llmd_pick_predicted(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t *best)
{
    uint64_t              bytes;
    ngx_uint_t            k, c, pass, fast, near, sticky, found;
    ngx_llmd_cand_t      *cd;
    ngx_llmd_srv_conf_t  *conf;

    conf = lp->conf;

    for (c = 0; c < ncand; c++) {
        if (!ngx_llmd_predict_ready(conf, lp->cand[c].slot)) {
            return NGX_DECLINED;
        }
    }

    bytes = lp->ctx->inspected ? lp->ctx->req.prefix.total_bytes : 0;

    for (c = 0; c < ncand; c++) {
        cd = &lp->cand[c];
        ngx_llmd_predict(conf, cd->slot, bytes, cd->match, &cd->ttft,
                         &cd->itl, &cd->uncached, &cd->correction);
    }

    /* first pass: only those predicted to meet the SLO */
    for (pass = 0; pass < 2; pass++) {
        found = 0;
        fast = sticky = start;

        for (k = 0; k < ncand; k++) {
            c = (start + k) % ncand;
            cd = &lp->cand[c];

            if (pass == 0 && !ngx_llmd_slo_met(conf, cd)) {
                continue;
            }

            if (!found) {
                fast = sticky = c;
                found = 1;
                continue;
            }

            if (cd->ttft < lp->cand[fast].ttft) {
                fast = c;
            }

            if (cd->match > lp->cand[sticky].match
                || (cd->match == lp->cand[sticky].match
                    && cd->ttft < lp->cand[sticky].ttft))
            {
                sticky = c;
            }
        }

        if (!found) {
            continue;
        }

        near = ngx_llmd_pick_near(lp, ncand, start, fast, pass == 0);

        if (lp->cand[sticky].match > lp->cand[near].match
            && lp->cand[sticky].ttft
               <= lp->cand[fast].ttft + (double) conf->stickiness)
        {
            *best = sticky;

        } else {
            *best = near;
        }

        lp->ctx->reason = pass == 0 ? NGX_LLMD_PICK_PREDICTED
                                    : NGX_LLMD_PICK_SLO_MISS;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/*
 * The affinity/load score, highest wins, among the candidates that are not
 * overloaded: over the least loaded by more than llmd_balance_threshold's
 * abs and rel both.  Those are passed over whatever they hold, so one hot
 * prefix cannot pile up on a worker; the rest keep their affinity, so a
 * long conversation stays with its history while short requests level the
 * load.  The reason is "balance" where that changed the pick.
 *
 * The load term is the work in flight: prompt tokens the peer did not hold
 * when picked, plus max_tokens.  A long conversation's next turn costs its
 * worker little more than its new message, and a short request queued
 * behind a cold long prompt waits for all of it.  Prompt tokens this
 * gateway sent that the peer has not answered yet count twice: the next
 * request waits for that prefill first (bench/results/uniform).
 */
ngx_uint_t
ngx_llmd_pick_scored(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t nkeys)
{
    ngx_int_t             score, best_score, any_score;
    ngx_uint_t            k, c, best, any, load, min_load, max_tokens;
    ngx_llmd_cand_t      *cd;
    ngx_llmd_peer_t      *sp;
    ngx_llmd_shctx_t     *sh;
    ngx_llmd_srv_conf_t  *conf;

    conf = lp->conf;
    sh = conf->sh;

    min_load = NGX_MAX_UINT32_VALUE;
    max_tokens = 0;

    for (c = 0; c < ncand; c++) {
        cd = &lp->cand[c];
        min_load = ngx_min(min_load, ngx_llmd_cand_load(sh, cd));

        if (cd->slot >= 0) {
            sp = &sh->peers[cd->slot];
            max_tokens = ngx_max(max_tokens,
                                 (sp->inflight_work + sp->remote_work
                                  + sp->prefilling)
                                 / cd->weight);
        }
    }

    best = any = start;
    best_score = any_score = NGX_MAX_INT_T_VALUE;

    /* scores in fixed point; higher is better, kept negated as a cost */
    for (k = 0; k < ncand; k++) {
        c = (start + k) % ncand;
        cd = &lp->cand[c];

        score = 0;

        if (nkeys) {
            /* blocks it holds count fully; blocks only placed there, the
             * prefix's home, by half (ngx_llmd_zone_match) */
            score += (conf->prefix_weight * (ngx_int_t) cd->match
                      + conf->prefix_weight / 2
                        * (ngx_int_t) (cd->home - cd->match))
                     / (ngx_int_t) nkeys;
        }

        if (max_tokens && cd->slot >= 0) {
            sp = &sh->peers[cd->slot];
            score -= (ngx_int_t) ((uint64_t) conf->load_weight
                                  * ((sp->inflight_work + sp->remote_work
                                      + sp->prefilling)
                                     / cd->weight)
                                  / max_tokens);
        }

        if (-score < any_score) {
            any_score = -score;
            any = c;
        }

        load = ngx_llmd_cand_load(sh, cd);

        if (load - min_load > conf->balance_abs
            && load * NGX_LLMD_WEIGHT_SCALE > conf->balance_rel * min_load)
        {
            continue;       /* overloaded */
        }

        if (-score < best_score) {
            best_score = -score;
            best = c;
        }
    }

    lp->ctx->reason = (best != any) ? NGX_LLMD_PICK_BALANCE
                      : lp->cand[best].match ? NGX_LLMD_PICK_AFFINITY
                      : lp->cand[best].home ? NGX_LLMD_PICK_HOME
                      : NGX_LLMD_PICK_LOAD;
    return best;
}


/*
 * Reference policies, from their published descriptions, so benchmarks can
 * compare on the same fleet and traffic (llmd_policy llm-d | dynamo).
 */

#define NGX_LLMD_LLM_D_AFFINITY       0.80          /* affinityThreshold */
#define NGX_LLMD_LLM_D_PEAK_TPS       15928.0       /* peakPrefillThroughput */
#define NGX_LLMD_LLM_D_MAX_PENALTY    18000.0       /* maxTTFTPenaltyMs */
#define NGX_LLMD_LLM_D_QUEUE_TOKENS   4194304.0     /* queueThresholdTokens */
#define NGX_LLMD_DYNAMO_BLOCK_TOKENS  16.0


/* llm-d's optimized baseline: keep endpoints whose prefix score is at least
 * 0.8 (all if none), unless the best sticky one's estimated TTFT exceeds the
 * best other's by 18 s; then the highest token-load score wins:
 * 1 - min(1, (in-flight uncached + this request's uncached) / 4M). */
ngx_uint_t
ngx_llmd_pick_llm_d(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t nkeys)
{
    double             s, score, best_score, est, sticky, other;
    ngx_uint_t         k, c, best, nsticky;
    ngx_llmd_cand_t   *cd;
    ngx_llmd_peer_t   *sp;
    ngx_llmd_shctx_t  *sh;

    sh = lp->conf->sh;
    nsticky = 0;
    sticky = other = -1.0;

    for (c = 0; c < ncand; c++) {
        cd = &lp->cand[c];
        sp = cd->slot >= 0 ? &sh->peers[cd->slot] : NULL;
        s = nkeys ? (double) cd->match / nkeys : 0.0;
        est = sp ? sp->inflight_uncached / NGX_LLMD_LLM_D_PEAK_TPS * 1000.0
                 : 0.0;

        if (s >= NGX_LLMD_LLM_D_AFFINITY) {
            nsticky++;
            sticky = (sticky < 0 || est < sticky) ? est : sticky;
        } else {
            other = (other < 0 || est < other) ? est : other;
        }
    }

    if (nsticky && other >= 0 && sticky - other > NGX_LLMD_LLM_D_MAX_PENALTY) {
        nsticky = 0;        /* stickiness broken by the TTFT load gate */
    }

    best = start;
    best_score = -1.0;

    for (k = 0; k < ncand; k++) {
        c = (start + k) % ncand;
        cd = &lp->cand[c];

        if (nsticky && (nkeys == 0
                        || (double) cd->match / nkeys
                           < NGX_LLMD_LLM_D_AFFINITY))
        {
            continue;
        }

        sp = cd->slot >= 0 ? &sh->peers[cd->slot] : NULL;
        score = 1.0 - ngx_min(1.0, ((sp ? (double) sp->inflight_uncached : 0)
                                    + ngx_llmd_cand_uncached(lp, cd))
                                   / NGX_LLMD_LLM_D_QUEUE_TOKENS);

        if (score > best_score) {
            best_score = score;
            best = c;
        }
    }

    lp->ctx->reason = NGX_LLMD_PICK_LLM_D;
    return best;
}


/* Dynamo's KV router cost, overlap weight 1, temperature 0, lowest wins:
 * potential prefill blocks (the worker's queued prefill and this request's
 * uncached prompt) + potential active blocks (the worker's, and this
 * request's new ones).  Dynamo counts active blocks once however many
 * requests share them, so a shared prefix weighs once: the work in flight
 * (what each request added, uncached prompt + max_tokens) stands for them,
 * not the sum of every request's whole prompt. */
ngx_uint_t
ngx_llmd_pick_dynamo(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start)
{
    double             cost, best_cost, uncached, queued, active;
    ngx_uint_t         k, c, best;
    ngx_llmd_cand_t   *cd;
    ngx_llmd_peer_t   *sp;
    ngx_llmd_shctx_t  *sh;

    sh = lp->conf->sh;
    best = start;
    best_cost = -1.0;

    for (k = 0; k < ncand; k++) {
        c = (start + k) % ncand;
        cd = &lp->cand[c];
        sp = cd->slot >= 0 ? &sh->peers[cd->slot] : NULL;

        uncached = (double) ngx_llmd_cand_uncached(lp, cd);
        queued = sp ? (double) (sp->queued_prefill_tokens + sp->pending_tokens)
                    : 0.0;
        active = sp ? (double) (sp->inflight_work + sp->remote_work) : 0.0;

        cost = (queued + uncached) / NGX_LLMD_DYNAMO_BLOCK_TOKENS
               + (active + uncached) / NGX_LLMD_DYNAMO_BLOCK_TOKENS;

        if (best_cost < 0 || cost < best_cost) {
            best_cost = cost;
            best = c;
        }
    }

    lp->ctx->reason = NGX_LLMD_PICK_DYNAMO;
    return best;
}
