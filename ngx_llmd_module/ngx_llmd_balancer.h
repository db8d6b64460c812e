/*
 * Private to the balancer files: per-request peer data and candidates.
 */

#ifndef NGX_LLMD_BALANCER_H
#define NGX_LLMD_BALANCER_H

#include "ngx_llmd.h"


typedef struct {
    ngx_http_upstream_rr_peer_t   *peer;    /* NULL: a discovered peer */
    ngx_int_t                      slot;
    ngx_uint_t                     index;   /* in the rr list */
    ngx_uint_t                     weight;
    ngx_uint_t                     match;   /* leading blocks held */
    ngx_uint_t                     home;    /* held or placed there */
    double                         ttft;
    double                         itl;
    double                         correction;  /* in ttft: calibration */
    uint64_t                       uncached;
} ngx_llmd_cand_t;


typedef struct {
    /* the round-robin data must come first: rr callbacks receive it */
    ngx_http_upstream_rr_peer_data_t   rrp;

    ngx_http_request_t                *request;
    ngx_llmd_srv_conf_t               *conf;
    ngx_llmd_ctx_t                    *ctx;

    ngx_int_t                          slot;        /* of the current try */
    unsigned                           discovered:1;
    ngx_uint_t                         tokens;      /* this request's load */
    ngx_uint_t                         output;      /* max_tokens of tokens */
    uint64_t                           pending;     /* added to pending_tokens */
    uint64_t                           uncached;    /* added to inflight_uncached */
    uint64_t                           work;        /* added to inflight_work */
    double                             predicted;   /* of the current try */
    double                             correction;  /* calibration in it */

    ngx_http_upstream_rr_peers_t      *primary;
    ngx_llmd_cand_t                   *cand;        /* scratch of get() */
    ngx_int_t                         *slots;
    ngx_uint_t                        *match;
    ngx_uint_t                        *home;
    uint32_t                          *hints;       /* index entries found */
    ngx_uint_t                         ncand_max;
    uint64_t                           tried[NGX_LLMD_MAX_PEERS / 64];
} ngx_llmd_peer_data_t;


ngx_uint_t ngx_llmd_static_candidates(ngx_llmd_peer_data_t *lp,
    ngx_http_upstream_rr_peers_t *peers, ngx_uint_t backup, time_t now);
ngx_uint_t ngx_llmd_discovered_candidates(ngx_llmd_peer_data_t *lp,
    ngx_uint_t ncand, time_t now);
ngx_int_t ngx_llmd_pick_predicted(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t *best);
ngx_uint_t ngx_llmd_pick_scored(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t nkeys);
ngx_uint_t ngx_llmd_pick_llm_d(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start, ngx_uint_t nkeys);
ngx_uint_t ngx_llmd_pick_dynamo(ngx_llmd_peer_data_t *lp, ngx_uint_t ncand,
    ngx_uint_t start);

/* ngx_llmd_balancer.c: a request's candidate arrays, from its pool */
ngx_int_t ngx_llmd_scratch(ngx_llmd_peer_data_t *lp, ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf);

/* ngx_llmd_choose.c: the candidate one try takes, from one peer list */
ngx_int_t ngx_llmd_choose(ngx_llmd_peer_data_t *lp,
    ngx_http_upstream_rr_peers_t *peers, ngx_uint_t backup, time_t now,
    ngx_uint_t *best);

/* this request's prompt tokens that candidate cd does not hold */
static ngx_inline uint64_t
ngx_llmd_cand_uncached(ngx_llmd_peer_data_t *lp, ngx_llmd_cand_t *cd)
{
    return lp->ctx->inspected
           ? ngx_llmd_uncached_tokens(lp->conf, cd->slot,
                                      lp->ctx->req.prefix.total_bytes,
                                      cd->match)
           : 0;
}

#endif /* NGX_LLMD_BALANCER_H */
