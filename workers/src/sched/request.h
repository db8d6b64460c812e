/*
 * One generation request, as it travels from the HTTP thread through the
 * engine and back.
 *
 * Ownership: the HTTP thread allocates and fills the request, hands it to the
 * engine, and frees it after the engine's final event for it.  Between those
 * two points only the engine touches the engine-side fields; the HTTP thread
 * only sets cancel_requested.
 */

#ifndef LLMD_REQUEST_H_WORKER
#define LLMD_REQUEST_H_WORKER

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define REQ_MAX_STOP        4
#define REQ_MAX_STOP_LEN    64

enum finish_reason {
    FINISH_NONE = 0,
    FINISH_STOP,
    FINISH_LENGTH,
    FINISH_ABORT
};

enum req_state {
    REQ_NEW = 0,
    REQ_WAITING,
    REQ_RUNNING,
    REQ_FINISHED
};

#define REQ_MAX_TOP_LOGPROBS 20

enum pd_req_state {
    PD_LOCAL = 0,       /* prefilled here (the default) */
    PD_PENDING,         /* to be prefilled remotely, not admitted yet */
    PD_WAITING,         /* admitted: pages allocated, KV on its way */
    PD_LANDED           /* the KV arrived; decoding here */
};

struct pd_source;
struct pd_xfer;

/* one generated token's log-probability and the most likely alternatives */
struct token_logprob {
    int32_t     token;
    float       logprob;
    int         n_top;
    int32_t     top_token[REQ_MAX_TOP_LOGPROBS];
    float       top_logprob[REQ_MAX_TOP_LOGPROBS];
    int         text_end;       /* engine side: r->text_len after it */
};

struct gen_params {
    int         max_tokens;
    double      temperature;
    double      top_p;
    uint64_t    seed;
    int         priority;           /* higher is served first */
    int         logprobs;           /* 0: none; n: logprobs with n - 1
                                       alternatives per token */
    int         n_stop;
    char        stop[REQ_MAX_STOP][REQ_MAX_STOP_LEN + 1];
};

struct worker_request {
    uint64_t            id;
    struct gen_params   params;
    double              arrival;        /* monotonic seconds */
    void               *client;         /* the HTTP side's stream */
    atomic_int          cancel_requested;

    /* prompt followed by generated tokens; room for max_tokens more */
    int32_t            *tokens;
    int                 n_prompt;
    int                 n_tokens;

    /* ---- engine side ---- */
    enum req_state      state;
    enum finish_reason  finish;
    struct worker_request *next;        /* inbox link */
    double              sched_key;      /* priority order, see scheduler.h */
    int                 heap_pos;       /* index in the waiting heap */
    uint64_t            planned_step;   /* last step that scheduled it */
    int                 num_computed;   /* tokens whose KV is in the cache */
    int32_t            *blocks;         /* block table */
    int                 n_blocks;
    uint64_t           *block_hashes;   /* chained hashes of full blocks */
    int                 n_committed;    /* blocks registered in the cache */
    bool                counted_prompt; /* prompt tokens already in metrics */
    int                 n_preemptions;
    int                 prefix_hit_tokens;
    uint64_t            rng;            /* sampler state */
    struct token_logprob *logprobs;     /* [max_tokens] when asked for */

    /* generated text, for stop strings: bytes [0, text_sent) went out */
    char               *text;
    int                 text_len;
    int                 text_cap;
    int                 text_sent;
    int                 lp_sent;        /* tokens whose logprobs went out */
    int                 n_generated;
    double              first_token_at;
    double              last_token_at;

    /* ---- disaggregated prefill/decode (src/pd/) ---- */
    /* decode side, set by the HTTP thread: prefill on this peer's KV
     * listener ("" = locally) under the gateway's transfer id */
    char                pd_peer[64];
    uint64_t            pd_xfer;
    enum pd_req_state   pd_state;
    bool                pd_abort_sent;  /* engine side */
    bool                pd_ok;          /* set before engine_pd_landed() */
    const char         *error;          /* why the engine aborted it; static */
    double              pd_exposed;     /* landed: last layer -> landed, s */
    uint64_t            pd_bytes;       /* landed: payload received */
    uint64_t            pd_bytes_early; /* of which in before its last layer */
    struct pd_xfer     *pd_dst;         /* decode side: its transfer */
    /* decode side: the gateway prefix keys of the body and the prompt
     * blocks each depends on, passed on so the prefill worker can
     * advertise what it now caches (owned) */
    uint64_t           *pd_keys;
    uint32_t           *pd_cover;
    uint32_t            pd_nkeys;
    /* prefill side: the transfer this request computes KV for */
    struct pd_source   *pd_src;
    int                 kv_checked;     /* sim --sim-check-kv: rows checked */
};

/* Allocates a request with room for n_prompt + max_tokens tokens; the
 * prompt is copied.  Returns NULL when out of memory. */
struct worker_request *request_new(const int32_t *prompt, int n_prompt,
    const struct gen_params *params, int block_tokens);
void request_free(struct worker_request *r);

#endif
