/*
 * The HTTP server's own state, shared by its two halves: http_server.c
 * (routes, request hand-off, the listener) and http_stream.c (a
 * generation's response, from engine events to HTTP).  Not for other
 * layers: they see http_server.h.
 */

#ifndef LLMD_HTTP_INTERNAL_H
#define LLMD_HTTP_INTERNAL_H

#include <event2/event.h>
#include <event2/http.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_server.h"
#include "openai_api.h"

struct stream {
    struct http_server         *srv;
    struct evhttp_request      *req;
    struct evhttp_connection   *evcon;     /* NULL once evhttp freed it */
    struct worker_request      *wr;
    struct event               *close_watch;
    enum api_kind               kind;
    bool                        sse;
    bool                        include_usage;
    bool                        closed;     /* the client is gone */
    bool                        dirty;      /* out has bytes to send */
    bool                        finished;
    bool                        started;    /* SSE headers are out */
    struct prefix_claim        *claim;      /* advertised once prefilled */
    char                        id[48];
    long                        created;
    char                       *prefix;     /* SSE chunk up to the text */
    size_t                      prefix_len;
    const char                 *suffix;
    size_t                      suffix_len;
    struct evbuffer            *out;        /* pending SSE, or the full text */
    bool                        lp;         /* SSE chunks carry logprobs */
    struct evbuffer            *lp_text;    /* text of the tokens not out yet */
    int                         lp_sent;    /* tokens whose logprobs are out */
    int                         lp_offset;  /* text_offset of the next one */
};

struct stream_list {
    struct stream **s;
    int             n;
    int             cap;
};

struct http_server {
    struct worker_config        cfg;
    struct engine              *engine;
    struct worker_metrics      *metrics;
    struct event_base          *base;
    struct evhttp              *http;
    struct evhttp_bound_socket *bound;
    struct event               *wakeup;
    struct event               *sigint;
    struct event               *sigterm;
    struct event_queue          events;
    struct stream_list          dirty;
    struct stream_list          done;
    long                        started;
    uint64_t                    next_id;
    uint64_t                    id_salt;
    struct publisher           *pub;        /* NULL without --redis */
    bool                        stopping;
};

/* http_server.c */
int stream_list_push(struct stream_list *l, struct stream *st);
void http_send_body(struct evhttp_request *req, int status,
    const char *content_type, const char *body, size_t len);
void http_send_error(struct evhttp_request *req, const struct api_error *err);
void http_send_json(struct evhttp_request *req, char *body, size_t len);

/* http_stream.c */
struct stream *stream_new(struct http_server *srv, struct evhttp_request *req,
    const struct api_request *rq, struct worker_request *wr);
/* notices a client that goes away (see http_stream.c) */
void stream_watch_client(struct stream *st);
void stream_free(struct stream *st);
/* the engine's wake-up: its events to their streams */
void http_on_wakeup(evutil_socket_t fd, short what, void *arg);

#endif
