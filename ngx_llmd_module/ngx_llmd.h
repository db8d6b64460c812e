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
#include "llmd_wire.h"


#define NGX_LLMD_MAX_PEERS          256     /* peers remembered per zone */
#define NGX_LLMD_PEER_NAME_LEN      64
#define NGX_LLMD_KEY_PEERS          8       /* peers remembered per prefix key */
#define NGX_LLMD_KEY_HELD           0x8000  /* in peers[]: the worker said so */
#define NGX_LLMD_KEY_ID             0x7fff  /* in peers[]: slot + 1 */
#define NGX_LLMD_NIL                0xffffffff
#define NGX_LLMD_ZONE_DEFAULT_SIZE  (4 * 1024 * 1024)
#define NGX_LLMD_ZONE_MIN_SIZE      (256 * 1024)
#define NGX_LLMD_BYTES_PER_TOKEN    4       /* rough, for load estimates */
#define NGX_LLMD_WEIGHT_SCALE       1000    /* weights are fixed point */
#define NGX_LLMD_ZONE_MAGIC         0x6c6c6d6409    /* layout version */
#define NGX_LLMD_PLACEMENTS         8192    /* ring of picks to share */
#define NGX_LLMD_STALENESS_BUCKETS  8
#define NGX_LLMD_PLACEHOLDER        "llmd-discovered-peers"
#define NGX_LLMD_QUEUE_MAX          1024    /* requests waiting, per zone */
#define NGX_LLMD_FLOWS              128     /* fairness ids remembered */
#define NGX_LLMD_FLOW_NAME_LEN      48
#define NGX_LLMD_BANDS              16      /* priorities with counters */
#define NGX_LLMD_GRANT_MODELS       16      /* models with grant counters */
#define NGX_LLMD_WAIT_BUCKETS       11      /* wait-time histogram */

typedef enum {
    NGX_LLMD_POLICY_LLMD = 0,
    NGX_LLMD_POLICY_LLM_D,      /* llm-d: affinity filter 0.8 + token load */
    NGX_LLMD_POLICY_DYNAMO      /* Dynamo: prefill_blocks + decode_blocks */
} ngx_llmd_policy_e;

/* why the balancer picked its peer ($llmd_pick_reason, X-LLMD-Pick) */
typedef enum {
    NGX_LLMD_PICK_NONE = 0,     /* no pick yet */
    NGX_LLMD_PICK_AFFINITY,     /* the longest cached prefix */
    NGX_LLMD_PICK_HOME,         /* where the prefix was placed before */
    NGX_LLMD_PICK_BALANCE,      /* load overrode affinity */
    NGX_LLMD_PICK_LOAD,         /* nothing cached anywhere: least work */
    NGX_LLMD_PICK_PREDICTED,    /* lowest predicted TTFT within the SLO */
    NGX_LLMD_PICK_SLO_MISS,     /* lowest predicted TTFT, none within it */
    NGX_LLMD_PICK_LLM_D,        /* llmd_policy llm-d */
    NGX_LLMD_PICK_DYNAMO,       /* llmd_policy dynamo */
    NGX_LLMD_PICK_NREASONS
} ngx_llmd_pick_reason_e;

/* outcomes of the prefill/decode decision (llmd_pd) */
typedef enum {
    NGX_LLMD_PD_REMOTE = 0,     /* a prefill worker prefills, over threshold */
    NGX_LLMD_PD_NO_PREFILL,     /* local: no live prefill worker */
    NGX_LLMD_PD_UNDER,          /* local: uncached prompt under threshold */
    NGX_LLMD_PD_QUEUE_FULL,     /* local: every prefill backlog over max_queue */
    NGX_LLMD_PD_NREASONS
} ngx_llmd_pd_reason_e;

