/*
 * The publisher's own state, shared by its halves: publisher.c (the
 * records: heartbeats, cache events, snapshots; the tick; the API) and
 * redis_link.c (the connection to Redis and its states).  Not for other
 * layers: they see publisher.h.
 */

#ifndef LLMD_PUBLISHER_INTERNAL_H
#define LLMD_PUBLISHER_INTERNAL_H

#include <event2/event.h>
#include <hiredis/async.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "base/redis_url.h"
#include "llmd_wire.h"
#include "publisher.h"

#define BACKOFF_MIN_MS      100
#define BACKOFF_MAX_MS      5000
#define CONNECT_TIMEOUT_S   2.0
#define REPLY_TIMEOUT_S     3.0
#define SNAPSHOT_EVERY_S    5.0
#define SHUTDOWN_WAIT_MS    500
#define TICK_MAX_MS         100
#define MAX_PENDING         4096        /* replies outstanding before we skip */
#define KV_QUEUE_MAX        (1 << 20)
#define MAP_MAX_EDGES_MIN   65536

enum link_state { LINK_DOWN, LINK_CONNECTING, LINK_HANDSHAKE, LINK_READY };
enum link_report { REPORT_NONE, REPORT_UP, REPORT_DOWN };

struct change {
    uint64_t    key;
    uint32_t    type;       /* LLMD_EVENT_STORED or _REMOVED */
};

struct publisher {
    struct event_base      *base;
    struct engine          *engine;
    struct worker_metrics  *metrics;
    struct redis_url        url;
    char                    where[REDIS_URL_HOST_MAX + 16];
    char                    hb_key[256];
    char                    events_key[256];
    char                    snap_key[320];
    llmd_heartbeat_t        hb;             /* the fixed fields */
    size_t                  prefix_block;
    int                     block_tokens;
    int                     interval_ms;

    redisAsyncContext      *ac;
    enum link_state         state;
    enum link_report        reported;
    int                     backoff_ms;
    int                     pending;        /* replies awaited on ac */
    double                  progress_at;    /* connect start or last reply */
    double                  last_beat;
    double                  last_snapshot;
    bool                    resync;         /* send everything held, anew */
    bool                    error_logged;   /* one error reply per connection */
    bool                    stopping;

    struct event           *tick;
    struct event           *retry;
    struct event           *flush;
    struct event           *kv_wake;
    struct event           *shutdown_timer;
    void                  (*done)(void *);
    void                   *done_arg;

    struct prefix_map      *map;
    struct change          *changes;        /* this tick's, in order */
    size_t                  n_changes;
    size_t                  cap_changes;
    uint64_t               *keybuf;         /* LLMD_WIRE_MAX_KEYS */
    char                   *packbuf;        /* LLMD_WIRE_MAX_RECORD */

    /* KV evictions from the engine thread */
    pthread_mutex_t         kv_lock;
    uint64_t               *kv_q;
    size_t                  kv_n;
    size_t                  kv_cap;
    bool                    kv_overflow;
    uint64_t               *kv_spare;
    size_t                  kv_spare_cap;
    struct claim_link      *remote_claims;  /* kv_lock: prefilled for others */
};

struct claim_link {
    struct claim_link      *next;
    struct prefix_claim    *claim;
};

static inline struct timeval ms_to_tv(int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

    return tv;
}

/* redis_link.c */
void link_connect(struct publisher *p);
/* the retry timer's callback */
void link_on_retry(evutil_socket_t fd, short what, void *arg);
/* Forget the connection, log why, retry later. */
void link_drop(struct publisher *p, const char *why);
/* A command on the current connection (cb NULL: count the reply, log an
 * error once); -1 when there is none. */
int link_command(struct publisher *p, redisCallbackFn *cb, const char *fmt, ...);

/* publisher.c: the link is READY, send what a new connection needs */
void publisher_link_ready(struct publisher *p);

#endif
