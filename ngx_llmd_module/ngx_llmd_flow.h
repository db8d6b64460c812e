/*
 * Private to the flow-control files: the queue's operations
 * (ngx_llmd_queue.c) and the per-process waiter (ngx_llmd_flow.c).
 */

#ifndef NGX_LLMD_FLOW_H
#define NGX_LLMD_FLOW_H

#include "ngx_llmd.h"


#define NGX_LLMD_FLOW_UNBOUNDED     NGX_MAX_UINT32_VALUE


/* A queued request in the nginx worker process that holds it. */
typedef struct {
    ngx_queue_t             queue;      /* in the process's waiters */
    ngx_http_request_t     *request;
    ngx_llmd_srv_conf_t    *conf;
    ngx_llmd_ctx_t         *ctx;
    ngx_uint_t              index;      /* in sh->queue */
    uint64_t                seq;
    ngx_msec_t              start;
} ngx_llmd_waiter_t;


/* ngx_llmd_queue.c, with the zone locked */
ngx_uint_t ngx_llmd_flow_room(ngx_llmd_srv_conf_t *conf, uint64_t model);
ngx_uint_t ngx_llmd_flow_fits(ngx_llmd_srv_conf_t *conf, ngx_uint_t room,
    ngx_int_t priority);
void ngx_llmd_flow_count(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx,
    ngx_uint_t outcome);
ngx_uint_t ngx_llmd_flow_id(ngx_llmd_shctx_t *sh, ngx_str_t *name);
void ngx_llmd_flow_release(ngx_llmd_shctx_t *sh, ngx_uint_t i);
void ngx_llmd_flow_grant(ngx_llmd_shctx_t *sh, uint64_t model,
    ngx_uint_t entry);
void ngx_llmd_flow_ungrant(ngx_llmd_shctx_t *sh, uint64_t model,
    ngx_uint_t entry);
void ngx_llmd_flow_leaks(ngx_llmd_shctx_t *sh);
void ngx_llmd_flow_orphans(ngx_llmd_shctx_t *sh);
void ngx_llmd_flow_dispatch(ngx_llmd_srv_conf_t *conf);
ngx_int_t ngx_llmd_flow_slot(ngx_llmd_srv_conf_t *conf, ngx_int_t priority);
ngx_uint_t ngx_llmd_flow_ahead(ngx_llmd_shctx_t *sh, ngx_int_t priority,
    uint64_t model);

/* ngx_llmd_flow.c */
void ngx_llmd_flow_post(void);

#endif /* NGX_LLMD_FLOW_H */
