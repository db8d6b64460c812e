/*
 * The fleet-state wire format: what workers and gateways write to Redis and
 * read back.  msgpack maps with short string keys, so fields can be added
 * without breaking older readers; every record carries "v", and a reader
 * rejects versions it does not know.
 *
 * Redis layout (PREFIX defaults to "llmd:", POOL to "default"):
 *   PREFIX POOL ":hb"          hash  worker id -> heartbeat
 *   PREFIX POOL ":events"      stream, field "e" -> cache event
 *   PREFIX POOL ":snap:" ID    string: snapshot event (type "snapshot")
 *   PREFIX POOL ":gw"          hash  gateway id -> gateway load record
 *   PREFIX POOL ":placements"  stream, field "e" -> cache event written by
 *                              gateways for workers that send no events
 *
 * Decoding never trusts the input: sizes are bounded, types checked, and
 * strings copied into fixed fields.
 */

#ifndef LLMD_WIRE_H
#define LLMD_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* the Redis key layout above, for every reader and writer */
#define LLMD_KEY_PREFIX_DEFAULT "llmd:"
#define LLMD_KEY_POOL_DEFAULT   "default"
#define LLMD_KEY_HB             ":hb"
#define LLMD_KEY_EVENTS         ":events"
#define LLMD_KEY_SNAP           ":snap:"
#define LLMD_KEY_GW             ":gw"
#define LLMD_KEY_PLACEMENTS     ":placements"

#define LLMD_WIRE_VERSION       1
#define LLMD_WIRE_MAX_RECORD    (256 * 1024)    /* bytes in one record */
#define LLMD_WIRE_MAX_KEYS      8192            /* keys in one cache event */
#define LLMD_WIRE_MAX_PEERS     256             /* peers in a gateway record */

#define LLMD_WIRE_ID_MAX        64
#define LLMD_WIRE_ADDR_MAX      64
#define LLMD_WIRE_MODEL_MAX     128

typedef enum {
    LLMD_WIRE_OK = 0,
    LLMD_WIRE_ETRUNCATED,       /* not a whole msgpack object */
    LLMD_WIRE_ETYPE,            /* wrong type or shape */
    LLMD_WIRE_EVERSION,         /* unknown version */
    LLMD_WIRE_ETOOBIG,          /* over a bound */
    LLMD_WIRE_ENOSPACE          /* the output buffer is too small */
} llmd_wire_status_t;

typedef enum {
    LLMD_ROLE_BOTH = 0,
    LLMD_ROLE_PREFILL,
    LLMD_ROLE_DECODE
} llmd_role_t;

typedef struct {
    char        id[LLMD_WIRE_ID_MAX];
    char        pool[LLMD_WIRE_ID_MAX];
    char        addr[LLMD_WIRE_ADDR_MAX];       /* host:port the gateway uses */
    char        model[LLMD_WIRE_MODEL_MAX];
    uint32_t    role;                           /* llmd_role_t */
    uint64_t    seq;                            /* +1 per heartbeat */
    uint64_t    ts_ms;                          /* worker clock, Unix ms */
    uint32_t    interval_ms;
    uint32_t    ttl_ms;                         /* gone when silent this long */
    uint32_t    running;
    uint32_t    waiting;
    uint32_t    max_batch;                      /* running at most; 0: unknown */
    uint64_t    queued_prefill_tokens;          /* prompt tokens not yet computed */
    uint32_t    kv_used;                        /* blocks */
    uint32_t    kv_total;
    uint32_t    block_tokens;
    double      prefill_tps;                    /* measured, smoothed */
    double      decode_ms_base;                 /* step ms = base + per_seq x batch */
    double      decode_ms_per_seq;
    double      ttft_ms;                        /* as the worker measures it */
    double      bytes_per_token;                /* canonical prompt bytes per
                                                   prompt token (tokenizer) */
    uint64_t    requests_total;
    uint64_t    prompt_tokens_total;
    uint64_t    generation_tokens_total;
    uint64_t    prefix_hit_tokens_total;
    uint32_t    events;                         /* 1: publishes cache events */
    char        kv_addr[LLMD_WIRE_ADDR_MAX];    /* prefill role: host:port of
                                                   its KV transfer listener */
} llmd_heartbeat_t;

typedef enum {
    LLMD_EVENT_STORED = 1,      /* the worker now holds these prefixes */
    LLMD_EVENT_REMOVED = 2,     /* it no longer holds them */
    LLMD_EVENT_CLEARED = 3,     /* it holds nothing (restart, reset) */
    LLMD_EVENT_SNAPSHOT = 4     /* everything it holds, replacing the past */
} llmd_event_type_t;

typedef struct {
    char        id[LLMD_WIRE_ID_MAX];           /* worker id */
    char        addr[LLMD_WIRE_ADDR_MAX];       /* worker address */
    uint32_t    type;                           /* llmd_event_type_t */
    uint64_t    ts_ms;
    uint32_t    block_size;                     /* prefix block bytes */
    uint32_t    nkeys;
    uint32_t    max_keys;                       /* capacity of keys[] */
    uint64_t   *keys;                           /* caller's buffer */
} llmd_cache_event_t;

typedef struct {
    char        addr[LLMD_WIRE_ADDR_MAX];
    uint32_t    inflight;
    uint64_t    inflight_tokens;                /* prompt + max_tokens */
    uint64_t    inflight_work;                  /* uncached + max_tokens */
} llmd_gateway_peer_t;

typedef struct {
    char                  id[LLMD_WIRE_ID_MAX];     /* gateway id */
    uint64_t              seq;
    uint64_t              ts_ms;
    uint32_t              npeers;
    llmd_gateway_peer_t   peers[LLMD_WIRE_MAX_PEERS];
} llmd_gateway_load_t;

/* Encoding into a caller's buffer; *len receives the bytes written. */
llmd_wire_status_t llmd_wire_pack_heartbeat(const llmd_heartbeat_t *hb,
    char *buf, size_t cap, size_t *len);
llmd_wire_status_t llmd_wire_pack_event(const llmd_cache_event_t *ev,
    char *buf, size_t cap, size_t *len);
llmd_wire_status_t llmd_wire_pack_gateway(const llmd_gateway_load_t *gw,
    char *buf, size_t cap, size_t *len);

/* Decoding; unknown fields are skipped, missing ones left at zero.
 * For events, keys beyond ev->max_keys give LLMD_WIRE_ETOOBIG. */
llmd_wire_status_t llmd_wire_unpack_heartbeat(const char *buf, size_t len,
    llmd_heartbeat_t *hb);
llmd_wire_status_t llmd_wire_unpack_event(const char *buf, size_t len,
    llmd_cache_event_t *ev);
llmd_wire_status_t llmd_wire_unpack_gateway(const char *buf, size_t len,
    llmd_gateway_load_t *gw);

const char *llmd_wire_strerror(llmd_wire_status_t st);
const char *llmd_role_name(uint32_t role);

#endif /* LLMD_WIRE_H */
