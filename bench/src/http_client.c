#include "http_client.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "clock.h"

/* a reused connection the server closed while idle fails without a byte;
 * such a request is resent on a fresh connection this many times */
#define STALE_RETRIES 2

enum parse_state {
    S_STATUS, S_HEADERS, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF,
    S_TRAILERS, S_LENGTH, S_CLOSE,
};

struct exchange {
    struct exchange            *next;       /* in the pending FIFO */
    char                       *req;
    size_t                      len;
    const struct http_handler  *h;
    void                       *arg;
    int                         retries;
    int                         written;
};

struct conn {
    struct http_pool   *pool;
    struct bufferevent *bev;
    struct conn        *prev, *next;        /* in the idle list */
    struct exchange    *ex;
    int                 reused, got_bytes;
    enum parse_state    state;
    long long           remaining;
    int                 chunked, has_length, keep_alive, status;
    char                upstream[256];
};

struct http_pool {
    struct event_base      *base;
    struct sockaddr_storage addr;
    socklen_t               addrlen;
    int                     max_conns, open;
    long                    opened;
    struct timeval          timeout;
    struct conn            *idle;
    struct exchange        *pending, *pending_tail;
};

static void assign(struct conn *c, struct exchange *ex);
static void dispatch(struct http_pool *pool, struct exchange *ex);

struct http_pool *http_pool_new(struct event_base *base, const char *host,
                                const char *port, int max_conns,
                                double timeout_s, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);

    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "--url: cannot resolve %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    struct http_pool *pool = calloc(1, sizeof(*pool));

    memcpy(&pool->addr, res->ai_addr, res->ai_addrlen);
    pool->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    pool->base = base;
    pool->max_conns = max_conns;
    pool->timeout.tv_sec = (time_t) timeout_s;
    pool->timeout.tv_usec = (suseconds_t) ((timeout_s - (double) (time_t) timeout_s) * 1e6);
    return pool;
}

static void idle_remove(struct conn *c)
{
    struct http_pool *pool = c->pool;

    if (c->prev)
        c->prev->next = c->next;
    else if (pool->idle == c)
        pool->idle = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_free(struct conn *c)
{
    struct http_pool *pool = c->pool;

    idle_remove(c);
    bufferevent_free(c->bev);
    free(c);
    pool->open--;
    /* a slot opened: the oldest waiting request takes it */
    if (pool->pending && pool->open < pool->max_conns) {
        struct exchange *ex = pool->pending;

        pool->pending = ex->next;
        if (pool->pending == NULL)
            pool->pending_tail = NULL;
        dispatch(pool, ex);
    }
}

void http_pool_free(struct http_pool *pool)
{
    while (pool->idle)
        conn_free(pool->idle);
    free(pool);
}

long http_pool_connections_opened(const struct http_pool *pool)
{
    return pool->opened;
}

static void exchange_end(struct exchange *ex, const char *error, double now)
{
    ex->h->on_done(ex->arg, error, now);
    free(ex->req);
    free(ex);
}

/* The response is complete: the connection goes back to the pool (or is
 * closed) before the caller hears of it, so that a request the caller
 * sends from on_done can reuse it. */
static void finish(struct conn *c, double now)
{
    struct http_pool *pool = c->pool;
    struct exchange *ex = c->ex;

    c->ex = NULL;
    if (!c->keep_alive) {
        conn_free(c);
    } else if (pool->pending) {
        struct exchange *next = pool->pending;

        pool->pending = next->next;
        if (pool->pending == NULL)
            pool->pending_tail = NULL;
        assign(c, next);
    } else {
        c->reused = 1;
        bufferevent_set_timeouts(c->bev, NULL, NULL);
        c->next = pool->idle;
        if (pool->idle)
            pool->idle->prev = c;
        pool->idle = c;
    }
    exchange_end(ex, NULL, now);
}

static void fail(struct conn *c, const char *error, double now)
{
    struct exchange *ex = c->ex;

    c->ex = NULL;
    conn_free(c);
    if (ex)
        exchange_end(ex, error, now);
}

static void deliver(struct conn *c, struct evbuffer *in, size_t n, double now)
{
    while (n > 0) {
        struct evbuffer_iovec v;

        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t take = v.iov_len < n ? v.iov_len : n;

        c->ex->h->on_body(c->ex->arg, v.iov_base, take, now);
        evbuffer_drain(in, take);
        n -= take;
    }
}

static void on_header(struct conn *c, char *line)
{
    char *colon = strchr(line, ':');

    if (colon == NULL)
        return;
    *colon = '\0';
    char *value = colon + 1;

    value += strspn(value, " \t");
    if (strcasecmp(line, "content-length") == 0) {
        c->has_length = 1;
        c->remaining = strtoll(value, NULL, 10);
    } else if (strcasecmp(line, "transfer-encoding") == 0) {
        c->chunked = strcasestr(value, "chunked") != NULL;
    } else if (strcasecmp(line, "connection") == 0) {
        if (strcasestr(value, "close"))
            c->keep_alive = 0;
        else if (strcasestr(value, "keep-alive"))
            c->keep_alive = 1;
    } else if (strcasecmp(line, "x-llmd-upstream") == 0) {
        snprintf(c->upstream, sizeof(c->upstream), "%s", value);
    }
}

/* One step of the response parser; returns 0 when it needs more bytes or
 * the exchange ended (c may be gone then), 1 to go on. */
static int parse_step(struct conn *c, struct evbuffer *in, double now)
{
    size_t n;
    char *line;

    switch (c->state) {
    case S_CHUNK_DATA:
    case S_LENGTH:
        n = evbuffer_get_length(in);
        if (n > (size_t) c->remaining)
            n = (size_t) c->remaining;
        if (n == 0 && c->remaining > 0)
            return 0;
        deliver(c, in, n, now);
        c->remaining -= (long long) n;
        if (c->remaining > 0)
            return 0;
        if (c->state == S_LENGTH) {
            finish(c, now);
            return 0;
        }
        c->state = S_CHUNK_CRLF;
        return 1;
    case S_CLOSE:
        deliver(c, in, evbuffer_get_length(in), now);
        return 0;
    default:
        break;
    }
    line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (line == NULL)
        return 0;
    switch (c->state) {
    case S_STATUS: {
        int minor = 1;

        if (sscanf(line, "HTTP/1.%d %d", &minor, &c->status) != 2) {
            free(line);
            fail(c, "malformed status line", now);
            return 0;
        }
        c->keep_alive = minor >= 1;
        c->state = c->status >= 100 && c->status < 200 ? S_STATUS : S_HEADERS;
        break;
    }
    case S_HEADERS:
        if (n > 0) {
            on_header(c, line);
            break;
        }
        c->ex->h->on_head(c->ex->arg, c->status, c->upstream[0] ? c->upstream : NULL);
        if (c->chunked) {
            c->state = S_CHUNK_SIZE;
        } else if (c->has_length) {
            c->state = S_LENGTH;
            if (c->remaining == 0) {
                free(line);
                finish(c, now);
                return 0;
            }
        } else {
            c->state = S_CLOSE;
            c->keep_alive = 0;
        }
        break;
    case S_CHUNK_SIZE:
        c->remaining = strtoll(line, NULL, 16);
        c->state = c->remaining > 0 ? S_CHUNK_DATA : S_TRAILERS;
        break;
    case S_CHUNK_CRLF:
        c->state = S_CHUNK_SIZE;
        break;
    case S_TRAILERS:
        if (n == 0) {
            free(line);
            finish(c, now);
            return 0;
        }
        break;
    default:
        break;
    }
    free(line);
    return 1;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    double now = clock_now();

    if (c->ex == NULL) {
        evbuffer_drain(in, evbuffer_get_length(in));   /* nothing asked */
        return;
    }
    c->got_bytes = 1;
    while (parse_step(c, in, now))
        ;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    double now = clock_now();

    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;

        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return;
    }
    if (c->ex == NULL) {
        conn_free(c);                   /* an idle connection was closed */
        return;
    }
    if ((what & BEV_EVENT_EOF) && c->state == S_CLOSE) {
        c->keep_alive = 0;
        finish(c, now);
        return;
    }
    if (!(what & BEV_EVENT_TIMEOUT) && !c->got_bytes && c->reused
        && c->ex->retries < STALE_RETRIES) {
        struct exchange *ex = c->ex;
        struct http_pool *pool = c->pool;

        c->ex = NULL;
        ex->retries++;
        conn_free(c);
        dispatch(pool, ex);
        return;
    }
    fail(c, what & BEV_EVENT_TIMEOUT ? "timeout"
            : what & BEV_EVENT_EOF ? "connection closed before the response ended"
            : "connection error", now);
}