/* what admission control did with a request ($llmd_admission) */
typedef enum {
    NGX_LLMD_ADMIT_NONE = 0,    /* not subject to it */
    NGX_LLMD_ADMIT_DIRECT,      /* room at once */
    NGX_LLMD_ADMIT_QUEUED,      /* waited at the gateway, then sent */
    NGX_LLMD_ADMIT_SHED,        /* sheddable, arrived at saturation: 429 */
    NGX_LLMD_ADMIT_REJECTED,    /* its band's queue was full: 429 */
    NGX_LLMD_ADMIT_DISPLACED,   /* pushed out by a higher priority: 429 */
    NGX_LLMD_ADMIT_TIMEOUT,     /* waited past the maximum: 503 */
    NGX_LLMD_ADMIT_CANCELLED,   /* the client left while it waited */
    NGX_LLMD_ADMIT_NOUTCOMES
} ngx_llmd_admission_e;

typedef enum {
    NGX_LLMD_REDIS_OFF = 0,     /* no llmd_redis */
    NGX_LLMD_REDIS_WAITING,     /* never connected yet */
    NGX_LLMD_REDIS_FRESH,
    NGX_LLMD_REDIS_STALE        /* unreachable past llmd_redis stale= */
} ngx_llmd_redis_state_e;


/* One replica's shared state, found by name so it survives reloads. */
typedef struct {
    u_char              name[NGX_LLMD_PEER_NAME_LEN];
    size_t              name_len;
    ngx_atomic_t        inflight;           /* requests picked, not freed */
    ngx_atomic_t        inflight_tokens;    /* prompt + max_tokens of those */
    ngx_atomic_t        inflight_uncached;  /* their prompt tokens not cached */
    ngx_atomic_t        inflight_work;      /* uncached + max_tokens of those */
    ngx_atomic_t        prefilling;         /* inflight_uncached of those not
                                               answered yet: prefill ahead */
    ngx_atomic_t        picks;
    ngx_atomic_t        affinity_picks;
    ngx_atomic_t        balance_picks;
    ngx_atomic_t        home_picks;
    ngx_atomic_t        predicted_picks;
    ngx_atomic_t        failures;
    ngx_atomic_t        header_time_ewma;   /* µs to response header */
    ngx_atomic_t        prefix_hit_blocks;  /* matched blocks of its picks */
    ngx_atomic_t        prefix_blocks;      /* all blocks of its picks */

    /* learnt from Redis */
    unsigned            dynamic:1;          /* discovered, not a server line */
    unsigned            alive:1;            /* heartbeat seen within its TTL */
    unsigned            events:1;           /* publishes cache events */
    unsigned            role:2;
    u_char              sockaddr[NGX_SOCKADDRLEN];
    socklen_t           socklen;
    u_char              worker_id[LLMD_WIRE_ID_MAX];
    uint64_t            hb_seq;
    ngx_msec_t          hb_seen;            /* when hb_seq last moved */
    ngx_msec_t          ttl;
    ngx_uint_t          running;
    ngx_uint_t          waiting;
    ngx_uint_t          max_batch;          /* 0: not reported */
    double              mean_output;        /* tokens per request answered */
    uint64_t            queued_prefill_tokens;
    uint64_t            pending_tokens;     /* picked since that heartbeat */
    ngx_uint_t          kv_used;
    ngx_uint_t          kv_total;
    double              prefill_tps;
    double              decode_ms_base;
    double              decode_ms_per_seq;
    double              worker_ttft_ms;
    double              bytes_per_token;    /* the worker's tokenizer */
    ngx_atomic_t        remote_inflight;    /* other gateways' requests */
    ngx_atomic_t        remote_tokens;
    ngx_atomic_t        remote_work;

    /* a prefill-role worker's KV transfer listener, validated like addr */
    u_char              kv_addr[LLMD_WIRE_ADDR_MAX];
    size_t              kv_addr_len;
    ngx_atomic_t        pd_assigned;        /* prefills this gateway sent it */
    ngx_atomic_t        pd_inflight_tokens; /* their tokens, until answered */

    /* failures of discovered peers (server lines use the rr peer's) */
    ngx_uint_t          dyn_fails;
    time_t              dyn_checked;

    /* latency prediction, calibrated against what this gateway observes */
    double              ttft_residual_ms;   /* EWMA of observed - figures */
    double              ttft_spread_ms;     /* EWMA of |that - residual| */
    ngx_atomic_t        ttft_samples;
    ngx_atomic_t        ttft_last;          /* fleet's samples at its last */
    double              observed_ttft_ms;   /* EWMA */
    double              prediction_error_ms;    /* EWMA of |error| */
    double              predicted_ttft_ms;  /* last prediction */

    /* the model it serves: its heartbeat's, else its llmd_model line's;
     * the name is written only when it changes, length last */
    uint64_t            model_hash;         /* 0: not known, serves any */
    ngx_uint_t          model_from_hb;
    size_t              model_len;
    u_char              model[LLMD_WIRE_MODEL_MAX];
} ngx_llmd_peer_t;


