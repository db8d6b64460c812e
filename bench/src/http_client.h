/*
 * A small HTTP/1.1 client for one origin: a pool of keep-alive
 * connections (bufferevents on raw sockets), one request in flight per
 * connection, a FIFO of requests waiting for a connection when the pool is
 * at its limit.  Responses are parsed here (status line, headers, chunked
 * or length-delimited or close-delimited bodies) so that every body
 * fragment reaches the caller with the time of the read that brought it.
 */
#ifndef BENCH_HTTP_CLIENT_H
#define BENCH_HTTP_CLIENT_H

#include <event2/event.h>
#include <stddef.h>

struct http_handler {
    /* the request's bytes were handed to a connection */
    void (*on_write)(void *arg, double now);
    /* status line and headers are in; upstream is X-LLMD-Upstream or NULL */
    void (*on_head)(void *arg, int status, const char *upstream);
    /* decoded body bytes, as they arrive */
    void (*on_body)(void *arg, const char *bytes, size_t len, double now);
    /* the exchange is over: error is NULL for a complete response */
    void (*on_done)(void *arg, const char *error, double now);
};

struct http_pool;

struct http_pool *http_pool_new(struct event_base *base, const char *host,
                                const char *port, int max_conns,
                                double timeout_s, char *err, size_t errlen);
void http_pool_free(struct http_pool *pool);

/* req: the complete request (head and body); copied */
void http_pool_send(struct http_pool *pool, const char *req, size_t len,
                    const struct http_handler *h, void *arg);

long http_pool_connections_opened(const struct http_pool *pool);

#endif
