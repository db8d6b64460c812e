/*
 * Fleet-state publisher: the worker's side of the Redis rendezvous
 * (common/llmd_wire.h has the records and the key layout).
 *
 *   every --heartbeat-ms   HSET PREFIX POOL:hb   ID  <heartbeat>
 *   per loop tick          XADD PREFIX POOL:events MAXLEN ~ 100000 * e <event>
 *   every 5 s, (re)connect SET  PREFIX POOL:snap:ID <snapshot event>
 *   on (re)connect         XADD CLEARED, then STORED for everything held
 *   SIGTERM / SIGINT       HDEL PREFIX POOL:hb   ID
 *
 * It runs on the HTTP thread's libevent loop with async hiredis; the engine
 * thread only hands it KV evictions through a small locked queue.  Redis
 * down or slow never stalls serving: the publisher drops what it cannot
 * send, reconnects with backoff (100 ms doubling to 5 s) and resyncs.
 */

#ifndef LLMD_PUBLISHER_H
#define LLMD_PUBLISHER_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"
#include "engine/engine.h"
#include "base/metrics.h"
#include "sched/prefix_claim.h"

struct publisher;

/* Set up (nothing is sent before publisher_start); port is the port bound. */
struct publisher *publisher_new(struct event_base *base,
    const struct worker_config *cfg, struct engine *engine,
    struct worker_metrics *metrics, int port, char *err, size_t err_len);

/* Connect and start the timers; call before the engine starts. */
void publisher_start(struct publisher *p);

/* At parse time: the request's claim on the gateway's prefix keys (NULL
 * when it has none), from its canonical prompt bytes (api_request.canon).
 * Cheap: one pass over those bytes and the prompt. */
struct prefix_claim *publisher_claim(struct publisher *p, const void *canon,
    size_t len, const int32_t *prompt, int n_prompt);

/* The claim's prompt blocks are computed and cached: advertise it.  Takes
 * ownership of c. */
void publisher_prefilled(struct publisher *p, struct prefix_claim *c);

/* Graceful stop: remove our heartbeat, then call done (at once when Redis
 * is not connected, else on the reply or after a short timeout). */
void publisher_shutdown(struct publisher *p, void (*done)(void *), void *arg);

void publisher_free(struct publisher *p);

#endif