/* A request waiting at the gateway (flow control, ngx_llmd_flow.c). */
typedef enum {
    NGX_LLMD_Q_FREE = 0,
    NGX_LLMD_Q_WAITING,
    NGX_LLMD_Q_GRANTED,         /* may go; its owner has not seen it yet */
    NGX_LLMD_Q_DISPLACED        /* must leave with a 429 */
} ngx_llmd_qstate_e;

typedef struct {
    ngx_uint_t          state;              /* ngx_llmd_qstate_e */
    ngx_int_t           priority;
    uint64_t            model;              /* hash, 0: any */
    uint64_t            seq;                /* arrival order, zone-wide */
    ngx_uint_t          flow;               /* index in flows[] */
    ngx_pid_t           pid;                /* the nginx worker holding it */
    ngx_msec_t          deadline;
} ngx_llmd_qentry_t;

/* A fairness id: its place in start-time fair queueing within a band. */
typedef struct {
    uint64_t            id;                 /* hash of the name, 0: free */
    uint64_t            vtime;              /* start tag of its next request */
    ngx_uint_t          waiting;
    ngx_atomic_t        admitted;
    ngx_atomic_t        shed;               /* all 429s and 503s */
    size_t              name_len;
    u_char              name[NGX_LLMD_FLOW_NAME_LEN];
} ngx_llmd_flow_t;

/* Counters of one priority value. */
typedef struct {
    ngx_int_t           priority;
    ngx_uint_t          used;
    ngx_atomic_t        outcomes[NGX_LLMD_ADMIT_NOUTCOMES];
    ngx_atomic_t        wait_le[NGX_LLMD_WAIT_BUCKETS + 1]; /* queued only;
                                                   the last: longer */
    ngx_atomic_t        wait_sum_ms;
} ngx_llmd_band_t;


/*
 * Prefix index entry: key -> the peers that most recently received it.
 * A peer is slot + 1, with NGX_LLMD_KEY_HELD set while its worker's cache
 * events say it holds the key (STORED).  Without that flag the entry is a
 * placement: a gateway sent the prefix there.  For a worker that publishes
 * no events that is all there is to know; for one that does, an evicted
 * prefix (REMOVED, CLEARED) keeps its placement, the prefix's "home".
 */
typedef struct {
    uint64_t            key;
    uint32_t            next;               /* hash bucket chain */
    uint32_t            lru_prev;
    uint32_t            lru_next;
    uint16_t            peers[NGX_LLMD_KEY_PEERS];  /* newest first */
    uint32_t            touched;            /* record clock when last moved */
} ngx_llmd_entry_t;


typedef struct {
    uint64_t            key;
    uint32_t            slot;
} ngx_llmd_placement_t;


