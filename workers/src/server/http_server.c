/*
 * HTTP server: routes, request hand-off to the engine, the listener; the
 * responses of generations are http_stream.c.
 *
 * A generation request becomes a `stream` (even when the client did not ask
 * for SSE) that lives until the engine's FINISH event for it.  If the client
 * goes away first the stream is marked closed and the engine is told to
 * cancel, which frees the request's KV blocks at its next step; the stream
 * itself is freed when the FINISH (abort) comes back, so no event can ever
 * point at freed memory.
 *
 * Two ways to notice a client that went away: evhttp's close callback (a
 * write to the socket failed), and an EV_CLOSED watcher on the socket (the
 * peer hung up while we had nothing to write, e.g. the request is queued).
 */

#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "http_internal.h"
#include "openai_api.h"
#include "pd/pd_decode.h"
#include "fleet/publisher.h"

/* ------------------------------------------------------------------------ */
/* small helpers */

int stream_list_push(struct stream_list *l, struct stream *st)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        void *p = realloc(l->s, sizeof(*l->s) * (size_t) cap);
        if (p == NULL)
            return -1;
        l->s = p;
        l->cap = cap;
    }
    l->s[l->n++] = st;
    return 0;
}

void http_send_body(struct evhttp_request *req, int status,
    const char *content_type, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      content_type);
    if (buf && body)
        evbuffer_add(buf, body, len);
    evhttp_send_reply(req, status, NULL, buf);
    if (buf)
        evbuffer_free(buf);
}

void http_send_error(struct evhttp_request *req, const struct api_error *err)
{
    size_t len = 0;
    char *body = api_render_error(err, &len);

    http_send_body(req, err->status, "application/json", body, len);
    free(body);
}

void http_send_json(struct evhttp_request *req, char *body, size_t len)
{
    if (body == NULL) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    http_send_body(req, 200, "application/json", body, len);
    free(body);
}

/* ------------------------------------------------------------------------ */
/* generation endpoints */

static int header_priority(struct evhttp_request *req, struct api_request *rq,
    struct api_error *err)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req),
                                       "X-LLMD-Priority");
    char *end;
    long v;

    if (h == NULL)
        return 0;
    errno = 0;
    v = strtol(h, &end, 10);
    if (errno || end == h || *end || v < -1000000 || v > 1000000) {
        api_error_set(err, 400, "invalid_request_error", "X-LLMD-Priority",
                      NULL, "X-LLMD-Priority must be an integer in "
                      "[-1000000, 1000000]");
        return -1;
    }
    /* the header, set by the gateway, wins over the body field */
    rq->params.priority = (int) v;
    return 0;
}

static void handle_generate(struct http_server *srv, struct evhttp_request *req,
    enum api_kind kind)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    struct api_request rq;
    struct api_error err;
    struct worker_request *wr;
    struct stream *st;
    const char *body;

    if (len > srv->cfg.max_body_bytes) {
        api_error_set(&err, 413, "invalid_request_error", NULL,
                      "request_too_large", "the request body is %zu bytes; "
                      "the limit is %zu bytes", len, srv->cfg.max_body_bytes);
        http_send_error(req, &err);
        return;
    }
    body = (const char *) evbuffer_pullup(in, -1);
    if (api_parse_request(kind, body ? body : "", len, &rq, &err) != 0) {
        http_send_error(req, &err);
        return;
    }
    if (rq.model[0] && strcmp(rq.model, srv->cfg.model_name) != 0) {
        api_error_set(&err, 404, "invalid_request_error", "model",
                      "model_not_found", "The model `%s` does not exist.",
                      rq.model);
        goto fail;
    }
    if (header_priority(req, &rq, &err) != 0
        || api_fit_context(&rq, srv->engine->max_model_len, &err) != 0)
        goto fail;
    if (!rq.has_seed)
        rq.params.seed = srv->cfg.seed;

    wr = request_new(rq.prompt, rq.n_prompt, &rq.params,
                     srv->cfg.block_tokens);
    if (wr == NULL)
        goto oom;
    wr->id = ++srv->next_id;
    wr->arrival = now_seconds();
    {
        /* the gateway chose a prefill worker for this request */
        struct evkeyvalq *h = evhttp_request_get_input_headers(req);
        if (pd_parse_headers(evhttp_find_header(h, "X-LLMD-Prefill-Peer"),
                             evhttp_find_header(h, "X-LLMD-Transfer-Id"),
                             wr) != 0) {
            request_free(wr);
            api_error_set(&err, 400, "invalid_request_error",
                          "X-LLMD-Prefill-Peer", NULL, "X-LLMD-Prefill-Peer "
                          "must be HOST:PORT and X-LLMD-Transfer-Id 1 to 16 "
                          "hex digits");
            goto fail;
        }
    }
    st = stream_new(srv, req, &rq, wr);
    if (st == NULL) {
        request_free(wr);
        goto oom;
    }
    wr->client = st;
    if (srv->pub)
        st->claim = publisher_claim(srv->pub, rq.canon, rq.canon_len,
                                    rq.prompt, rq.n_prompt);
    api_request_free(&rq);

    if (wr->pd_state == PD_PENDING && st->claim) {
        /* the prefill worker advertises these keys once it holds them */
        const struct prefix_claim *c = st->claim;
        wr->pd_keys = malloc(sizeof(uint64_t) * c->nkeys);
        wr->pd_cover = malloc(sizeof(uint32_t) * c->nkeys);
        if (wr->pd_keys && wr->pd_cover) {
            memcpy(wr->pd_keys, c->keys, sizeof(uint64_t) * c->nkeys);
            memcpy(wr->pd_cover, c->cover, sizeof(uint32_t) * c->nkeys);
            wr->pd_nkeys = c->nkeys;
        }
    }
    stream_watch_client(st);
    engine_submit(srv->engine, wr);
    return;

