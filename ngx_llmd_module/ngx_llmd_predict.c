/*
 * Latency prediction from the workers' own measurements (heartbeats), and
 * its online calibration against what this gateway observes.
 *
 *   predicted TTFT = wait for a batch slot
 *                  + (queued prefill tokens + tokens picked for it since
 *                     that heartbeat, or the unanswered prefill this
 *                     gateway sent it if more, + this request's uncached)
 *                    / measured prefill tokens per second
 *                  + one step with the batch it joins + calibration
 *   predicted ITL  = decode step base + per-sequence cost x batch it joins
 *
 * A worker with every batch slot taken admits a request only when one of
 * its sequences ends.  Sequences last the worker's mean answer length in
 * steps, so slots free at max_batch per (mean answer x step time), and the
 * k-th request past the last free slot waits k times the inverse of that.
 * Without this term a saturated worker with a short prefill queue looks as
 * fast as an idle one.
 *
 * Calibration corrects what the workers' figures leave out (network,
 * tokenization, queueing the worker does not count).  Most of that is
 * common to the fleet, so it is learned from every observation: the fleet
 * residual, an EWMA of (observed - figures).  Each peer also keeps its own,
 * and how far its samples scatter around it; only the part of its
 * difference from the fleet's beyond that scatter counts.  Identical
 * workers with noisy answers then get identical
 * corrections: otherwise noise alone made one look slower by more than
 * the tie band, it received no requests, so no observation corrected it,
 * and it sat half idle while the others queued (uniform traffic at
 * saturation, bench/results/uniform).  A worker that is consistently
 * slower by more than the noise is still corrected.
 */

#include "ngx_llmd.h"


#define NGX_LLMD_EWMA_ALPHA     0.2
#define NGX_LLMD_RESIDUAL_ALPHA 0.05    /* slow: a bias, not the last error */
#define NGX_LLMD_FLEET_ALPHA    0.02    /* sees every peer's samples */
#define NGX_LLMD_RESIDUAL_MAX   60000.0     /* ms */

/* a peer's own correction counts from its 8th sample, its scatter is
 * pooled with the fleet's as if the fleet's were 8 more samples, and it
 * fades to nothing over 16 fleet samples per peer without one of its own */
#define NGX_LLMD_OWN_MIN_SAMPLES    8
#define NGX_LLMD_OWN_PRIOR_SAMPLES  8.0
#define NGX_LLMD_OWN_FADE_PER_PEER  16


ngx_uint_t
ngx_llmd_predict_ready(ngx_llmd_srv_conf_t *conf, ngx_int_t slot)
{
    ngx_llmd_peer_t  *p;

    if (slot < 0 || !ngx_llmd_redis_fresh(conf)) {
        return 0;
    }

    p = &conf->sh->peers[slot];

    return p->hb_seen && p->alive && p->prefill_tps > 0.0;
}


double
ngx_llmd_predict_correction(ngx_llmd_srv_conf_t *conf, ngx_int_t slot)
{
    double              fleet, own, band, n, fade;
    ngx_atomic_uint_t   since, window;
    ngx_llmd_peer_t    *p;
    ngx_llmd_shctx_t   *sh;

    sh = conf->sh;
    p = &sh->peers[slot];

    fleet = sh->ttft_samples ? sh->ttft_residual_ms : 0.0;

    if (p->ttft_samples < NGX_LLMD_OWN_MIN_SAMPLES) {
        return fleet;               /* too few to tell a bias from noise */
    }

    /* a correction is only as recent as its last sample: one that keeps
     * the peer from being picked would otherwise never be revised, and a
     * worker that recovered would stay idle */
    since = sh->ttft_samples - p->ttft_last;
    window = NGX_LLMD_OWN_FADE_PER_PEER * ngx_max(sh->npeers, 1);

    if (since >= window) {
        return fleet;
    }

    fade = 1.0 - (double) since / (double) window;

    n = (double) p->ttft_samples;
    band = (n * p->ttft_spread_ms
            + NGX_LLMD_OWN_PRIOR_SAMPLES * sh->ttft_spread_ms)
           / (n + NGX_LLMD_OWN_PRIOR_SAMPLES);

    own = p->ttft_residual_ms - fleet;

    if (own > band) {
        return fleet + (own - band) * fade;
    }

    if (own < -band) {
        return fleet + (own + band) * fade;
    }

    return fleet;
}


/*
 * The prompt tokens a peer does not hold yet: the prompt less its matched
 * blocks, in the peer's own tokens (its heartbeat's bytes per token: its
 * queue and prefill rate are counted in those), or NGX_LLMD_BYTES_PER_TOKEN
 * where it has not said (slot < 0, or no heartbeat yet).  Pick, P/D and the
 * prediction all count uncached work with this.
 */
uint64_t
ngx_llmd_uncached_tokens(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    uint64_t prompt_bytes, ngx_uint_t matched_blocks)
{
    double    bpt;
    uint64_t  prompt, cached;

    bpt = slot >= 0 ? conf->sh->peers[slot].bytes_per_token : 0.0;

    if (bpt < 0.1) {
        bpt = (double) NGX_LLMD_BYTES_PER_TOKEN;
    }

    prompt = (uint64_t) ((double) prompt_bytes / bpt);
    cached = (uint64_t) ((double) matched_blocks * conf->block_size / bpt);

    return prompt > cached ? prompt - cached : 0;
}


