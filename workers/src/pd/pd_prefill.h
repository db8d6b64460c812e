/*
 * Prefill side of disaggregated prefill/decode: a listener that decode
 * workers pair with, and the pushing of computed KV pages to them.
 *
 * A decode worker's PREFILL becomes an ordinary engine request (its prompt
 * minus the last token, one sampled token that is thrown away) carrying a
 * pd_source.  Its pages are allocated whole at admission and never
 * preempted; as the backend finishes each layer of a step, that layer's
 * pages go out (pd_source_layer), pages this worker already had cached go
 * out before the first step (pd_source_begin), and DONE follows the last
 * layer.  The request's pages stay referenced, a lease, until the
 * connection has written them or the lease ends; only then does the engine
 * free them (engine_pd_release).
 */

#ifndef LLMD_PD_PREFILL_H
#define LLMD_PD_PREFILL_H

#include <stdbool.h>

#include "base/config.h"
#include "sched/request.h"

struct pd_engine;
struct pd_server;
struct pd_source;

/* Listen on --kv-listen.  0, or -1 with a one-line reason. */
int pd_server_start(struct pd_server **out, const struct pd_engine *e,
    const struct worker_config *cfg, char *err, int err_len);
/* "host:port" decode workers connect to (the heartbeat's kv field) */
const char *pd_server_addr(const struct pd_server *s);

/* Engine thread. */
void pd_source_begin(struct pd_source *src, struct worker_request *r,
    int cached_tokens);
void pd_source_layer(struct pd_source *src, struct worker_request *r,
    int layer, int start, int n_tokens);
/* ok: the prompt's KV is all computed; !ok: the request was aborted.  The
 * engine must not touch src afterwards. */
void pd_source_end(struct pd_source *src, struct worker_request *r, bool ok);

#endif