oom:
    api_error_set(&err, 503, "server_error", NULL, NULL, "out of memory");
fail:
    api_request_free(&rq);
    http_send_error(req, &err);
}

/* ------------------------------------------------------------------------ */
/* other endpoints and routing */

static void handle_metrics(struct http_server *srv, struct evhttp_request *req)
{
    size_t len = 0;
    char *text = metrics_render(srv->metrics, srv->cfg.model_name, &len);

    if (text == NULL) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    {
        /* the backend's own samples, through the backend interface */
        char extra[1024];
        int n = backend_metrics_text(&srv->engine->backend, extra, sizeof(extra));
        char *t = n > 0 ? realloc(text, len + (size_t) n + 1) : NULL;

        if (t) {
            memcpy(t + len, extra, (size_t) n + 1);
            text = t;
            len += (size_t) n;
        }
    }
    http_send_body(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct http_server *srv = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    struct api_error err;
    size_t len = 0;
    int want_post = -1;     /* the route's method: 1 POST, 0 GET */

    if (path == NULL)
        path = "/";
    if (strcmp(path, "/v1/completions") == 0) {
        want_post = 1;
        if (cmd == EVHTTP_REQ_POST) {
            handle_generate(srv, req, API_COMPLETIONS);
            return;
        }
    } else if (strcmp(path, "/v1/chat/completions") == 0) {
        want_post = 1;
        if (cmd == EVHTTP_REQ_POST) {
            handle_generate(srv, req, API_CHAT);
            return;
        }
    } else if (strcmp(path, "/v1/models") == 0) {
        want_post = 0;
        if (get) {
            char *body = api_render_models(srv->cfg.model_name, srv->started,
                                           srv->engine->max_model_len, &len);
            http_send_json(req, body, len);
            return;
        }
    } else if (strcmp(path, "/health") == 0) {
        want_post = 0;
        if (get) {
            bool up = atomic_load(&srv->engine->alive);
            http_send_body(req, up ? 200 : 503, "text/plain", NULL, 0);
            return;
        }
    } else if (strcmp(path, "/metrics") == 0) {
        want_post = 0;
        if (get) {
            handle_metrics(srv, req);
            return;
        }
    }
    if (want_post >= 0)
        api_error_set(&err, 405, "invalid_request_error", NULL,
                      "method_not_allowed", "%s accepts %s only", path,
                      want_post ? "POST" : "GET");
    else
        api_error_set(&err, 404, "invalid_request_error", NULL, "not_found",
                      "no route for %s", path);
    http_send_error(req, &err);
}

/* ------------------------------------------------------------------------ */

static void stop_loop(void *arg)
{
    struct http_server *srv = arg;

    event_base_loopexit(srv->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct http_server *srv = arg;

    (void) sig;
    (void) what;
    /* first leave the fleet (HDEL our heartbeat); a second signal does not
     * wait for that */
    if (srv->pub && !srv->stopping) {
        srv->stopping = true;
        publisher_shutdown(srv->pub, stop_loop, srv);
        return;
    }
    stop_loop(srv);
}

/* evhttp's own bind uses a listen backlog of 128, too small for a burst of
 * hundreds of clients connecting at once (the rest retry after a second) */
static struct evhttp_bound_socket *bind_listener(struct http_server *srv,
    const struct worker_config *cfg)
{
    struct evutil_addrinfo hints = { 0 }, *ai = NULL;
    struct evconnlistener *lev;
    char port[16];

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_ADDRCONFIG;
    snprintf(port, sizeof(port), "%d", cfg->listen_port);
    if (evutil_getaddrinfo(cfg->listen_host, port, &hints, &ai) != 0 || ai == NULL) {
        errno = EINVAL;
        return NULL;
    }
    lev = evconnlistener_new_bind(srv->base, NULL, NULL,
                                  LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE
                                  | LEV_OPT_CLOSE_ON_EXEC, 4096,
                                  ai->ai_addr, (int) ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    return lev ? evhttp_bind_listener(srv->http, lev) : NULL;
}

struct http_server *http_server_new(const struct worker_config *cfg,
    struct engine *engine, struct worker_metrics *metrics,
    char *err, int err_len)
{
    struct http_server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL || evthread_use_pthreads() != 0) {
        snprintf(err, (size_t) err_len, "cannot set up libevent threads");
        free(srv);
        return NULL;
    }
    srv->cfg = *cfg;
    srv->engine = engine;
    srv->metrics = metrics;
    srv->started = (long) time(NULL);
    srv->id_salt = (uint64_t) getpid() ^ ((uint64_t) srv->started << 20);
    srv->base = event_base_new();
    srv->http = srv->base ? evhttp_new(srv->base) : NULL;
    if (srv->http == NULL) {
        snprintf(err, (size_t) err_len, "cannot create the HTTP server");
        http_server_free(srv);
        return NULL;
    }
    /* bodies over the limit get our own 413 (OpenAI format); evhttp's cap
     * only protects memory against much larger ones */
    evhttp_set_max_body_size(srv->http, (ev_ssize_t) cfg->max_body_bytes * 4);
    evhttp_set_max_headers_size(srv->http, 64 * 1024);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST
                               | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT
                               | EVHTTP_REQ_DELETE);
    evhttp_set_timeout(srv->http, 600);
    evhttp_set_gencb(srv->http, on_request, srv);

    srv->bound = bind_listener(srv, cfg);
    if (srv->bound == NULL) {
        snprintf(err, (size_t) err_len, "cannot listen on %s:%d: %s",
                 cfg->listen_host, cfg->listen_port, strerror(errno));
        http_server_free(srv);
        return NULL;
    }
    srv->wakeup = event_new(srv->base, -1, 0, http_on_wakeup, srv);
    srv->sigint = evsignal_new(srv->base, SIGINT, on_signal, srv);
    srv->sigterm = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    if (!srv->wakeup || !srv->sigint || !srv->sigterm) {
        snprintf(err, (size_t) err_len, "cannot create events");
        http_server_free(srv);
        return NULL;
    }
    event_add(srv->sigint, NULL);
    event_add(srv->sigterm, NULL);
    if (cfg->redis_url[0]) {
        srv->pub = publisher_new(srv->base, cfg, engine, metrics,
                                 http_server_port(srv), err, (size_t) err_len);
        if (srv->pub == NULL) {
            http_server_free(srv);
            return NULL;
        }
        publisher_start(srv->pub);
    }
    return srv;
}

int http_server_port(const struct http_server *srv)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    evutil_socket_t fd = evhttp_bound_socket_get_fd(srv->bound);

    if (getsockname(fd, (struct sockaddr *) &ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
    return ntohs(((struct sockaddr_in *) &ss)->sin_port);
}

int http_server_run(struct http_server *srv)
{
    signal(SIGPIPE, SIG_IGN);
    return event_base_dispatch(srv->base);
}

void http_server_free(struct http_server *srv)
{
    if (srv == NULL)
        return;
    publisher_free(srv->pub);
    if (srv->http)
        evhttp_free(srv->http);
    if (srv->wakeup)
        event_free(srv->wakeup);
    if (srv->sigint)
        event_free(srv->sigint);
    if (srv->sigterm)
        event_free(srv->sigterm);
    if (srv->base)
        event_base_free(srv->base);
    free(srv->events.ev);
    free(srv->dirty.s);
    free(srv->done.s);
    free(srv);
}
