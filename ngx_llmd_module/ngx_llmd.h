/*
 * ngx_llmd_module: an upstream balancer that routes OpenAI-style requests
 * by KV-prefix affinity and load.  Shared declarations of the module's
 * files: configuration, the shared-memory zone and the per-request context.
 */

#ifndef NGX_LLMD_H
#define NGX_LLMD_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "llmd_prefix.h"
#include "llmd_request.h"


#define NGX_LLMD_MAX_PEERS          256     /* peers remembered per zone */
#define NGX_LLMD_PEER_NAME_LEN      64
#define NGX_LLMD_KEY_PEERS          4       /* peers remembered per prefix key */
#define NGX_LLMD_NIL                0xffffffff
#define NGX_LLMD_ZONE_DEFAULT_SIZE  (4 * 1024 * 1024)
#define NGX_LLMD_ZONE_MIN_SIZE      (256 * 1024)
#define NGX_LLMD_BYTES_PER_TOKEN    4       /* rough, for load estimates */
#define NGX_LLMD_WEIGHT_SCALE       1000    /* weights are fixed point */


/* One replica's shared state, found by name so it survives reloads. */
typedef struct {
    u_char              name[NGX_LLMD_PEER_NAME_LEN];
    size_t              name_len;
    ngx_atomic_t        inflight;           /* requests picked, not freed */
    ngx_atomic_t        inflight_tokens;    /* prompt + max_tokens of those */
    ngx_atomic_t        picks;
    ngx_atomic_t        affinity_picks;
    ngx_atomic_t        balance_picks;
    ngx_atomic_t        failures;
    ngx_atomic_t        header_time_ewma;   /* µs to response header */
} ngx_llmd_peer_t;


/* Prefix index entry: key -> the peers that most recently received it. */
typedef struct {
    uint64_t            key;
    uint32_t            next;               /* hash bucket chain */
    uint32_t            lru_prev;
    uint32_t            lru_next;
    uint16_t            peers[NGX_LLMD_KEY_PEERS];  /* slot + 1, newest first */
} ngx_llmd_entry_t;


typedef struct {
    ngx_atomic_t        cursor;             /* rotates tie breaks */
    ngx_uint_t          npeers;
    ngx_llmd_peer_t     peers[NGX_LLMD_MAX_PEERS];

    uint32_t            nbuckets;           /* power of two */
    uint32_t            capacity;
    uint32_t            used;
    uint32_t            free_head;
    uint32_t            lru_head;           /* most recently used */
    uint32_t            lru_tail;
    ngx_atomic_t        evictions;
    uint32_t           *buckets;
    ngx_llmd_entry_t   *entries;
} ngx_llmd_shctx_t;


/* upstream{} configuration */
typedef struct {
    ngx_flag_t          enabled;
    ngx_shm_zone_t     *shm_zone;
    ngx_llmd_shctx_t   *sh;
    ngx_slab_pool_t    *shpool;

    size_t              block_size;
    ngx_uint_t          max_blocks;
    ngx_int_t           prefix_weight;      /* x NGX_LLMD_WEIGHT_SCALE */
    ngx_int_t           load_weight;
    ngx_uint_t          balance_abs;
    ngx_int_t           balance_rel;        /* x NGX_LLMD_WEIGHT_SCALE */
    ngx_uint_t          default_max_tokens;

    /* rr peer index -> zone slot, resolved lazily in each worker */
    ngx_int_t          *slots[2];           /* primary, backup */
    ngx_uint_t          nslots[2];
} ngx_llmd_srv_conf_t;


/* location configuration */
typedef struct {
    ngx_flag_t          inspect;            /* unset: auto (proxy_pass to llmd) */
    ngx_flag_t          debug_headers;
    ngx_flag_t          json_errors;
} ngx_llmd_loc_conf_t;


/* per request */
typedef struct {
    ngx_int_t           status;             /* precontent phase result */
    llmd_request_t      req;
    size_t              block_size;
    unsigned            inspected:1;
    unsigned            error_sent:1;

    /* what the balancer decided, for variables and debug headers */
    ngx_str_t           peer;
    ngx_uint_t          matched;
    const char         *reason;
    ngx_uint_t          tries;

    /* an OpenAI-style error body replacing nginx's HTML page */
    ngx_str_t           error;
    const char         *error_param;
    ngx_buf_t          *error_body;
} ngx_llmd_ctx_t;


extern ngx_module_t  ngx_llmd_module;

/* ngx_llmd_balancer.c */
ngx_int_t ngx_llmd_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);

/* ngx_llmd_zone.c */
ngx_int_t ngx_llmd_init_zone(ngx_shm_zone_t *shm_zone, void *data);
ngx_int_t ngx_llmd_zone_peer_slot(ngx_llmd_srv_conf_t *conf, ngx_str_t *name);
void ngx_llmd_zone_match(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t *slots, ngx_uint_t nslots,
    ngx_uint_t *match);
void ngx_llmd_zone_record(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t slot);

/* ngx_llmd_inspect.c */
ngx_int_t ngx_llmd_precontent_handler(ngx_http_request_t *r);
ngx_llmd_ctx_t *ngx_llmd_inspect_body(ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf);
ngx_llmd_srv_conf_t *ngx_llmd_location_upstream(ngx_http_request_t *r);
ngx_int_t ngx_llmd_location_enabled(ngx_http_request_t *r);

/* ngx_llmd_filter.c */
ngx_int_t ngx_llmd_filter_init(ngx_conf_t *cf);

#endif /* NGX_LLMD_H */