void
ngx_llmd_predict(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    uint64_t prompt_bytes, ngx_uint_t matched_blocks, double *ttft,
    double *itl, uint64_t *uncached, double *correction)
{
    double            t, r, batch, seqs, over, step, wait;
    uint64_t          u, ahead;
    ngx_llmd_peer_t  *p;

    p = &conf->sh->peers[slot];

    /* at least the token that is computed even on a full hit */
    u = ngx_llmd_uncached_tokens(conf, slot, prompt_bytes, matched_blocks);
    u = u ? u : 1;

    /* the sequences it would join: what the worker reported, or what we
     * know we (and the other gateways) sent it since, whichever is larger */
    seqs = (double) ngx_max(p->running + p->waiting,
                            p->inflight + p->remote_inflight)
           + 1.0;
    batch = p->max_batch ? ngx_min(seqs, (double) p->max_batch) : seqs;

    *itl = p->decode_ms_base + p->decode_ms_per_seq * batch;

    wait = 0.0;
    over = p->max_batch ? seqs - (double) p->max_batch : 0.0;

    if (over > 0.0) {
        step = p->decode_ms_base + p->decode_ms_per_seq * p->max_batch;
        wait = over * (p->mean_output > 0.0 ? p->mean_output
                                            : (double) conf->default_max_tokens)
               * step / (double) p->max_batch;
    }

    /* the prefill ahead of it: the worker's queue at its last heartbeat
     * and what was picked for it since, or, when more, what this gateway
     * sent it that it has not answered (a heartbeat can come before the
     * worker has read a request, and forget it) */
    ahead = ngx_max((uint64_t) (p->queued_prefill_tokens + p->pending_tokens),
                    (uint64_t) p->prefilling);

    /* the slot, the prefill work ahead of it and its own, then the step
     * that emits the first token, shared with that batch */
    t = wait + (double) (ahead + u) / p->prefill_tps * 1000.0 + *itl;

    /* the calibration corrects a bias, it must not become the prediction:
     * a few slow requests would otherwise make a peer look slow for good */
    r = ngx_llmd_predict_correction(conf, slot);
    r = r > t / 2 ? t / 2 : (r < -t / 2 ? -t / 2 : r);
    t += r;

    *ttft = t > 0.0 ? t : 0.0;
    *uncached = u;
    *correction = *ttft - (t - r);
}


/* an EWMA that is the plain mean of its first 1/alpha samples, so that
 * its first sample does not weigh for the next twenty */
static double
ngx_llmd_ewma(double v, double alpha, ngx_atomic_uint_t n, double sample)
{
    double  a;

    a = (double) 1 / (double) (n + 1);
    a = a > alpha ? a : alpha;

    v += a * (sample - v);

    return v > NGX_LLMD_RESIDUAL_MAX ? NGX_LLMD_RESIDUAL_MAX
           : (v < -NGX_LLMD_RESIDUAL_MAX ? -NGX_LLMD_RESIDUAL_MAX : v);
}


/* one sample into a residual and its scatter around it; a first sample's
 * scatter is measured against first_ref */
static void
ngx_llmd_residual_add(double *residual, double *spread, double alpha,
    ngx_atomic_uint_t n, double err, double first_ref)
{
    double  dev;

    dev = err - (n ? *residual : first_ref);
    dev = dev < 0 ? -dev : dev;

    *spread = ngx_llmd_ewma(*spread, NGX_LLMD_EWMA_ALPHA, n, dev);
    *residual = ngx_llmd_ewma(*residual, alpha, n, err);
}


void
ngx_llmd_predict_observe(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    double predicted, double correction, double observed)
{
    double              err, miss;
    ngx_atomic_uint_t   n;
    ngx_llmd_peer_t    *p;
    ngx_llmd_shctx_t   *sh;

    sh = conf->sh;
    p = &sh->peers[slot];

    /* against the workers' figures alone: what calibration must add */
    err = observed - (predicted - correction);
    miss = observed - predicted;
    miss = miss < 0 ? -miss : miss;

    /* written by whichever worker frees the request; a lost update costs
     * one sample, nothing more */
    n = ngx_atomic_fetch_add(&p->ttft_samples, 1);

    /* a peer's first sample scatters from the fleet's residual, so one
     * sample alone is never trusted */
    ngx_llmd_residual_add(&p->ttft_residual_ms, &p->ttft_spread_ms,
                          NGX_LLMD_RESIDUAL_ALPHA, n, err,
                          sh->ttft_samples ? sh->ttft_residual_ms : err);
    p->prediction_error_ms = ngx_llmd_ewma(p->prediction_error_ms,
                                           NGX_LLMD_EWMA_ALPHA, n, miss);

    n = ngx_atomic_fetch_add(&sh->ttft_samples, 1);

    ngx_llmd_residual_add(&sh->ttft_residual_ms, &sh->ttft_spread_ms,
                          NGX_LLMD_FLEET_ALPHA, n, err, err);
    p->ttft_last = n + 1;
}


void
ngx_llmd_observe_ttft(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    double observed)
{
    ngx_llmd_peer_t  *p;

    p = &conf->sh->peers[slot];

    p->observed_ttft_ms = p->observed_ttft_ms == 0.0
                          ? observed
                          : p->observed_ttft_ms
                            + NGX_LLMD_EWMA_ALPHA
                              * (observed - p->observed_ttft_ms);
}