/* Room let go for one model and not yet in a peer's in-flight figure. */
typedef struct {
    uint64_t            model;              /* slot 0: any model */
    ngx_uint_t          entries;            /* GRANTED queue entries */
    ngx_uint_t          held;               /* requests on their way to a
                                               pick (ctx->flow_reserved) */
    ngx_uint_t          held_min;           /* the least since window */
    ngx_msec_t          window;
} ngx_llmd_grant_t;


typedef struct {
    uint64_t            magic;
    ngx_atomic_t        cursor;             /* rotates tie breaks */
    ngx_uint_t          npeers;
    ngx_llmd_peer_t     peers[NGX_LLMD_MAX_PEERS];

    /* Redis mirror: one nginx worker process owns the connection */
    ngx_atomic_t        owner_pid;
    ngx_atomic_t        owner_beat;         /* ngx_current_msec */
    ngx_uint_t          redis_state;        /* ngx_llmd_redis_state_e */
    ngx_msec_t          redis_ok;           /* last complete poll */
    char                events_id[48];      /* stream positions */
    char                placements_id[48];
    ngx_atomic_t        polls;
    ngx_atomic_t        heartbeats;
    ngx_atomic_t        events_applied;
    ngx_atomic_t        records_rejected;
    ngx_atomic_t        redis_errors;
    ngx_atomic_t        staleness[NGX_LLMD_STALENESS_BUCKETS];
    ngx_atomic_t        staleness_sum_ms;
    ngx_atomic_t        remote_gateways;

    /* latency calibration shared by the fleet: EWMA of observed - the
     * workers' own figures over every peer (see ngx_llmd_predict.c) */
    double              ttft_residual_ms;
    double              ttft_spread_ms;
    ngx_atomic_t        ttft_samples;

    /* disaggregated prefill/decode (llmd_pd) */
    uint64_t            transfer_base;      /* random, per zone */
    ngx_atomic_t        transfer_seq;
    ngx_atomic_t        pd_cursor;          /* its own: the decode pick
                                               turns the other */
    ngx_atomic_t        pd_decisions[NGX_LLMD_PD_NREASONS];

    /* the one model every known peer serves (0: none or several): the
     * model of a request that names none */
    uint64_t            default_model;

    /* flow control, under shpool's mutex (ngx_llmd_flow.c) */
    ngx_uint_t          queued;             /* entries waiting */
    ngx_uint_t          granted;            /* let go, not yet picked */
    ngx_llmd_grant_t    grants[NGX_LLMD_GRANT_MODELS];
    uint64_t            queue_seq;
    uint64_t            vclock;             /* start tag last dispatched */
    ngx_uint_t          saturated;          /* last finding, for status */
    ngx_uint_t          stale_limits;       /* fell back: logged once */
    ngx_llmd_qentry_t   queue[NGX_LLMD_QUEUE_MAX];
    ngx_llmd_flow_t     flows[NGX_LLMD_FLOWS];
    ngx_llmd_band_t     bands[NGX_LLMD_BANDS];

    /* approximate placements not yet shared with other gateways */
    ngx_atomic_t        placements_head;
    ngx_atomic_t        placements_tail;
    ngx_llmd_placement_t  placements[NGX_LLMD_PLACEMENTS];

    uint32_t            nbuckets;           /* power of two */
    uint32_t            capacity;
    uint32_t            used;
    uint32_t            free_head;
    uint32_t            lru_head;           /* most recently used */
    uint32_t            lru_tail;
    uint32_t            clock;              /* +1 per record() */
    ngx_atomic_t        evictions;
    uint32_t           *buckets;
    ngx_llmd_entry_t   *entries;
} ngx_llmd_shctx_t;


typedef struct {
    ngx_str_t           host;               /* or the unix socket path */
    ngx_int_t           port;               /* 0: unix socket */
    ngx_str_t           user;
    ngx_str_t           password;
    ngx_str_t           prefix;
    ngx_str_t           pool;
    ngx_msec_t          interval;
    ngx_msec_t          stale;
    ngx_array_t        *allow;              /* ngx_cidr_t, for discovered peers */

    /* key names, NUL-terminated for hiredis */
    char               *hb_key;
    char               *events_key;
    char               *gw_key;
    char               *placements_key;
    char               *snap_prefix;
} ngx_llmd_redis_conf_t;


