/*
 * Workloads: the list of requests a run sends, generated up front from a
 * seed (or read from a trace).  A request holds only its *new* messages;
 * a chained request (a later turn of a session, a later step of an agent
 * job) is sent `after` seconds once its predecessor finishes, with the
 * predecessor's messages and the answer the server returned prepended.
 * Texts live in the workload's arena and are shared between requests, so
 * a large shared-prefix run costs its distinct texts, not its bodies.
 */
#ifndef BENCH_WORKLOAD_H
#define BENCH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "text.h"

enum bench_api { API_CHAT, API_COMPLETIONS };

struct bench_msg {
    const char *role;
    const char *text;
    size_t      len;
};

struct bench_request {
    double              t;          /* arrival offset, seconds from the start */
    double              after;      /* chained: think time after prev ends */
    int                 prev, next; /* the session's neighbouring turns, or -1 */
    int                 group, session, turn;
    const char         *tag;        /* "short" / "long", or NULL */
    int                 max_tokens;
    size_t              msg_first;  /* this request's messages: */
    int                 n_msgs;     /* wl->msgs[msg_first ..] */
};

struct workload {
    struct bench_request   *reqs;
    size_t                  n, cap;
    struct bench_msg       *msgs;
    size_t                  n_msgs, msgs_cap;
    struct text_arena       arena;
    int                     chained;    /* some request has a predecessor */
};

/* Every numeric field is -1 when not given; each workload fills its own
 * defaults (workload_params_defaults). */
struct workload_params {
    const char     *name;
    enum bench_api  api;
    uint64_t        seed;
    double          rate;           /* requests/s; 0 = not given */
    double          duration;       /* seconds of arrivals; 0 = not given */
    long            requests;
    long            burst, bursts;
    long            groups, users;
    long            system_tokens, question_tokens;
    long            input_tokens, output_tokens;
    long            turns;
    double          think_time;
    double          long_fraction;
    long            long_steps, long_min_tokens, long_max_tokens;
    long            long_output_tokens, tool_tokens;
    long            short_max_tokens, short_max_output;
};

void workload_params_init(struct workload_params *p);
/* Fills defaults and checks the combination; on error writes a one-line
 * message to err and returns -1. */
int  workload_params_finish(struct workload_params *p, char *err, size_t errlen);
const char *workload_names(void);

int  workload_generate(const struct workload_params *p, struct workload *wl);
void workload_free(struct workload *wl);

/* building blocks shared by the generators */
struct bench_request *workload_add(struct workload *wl, double t);
void   workload_chain(struct workload *wl, size_t prev, size_t next, double after);
/* messages must be added to the newest request */
void   request_add_msg(struct workload *wl, struct bench_request *r,
                       const char *role, const char *text, size_t len);
/* Content bytes that make a message of `tokens` rendered prompt tokens:
 * the worker renders a chat message as content, US, role, RS. */
size_t content_len_for(enum bench_api api, const char *role, long tokens);
long   rendered_tokens(enum bench_api api, const char *role, size_t content_len);

#endif