static void assign(struct conn *c, struct exchange *ex)
{
    c->ex = ex;
    c->got_bytes = 0;
    c->state = S_STATUS;
    c->chunked = c->has_length = 0;
    c->remaining = 0;
    c->status = 0;
    c->upstream[0] = '\0';
    bufferevent_set_timeouts(c->bev, &c->pool->timeout, NULL);
    bufferevent_write(c->bev, ex->req, ex->len);
    if (!ex->written) {
        ex->written = 1;
        if (ex->h->on_write)
            ex->h->on_write(ex->arg, clock_now());
    }
}

static struct conn *conn_open(struct http_pool *pool)
{
    struct conn *c = calloc(1, sizeof(*c));

    c->pool = pool;
    c->bev = bufferevent_socket_new(pool->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    pool->open++;
    pool->opened++;
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *) &pool->addr,
                                   (int) pool->addrlen) < 0) {
        /* reported like any other connection failure, from the loop */
        bufferevent_trigger_event(c->bev, BEV_EVENT_ERROR, BEV_TRIG_DEFER_CALLBACKS);
    }
    return c;
}

static void dispatch(struct http_pool *pool, struct exchange *ex)
{
    if (pool->idle) {
        struct conn *c = pool->idle;

        idle_remove(c);
        assign(c, ex);
    } else if (pool->open < pool->max_conns) {
        assign(conn_open(pool), ex);
    } else {
        ex->next = NULL;
        if (pool->pending_tail)
            pool->pending_tail->next = ex;
        else
            pool->pending = ex;
        pool->pending_tail = ex;
    }
}

void http_pool_send(struct http_pool *pool, const char *req, size_t len,
                    const struct http_handler *h, void *arg)
{
    struct exchange *ex = calloc(1, sizeof(*ex));

    ex->req = malloc(len);
    memcpy(ex->req, req, len);
    ex->len = len;
    ex->h = h;
    ex->arg = arg;
    dispatch(pool, ex);
}
