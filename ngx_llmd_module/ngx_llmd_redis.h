/*
 * Private to the Redis mirror files: the per-process client and the reply
 * handlers that apply what Redis holds.
 */

#ifndef NGX_LLMD_REDIS_H
#define NGX_LLMD_REDIS_H

#include "ngx_llmd.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


#define NGX_LLMD_REDIS_BACKOFF_MIN  100
#define NGX_LLMD_REDIS_BACKOFF_MAX  5000
#define NGX_LLMD_REDIS_FORGET       60000   /* HDEL heartbeats silent this long */
#define NGX_LLMD_RECORD_BUF         (64 * 1024)


typedef struct {
    ngx_llmd_srv_conf_t  *conf;
    redisAsyncContext    *state;
    redisAsyncContext    *stream;
    ngx_event_t           timer;
    ngx_msec_t            backoff;
    ngx_msec_t            retry_at;
    ngx_msec_t            sent_at;
    ngx_uint_t            pending;          /* state replies outstanding */
    ngx_uint_t            connected;        /* contexts connected (0..2) */
    unsigned              owner:1;
    unsigned              have_ids:1;       /* stream positions known */
    unsigned              stream_busy:1;
    unsigned              down_logged:1;
    uint64_t              seq;
    uint64_t              snap_synced[NGX_LLMD_MAX_PEERS / 64];
    ngx_uint_t            state_seen;       /* last logged redis_state */
    char                  gw_id[LLMD_WIRE_ID_MAX];
    ngx_log_t            *log;
} ngx_llmd_redis_t;


extern uint64_t  ngx_llmd_event_keys[LLMD_WIRE_MAX_KEYS];
extern char      ngx_llmd_record_buf[NGX_LLMD_RECORD_BUF];

void ngx_llmd_redis_close(ngx_llmd_redis_t *cl, const char *why);
void ngx_llmd_redis_read_streams(ngx_llmd_redis_t *cl);
void ngx_llmd_redis_reject(ngx_llmd_redis_t *cl, const char *what,
    llmd_wire_status_t st);
void ngx_llmd_redis_decode_event(ngx_llmd_redis_t *cl, redisReply *v,
    ngx_uint_t placement);
void ngx_llmd_redis_on_heartbeats(redisAsyncContext *ac, void *r,
    void *privdata);
void ngx_llmd_redis_on_gateways(redisAsyncContext *ac, void *r,
    void *privdata);
void ngx_llmd_redis_on_reply(redisAsyncContext *ac, void *r, void *privdata);
void ngx_llmd_redis_on_streams(redisAsyncContext *ac, void *r,
    void *privdata);
void ngx_llmd_redis_on_last_id(redisAsyncContext *ac, void *r,
    void *privdata);
void ngx_llmd_redis_on_snapshot(redisAsyncContext *ac, void *r,
    void *privdata);

#endif /* NGX_LLMD_REDIS_H */