/* upstream{} configuration */
typedef struct {
    ngx_flag_t          enabled;
    ngx_http_upstream_srv_conf_t  *upstream;
    ngx_llmd_redis_conf_t         *redis;
    ngx_uint_t          policy;             /* ngx_llmd_policy_e */
    ngx_flag_t          predict;
    ngx_msec_t          stickiness;         /* see ngx_llmd_pick_predicted */
    ngx_msec_t          slo_ttft;           /* 0: none */
    ngx_msec_t          slo_itl;
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

    ngx_flag_t          pd;                 /* llmd_pd */
    ngx_uint_t          pd_threshold;       /* uncached prompt tokens */
    ngx_uint_t          pd_max_queue;       /* prefill backlog, tokens */

    /* llmd_model lines: the model of server lines without a heartbeat */
    ngx_array_t        *models;             /* ngx_llmd_model_conf_t */
    uint64_t            config_model;       /* the only one they name */

    /* flow control: llmd_queue and llmd_saturation */
    ngx_flag_t          flow;
    ngx_uint_t          queue_size;         /* per priority */
    ngx_msec_t          queue_timeout;
    ngx_flag_t          queue_displace;
    ngx_uint_t          queue_reserve;      /* room kept for priority > 0 */
    ngx_uint_t          sat_inflight;       /* 0: the heartbeat's max_batch */
    ngx_uint_t          sat_kv;             /* percent of KV blocks */
    void              **waiters;            /* this process's, by entry */
    ngx_uint_t          dispatched;         /* tick of the last dispatch */

    /* rr peer index -> zone slot, resolved lazily in each worker */
    ngx_int_t          *slots[2];           /* primary, backup */
    ngx_uint_t          nslots[2];
} ngx_llmd_srv_conf_t;


typedef struct {
    ngx_str_t           server;             /* as the server line writes it */
    ngx_str_t           model;
} ngx_llmd_model_conf_t;


/* location configuration */
typedef struct {
    ngx_flag_t          inspect;            /* unset: auto (proxy_pass to llmd) */
    ngx_flag_t          debug_headers;
    ngx_flag_t          json_errors;
    ngx_http_complex_value_t  *priority;    /* llmd_priority */
    ngx_http_complex_value_t  *fairness;    /* llmd_fairness */
} ngx_llmd_loc_conf_t;


/* The decode peer chosen before the balancer runs (see ngx_llmd_preview). */
typedef struct {
    ngx_http_upstream_rr_peer_t   *peer;    /* NULL: a discovered peer */
    ngx_int_t                      slot;
    ngx_uint_t                     match;
    ngx_llmd_pick_reason_e         reason;
    double                         ttft;
    double                         correction;
    uint64_t                       uncached;
    unsigned                       valid:1;  /* until the first get() */
    unsigned                       predicted:1;
} ngx_llmd_preview_t;


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
    ngx_llmd_pick_reason_e  reason;
    ngx_uint_t          tries;
    double              predicted_ttft_ms;
    double              observed_ttft_ms;
    unsigned            predicted:1;
    unsigned            observed:1;
    ngx_msec_int_t      decision_ns;        /* inspection + first pick */

    /* disaggregated prefill/decode: decided once, when $llmd_prefill_peer
     * or $llmd_transfer_id is first evaluated (proxy_set_header) */
    ngx_llmd_preview_t  preview;
    unsigned            pd_decided:1;
    unsigned            pd_remote:1;
    const char         *pd_reason;          /* NULL: no decision */
    ngx_str_t           pd_peer;            /* the prefill worker's kv_addr */
    ngx_str_t           transfer_id;
    ngx_llmd_srv_conf_t *pd_conf;
    ngx_int_t           pd_slot;            /* the prefill worker */
    uint64_t            pd_tokens;          /* in its pd_inflight_tokens */

    /* the decode peer's prefilling share of this request, until it answers */
    ngx_llmd_srv_conf_t *prefill_conf;
    ngx_int_t           prefill_slot;
    uint64_t            prefill_tokens;

    /* the model it asks for (or the fleet's only one), as zone hash; its
     * prefix keys are salted with it, so models never share an entry */
    uint64_t            model_hash;
    unsigned            model_resolved:1;

    /* flow control */
    unsigned            flow_classified:1;  /* priority, fairness known */
    unsigned            flow_done:1;        /* admission decided */
    ngx_int_t           priority;
    ngx_str_t           fairness;
    ngx_uint_t          admission;          /* ngx_llmd_admission_e */
    ngx_msec_t          queue_ms;
    void               *waiter;             /* while queued */
    unsigned            flow_reserved:1;    /* in sh->granted until picked */

    /* an OpenAI-style error body replacing nginx's HTML page */
    ngx_str_t           error;
    const char         *error_param;
    const char         *error_type;         /* NULL: by status */
    const char         *error_code;         /* NULL: the status */
    ngx_uint_t          retry_after;        /* seconds, 0: no header */
    ngx_buf_t          *error_body;
} ngx_llmd_ctx_t;


