/*
 * Decode side of disaggregated prefill/decode: pair connections to prefill
 * workers, made on first use and kept, and the transfers running on them.
 *
 * The scheduler admits a request marked for remote prefill with all of its
 * pages allocated (decode-first allocation) and without computing anything;
 * pd_client_start() then asks the prefill worker, in one PREFILL message,
 * to compute the prompt but its last token and to push the pages this
 * worker does not already hold into those pages.  DATA is read straight
 * into the pages; DONE, FAILED, a lost connection, the deadline or an abort
 * end the transfer with pd_engine_landed().
 */

#ifndef LLMD_PD_DECODE_H
#define LLMD_PD_DECODE_H

#include "base/config.h"
#include "sched/request.h"

struct pd_engine;
struct pd_client;

struct pd_client *pd_client_new(const struct pd_engine *e, const struct worker_config *cfg);

/* Engine thread: r is PD_WAITING with its pages allocated. */
void pd_client_start(struct pd_client *c, struct worker_request *r);
/* Engine thread: give up on r's transfer (its client went away); the
 * transfer still ends with pd_engine_landed(). */
void pd_client_abort(struct pd_client *c, struct worker_request *r);
/* Engine thread, after pd_engine_landed(): the transfer's memory. */
void pd_client_forget(struct worker_request *r);

/* Checks a gateway's X-LLMD-Prefill-Peer ("host:port") and
 * X-LLMD-Transfer-Id (1 to 16 hex digits) headers; 0 or -1. */
int pd_parse_headers(const char *peer, const char *xfer_id,
    struct worker_request *r);

#endif
