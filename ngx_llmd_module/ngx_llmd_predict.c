/*
 * Latency prediction from the workers' own measurements (heartbeats), and
 * its online calibration against what this gateway observes.
 *
 *   predicted TTFT = wait for a batch slot
 *                  + (queued prefill tokens + tokens picked for it since
 *                     that heartbeat + this request's uncached tokens)
 *                    / measured prefill tokens per second
 *                  + one step with the batch it joins + calibration residual
 *   predicted ITL  = decode step base + per-sequence cost x batch it joins
 *
 * A worker with every batch slot taken admits a request only when one of
 * its sequences ends.  Sequences last the worker's mean answer length in
 * steps, so slots free at max_batch per (mean answer x step time), and the
 * k-th request past the last free slot waits k times the inverse of that.
 * Without this term a saturated worker with a short prefill queue looks as
 * fast as an idle one.
 *
 * The residual is an EWMA of (observed - predicted), so a worker whose
 * TTFT runs consistently above its own figures (network, tokenization,
 * queueing the worker does not count) is corrected within a few requests
 * with constant memory.
 */

#include "ngx_llmd.h"


#define NGX_LLMD_EWMA_ALPHA     0.2
#define NGX_LLMD_RESIDUAL_ALPHA 0.05    /* slow: a bias, not the last error */
#define NGX_LLMD_RESIDUAL_MAX   60000.0     /* ms */


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


void
ngx_llmd_predict(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    uint64_t prompt_bytes, ngx_uint_t matched_blocks, double *ttft,
    double *itl, uint64_t *uncached)
{
    double            t, r, batch, seqs, over, step, wait, bpt;
    uint64_t          prompt, cached, u;
    ngx_llmd_peer_t  *p;

    p = &conf->sh->peers[slot];

    /* tokens as the worker's own tokenizer counts them: its queue and
     * prefill rate are in those */
    bpt = p->bytes_per_token >= 0.1 ? p->bytes_per_token
                                    : (double) NGX_LLMD_BYTES_PER_TOKEN;

    prompt = (uint64_t) ((double) prompt_bytes / bpt);
    cached = (uint64_t) ((double) matched_blocks * conf->block_size / bpt);
    u = prompt > cached ? prompt - cached : 1;

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

    /* the slot, the prefill work ahead of it and its own, then the step
     * that emits the first token, shared with that batch */
    t = wait
        + (double) (p->queued_prefill_tokens + p->pending_tokens + u)
          / p->prefill_tps * 1000.0
        + *itl;

    /* the calibration corrects a bias, it must not become the prediction:
     * a few slow requests would otherwise make a peer look slow for good */
    r = p->ttft_residual_ms;
    r = r > t / 2 ? t / 2 : (r < -t / 2 ? -t / 2 : r);
    t += r;

    *ttft = t > 0.0 ? t : 0.0;
    *uncached = u;
}


void
ngx_llmd_predict_observe(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    double predicted, double observed)
{
    double            err, r;
    ngx_llmd_peer_t  *p;

    p = &conf->sh->peers[slot];

    err = observed - predicted;

    /* written by whichever worker frees the request; a lost update costs
     * one sample, nothing more */
    r = p->ttft_residual_ms + NGX_LLMD_RESIDUAL_ALPHA * err;
    if (r > NGX_LLMD_RESIDUAL_MAX) {
        r = NGX_LLMD_RESIDUAL_MAX;
    } else if (r < -NGX_LLMD_RESIDUAL_MAX) {
        r = -NGX_LLMD_RESIDUAL_MAX;
    }
    p->ttft_residual_ms = r;

    p->prediction_error_ms = p->prediction_error_ms
                             + NGX_LLMD_EWMA_ALPHA
                               * ((err < 0 ? -err : err)
                                  - p->prediction_error_ms);
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