typedef struct {
    ngx_array_t         upstreams;          /* ngx_llmd_srv_conf_t * */
} ngx_llmd_main_conf_t;


extern ngx_module_t  ngx_llmd_module;


/* A fine clock for the decision-time variable (vDSO, no syscall). */
static ngx_inline ngx_msec_int_t
ngx_llmd_now_ns(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngx_msec_int_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Milliseconds since a time another process wrote into the zone.  Each
 * process's ngx_current_msec is cached once per event loop turn, so a
 * stamp just written by a busier process can be ahead of ours: that is
 * "now", not 49 days ago.
 */
static ngx_inline ngx_msec_t
ngx_llmd_since(ngx_msec_t then)
{
    ngx_msec_int_t  d;

    d = (ngx_msec_int_t) (ngx_current_msec - then);

    return d > 0 ? (ngx_msec_t) d : 0;
}

/* ngx_llmd_balancer.c */
void ngx_llmd_prefill_release(ngx_llmd_ctx_t *ctx);
ngx_int_t ngx_llmd_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
ngx_int_t ngx_llmd_preview(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx);
void ngx_llmd_resolve_peers(ngx_llmd_srv_conf_t *conf);

/* ngx_llmd_pd.c */
char *ngx_llmd_pd_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_llmd_pd_init_upstream(ngx_conf_t *cf,
    ngx_llmd_srv_conf_t *conf);
ngx_int_t ngx_llmd_pd_decide(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx);
void ngx_llmd_pd_release(ngx_llmd_ctx_t *ctx);
extern const char *ngx_llmd_pd_reasons[NGX_LLMD_PD_NREASONS];
extern const char *ngx_llmd_pick_reasons[NGX_LLMD_PICK_NREASONS];

/* ngx_llmd_zone.c */
ngx_int_t ngx_llmd_init_zone(ngx_shm_zone_t *shm_zone, void *data);
ngx_int_t ngx_llmd_zone_peer_slot(ngx_llmd_srv_conf_t *conf, ngx_str_t *name);
void ngx_llmd_zone_match(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t *slots, ngx_uint_t nslots,
    ngx_uint_t *match, ngx_uint_t *home, uint32_t *hints);
void ngx_llmd_zone_record(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t slot, ngx_uint_t share, uint32_t *hints,
    ngx_uint_t recorded, ngx_uint_t held);
void ngx_llmd_zone_remove(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t slot);
void ngx_llmd_zone_clear_peer(ngx_llmd_srv_conf_t *conf, ngx_int_t slot);
ngx_int_t ngx_llmd_zone_find_peer(ngx_llmd_srv_conf_t *conf, u_char *name,
    size_t len);

/* ngx_llmd_redis.c */
char *ngx_llmd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_llmd_redis_init_process(ngx_cycle_t *cycle);
void ngx_llmd_redis_exit_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_llmd_redis_fresh(ngx_llmd_srv_conf_t *conf);

/* ngx_llmd_predict.c */
uint64_t ngx_llmd_uncached_tokens(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    uint64_t prompt_bytes, ngx_uint_t matched_blocks);
ngx_uint_t ngx_llmd_predict_ready(ngx_llmd_srv_conf_t *conf, ngx_int_t slot);
void ngx_llmd_predict(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    uint64_t prompt_bytes, ngx_uint_t matched_blocks, double *ttft,
    double *itl, uint64_t *uncached, double *correction);
double ngx_llmd_predict_correction(ngx_llmd_srv_conf_t *conf,
    ngx_int_t slot);
void ngx_llmd_predict_observe(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    double predicted, double correction, double observed);
void ngx_llmd_observe_ttft(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    double observed);

/* ngx_llmd_status.c */
char *ngx_llmd_status_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* ngx_llmd_inspect.c */
ngx_int_t ngx_llmd_precontent_handler(ngx_http_request_t *r);
ngx_llmd_ctx_t *ngx_llmd_inspect_body(ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf);
ngx_llmd_srv_conf_t *ngx_llmd_location_upstream(ngx_http_request_t *r);
ngx_int_t ngx_llmd_location_enabled(ngx_http_request_t *r);

/* ngx_llmd_filter.c */
ngx_int_t ngx_llmd_filter_init(ngx_conf_t *cf);

/* ngx_llmd_variables.c */
ngx_int_t ngx_llmd_add_variables(ngx_conf_t *cf);

/* ngx_llmd_model.c */
char *ngx_llmd_model_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_llmd_models_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
uint64_t ngx_llmd_model_hash(u_char *name, size_t len);
void ngx_llmd_model_configure(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    ngx_str_t *server);
void ngx_llmd_model_learn(ngx_llmd_peer_t *p, const char *model);
void ngx_llmd_model_default(ngx_llmd_srv_conf_t *conf);
void ngx_llmd_model_resolve(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx);
ngx_int_t ngx_llmd_model_check(ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx);

/* a peer that serves another model than the request's is no candidate */
static ngx_inline ngx_uint_t
ngx_llmd_model_mismatch(ngx_llmd_peer_t *p, uint64_t model)
{
    return model && p->model_hash && p->model_hash != model;
}

/* ngx_llmd_flow.c */
char *ngx_llmd_queue_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_llmd_saturation_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_llmd_flow_classify(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx);
ngx_int_t ngx_llmd_flow_admit(ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx);
void ngx_llmd_flow_freed(ngx_llmd_srv_conf_t *conf);
void ngx_llmd_flow_picked(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx);
void ngx_llmd_flow_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_llmd_flow_init_upstream(ngx_conf_t *cf,
    ngx_llmd_srv_conf_t *conf);
ngx_uint_t ngx_llmd_flow_saturated(ngx_llmd_srv_conf_t *conf,
    uint64_t model);
extern const char *ngx_llmd_admissions[NGX_LLMD_ADMIT_NOUTCOMES];

/* ngx_llmd_flow_status.c */
size_t ngx_llmd_flow_status_size(ngx_llmd_srv_conf_t *conf);
u_char *ngx_llmd_flow_status_json(u_char *p, ngx_llmd_srv_conf_t *conf,
    ngx_pool_t *pool);
u_char *ngx_llmd_flow_status_prom(u_char *p, ngx_llmd_srv_conf_t **ups,
    ngx_uint_t n, ngx_pool_t *pool);
extern const ngx_uint_t ngx_llmd_wait_le_ms[NGX_LLMD_WAIT_BUCKETS];

#endif /* NGX_LLMD_H */
