/*
 * A generation's response: see http_server.c for the life of a stream.
 * Engine events become SSE chunks (one HTTP chunk per stream per wake-up,
 * however many tokens it holds) or one JSON body at FINISH.
 */

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "fleet/publisher.h"
#include "http_internal.h"

static void add_owned(struct evbuffer *out, char *s, size_t len)
{
    if (s) {
        evbuffer_add(out, s, len);
        free(s);
    }
}

/* ------------------------------------------------------------------------ */
/* stream lifecycle */

static void stream_client_gone(struct stream *st)
{
    if (st->closed || st->finished)
        return;
    st->closed = true;
    engine_cancel(st->srv->engine, st->wr);
}

static void on_connection_close(struct evhttp_connection *evcon, void *arg)
{
    struct stream *st = arg;

    (void) evcon;
    /* evhttp is freeing the connection (and will close the socket): drop
     * everything that refers to either */
    st->evcon = NULL;
    if (st->close_watch) {
        event_free(st->close_watch);
        st->close_watch = NULL;
    }
    stream_client_gone(st);
}

static void on_peer_closed(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    stream_client_gone(arg);
}

void stream_watch_client(struct stream *st)
{
    struct bufferevent *bev;
    evutil_socket_t fd;

    st->evcon = evhttp_request_get_connection(st->req);
    if (st->evcon == NULL)
        return;
    evhttp_connection_set_closecb(st->evcon, on_connection_close, st);
    bev = evhttp_connection_get_bufferevent(st->evcon);
    fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return;
    st->close_watch = event_new(st->srv->base, fd, EV_CLOSED, on_peer_closed, st);
    if (st->close_watch && event_add(st->close_watch, NULL) != 0) {
        event_free(st->close_watch);
        st->close_watch = NULL;
    }
}

static void stream_unwatch(struct stream *st)
{
    if (st->close_watch) {
        event_free(st->close_watch);
        st->close_watch = NULL;
    }
    if (st->evcon) {
        evhttp_connection_set_closecb(st->evcon, NULL, NULL);
        st->evcon = NULL;
    }
}

void stream_free(struct stream *st)
{
    stream_unwatch(st);
    if (st->out)
        evbuffer_free(st->out);
    if (st->lp_text)
        evbuffer_free(st->lp_text);
    free(st->prefix);
    prefix_claim_free(st->claim);
    request_free(st->wr);
    free(st);
}

struct stream *stream_new(struct http_server *srv,
    struct evhttp_request *req, const struct api_request *rq,
    struct worker_request *wr)
{
    struct stream *st = calloc(1, sizeof(*st));
    char prefix[2048];
    int n;

    if (st == NULL)
        return NULL;
    st->srv = srv;
    st->req = req;
    st->wr = wr;
    st->kind = rq->kind;
    st->sse = rq->stream;
    st->include_usage = rq->include_usage;
    st->lp = st->sse && api_wants_logprobs(wr);
    st->created = (long) time(NULL);
    snprintf(st->id, sizeof(st->id), "%s-%016" PRIx64,
             rq->kind == API_CHAT ? "chatcmpl" : "cmpl",
             (uint64_t) XXH3_64bits_withSeed(&wr->id, sizeof(wr->id), srv->id_salt));
    st->out = evbuffer_new();
    n = api_chunk_prefix(rq->kind, st->id, st->created, srv->cfg.model_name,
                         prefix, sizeof(prefix));
    if (st->out == NULL || n < 0 || (size_t) n >= sizeof(prefix)
        || (st->prefix = malloc((size_t) n)) == NULL) {
        if (st->out)
            evbuffer_free(st->out);
        free(st);
        return NULL;
    }
    memcpy(st->prefix, prefix, (size_t) n);
    st->prefix_len = (size_t) n;
    st->suffix = api_chunk_suffix_for(rq->kind, &st->suffix_len);

    /* the role chunk waits for the first token, with the headers */
    if (st->sse && rq->kind == API_CHAT) {
        size_t len = 0;
        char *role = api_render_role_chunk(st->id, st->created,
                                           srv->cfg.model_name, &len);
        add_owned(st->out, role, len);
    }
    return st;
}

/* ------------------------------------------------------------------------ */
/* engine events -> HTTP */

static void add_sse_text(struct stream *st, const char *text, int len)
{
    char buf[2048];
    size_t n = st->prefix_len;

    if (n + 6 * (size_t) len + st->suffix_len > sizeof(buf)) {
        char esc[6 * ENGINE_EVENT_TEXT];
        evbuffer_add(st->out, st->prefix, st->prefix_len);
        evbuffer_add(st->out, esc, json_escape(esc, text, (size_t) len));
        evbuffer_add(st->out, st->suffix, st->suffix_len);
        return;
    }
    /* one copy into the buffer instead of three small ones */
    memcpy(buf, st->prefix, n);
    n += json_escape(buf + n, text, (size_t) len);
    memcpy(buf + n, st->suffix, st->suffix_len);
    evbuffer_add(st->out, buf, n + st->suffix_len);
}

/* With logprobs: a chunk with the text gathered so far and the logprobs of
 * the tokens [lp_sent, upto) that make it up. */
static void add_sse_logprobs(struct stream *st, int upto)
{
    size_t n = st->lp_text ? evbuffer_get_length(st->lp_text) : 0;
    const char *text = n ? (const char *) evbuffer_pullup(st->lp_text, -1) : "";
    size_t len = 0;
    char *s;

    if (n == 0 && upto <= st->lp_sent)
        return;
    s = api_render_logprob_chunk(st->kind, st->id, st->created,
                                 st->srv->cfg.model_name, text ? text : "", n,
                                 st->wr, st->lp_sent, upto > st->lp_sent
                                 ? upto : st->lp_sent, &st->lp_offset, &len);
    add_owned(st->out, s, len);
    if (n)
        evbuffer_drain(st->lp_text, n);
    if (upto > st->lp_sent)
        st->lp_sent = upto;
}

/* The worker's own time to first token, for the gateway's calibration.
 * Only read once the engine has announced the first token. */
static void add_ttft_header(struct stream *st)
{
    char v[32];

    if (st->wr->first_token_at == 0)
        return;
    snprintf(v, sizeof(v), "%.3f",
             (st->wr->first_token_at - st->wr->arrival) * 1e3);
    evhttp_add_header(evhttp_request_get_output_headers(st->req),
                      "X-LLMD-TTFT-Ms", v);
}

/* Headers go out with the first token, so that a proxy's time to the
 * response header is the time to first token. */
static void start_sse(struct stream *st)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(st->req);

    st->started = true;
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    add_ttft_header(st);
    evhttp_send_reply_start(st->req, 200, "OK");
    if (evbuffer_get_length(st->out) > 0)
        evhttp_send_reply_chunk(st->req, st->out);
}

static void finish_sse(struct stream *st)
{
    struct worker_request *wr = st->wr;
    const char *model = st->srv->cfg.model_name;
    size_t len = 0;
    char *s;

    if (st->lp && wr->finish != FINISH_ABORT)
        add_sse_logprobs(st, wr->n_generated);
    s = api_render_finish_chunk(st->kind, st->id, st->created, model,
                                wr->finish, &len);
    add_owned(st->out, s, len);
    if (st->include_usage) {
        s = api_render_usage_chunk(st->kind, st->id, st->created, model,
                                   wr->n_prompt, wr->n_generated, &len);
        add_owned(st->out, s, len);
    }
    evbuffer_add(st->out, "data: [DONE]\n\n", 14);
    st->dirty = true;
}

static void finish_plain(struct stream *st)
{
    struct worker_request *wr = st->wr;
    size_t len = 0, text_len = evbuffer_get_length(st->out);
    const char *text = (const char *) evbuffer_pullup(st->out, -1);
    char *body;

    if (wr->finish == FINISH_ABORT) {
        struct api_error err;
        if (wr->error && wr->pd_peer[0])
            api_error_set(&err, 502, "server_error", NULL, "kv_transfer_failed",
                          "the KV transfer from the prefill worker failed: %s",
                          wr->error);
        else if (wr->error)
            api_error_set(&err, 500, "server_error", NULL, "backend_error",
                          "%s", wr->error);
        else
            api_error_set(&err, 503, "server_error", NULL, NULL,
                          "the request was aborted by the worker");
        http_send_error(st->req, &err);
        return;
    }
    body = api_render_response(st->kind, st->id, st->created,
                               st->srv->cfg.model_name, text ? text : "",
                               text_len, wr->finish, wr->n_prompt,
                               wr->n_generated, &len);
    body = api_attach_logprobs(st->kind, body, &len, wr);
    if (wr->n_generated > 0)
        add_ttft_header(st);
    http_send_json(st->req, body, len);
}

static void handle_event(struct http_server *srv, const struct engine_event *ev)
{
    struct stream *st = ev->req->client;

    if (ev->kind == ENGINE_FIRST) {
        if (st->claim) {
            publisher_prefilled(srv->pub, st->claim);
            st->claim = NULL;
        }
        if (st->sse && !st->closed && !st->started)
            start_sse(st);
        return;
    }
    if (ev->kind == ENGINE_TEXT) {
        if (st->closed)
            return;
        if (st->sse) {
            if (!st->lp) {
                add_sse_text(st, ev->text, ev->len);
            } else {
                if (st->lp_text == NULL)
                    st->lp_text = evbuffer_new();
                if (st->lp_text)
                    evbuffer_add(st->lp_text, ev->text, ev->len);
                if (ev->lp_upto <= st->lp_sent)
                    return;         /* more of this piece to come */
                add_sse_logprobs(st, ev->lp_upto);
            }
            if (!st->dirty) {
                st->dirty = true;
                if (stream_list_push(&srv->dirty, st) != 0)
                    st->dirty = false;  /* sent with the next event */
            }
        } else {
            evbuffer_add(st->out, ev->text, ev->len);
        }
        return;
    }

    /* FINISH: the engine is done with the request */
    st->finished = true;
    stream_unwatch(st);
    if (st->closed) {
        /* frees the request whether or not evhttp still has a connection */
        if (st->sse && st->started)
            evhttp_send_reply_end(st->req);
        else
            evhttp_send_error(st->req, 499, "Client Closed Request");
        stream_free(st);
        return;
    }
    if (!st->sse || (!st->started && st->wr->error != NULL)) {
        finish_plain(st);
        stream_free(st);
        return;
    }
    if (!st->started)
        start_sse(st);
    finish_sse(st);
    if (stream_list_push(&srv->done, st) != 0) {
        evhttp_send_reply_chunk(st->req, st->out);
        evhttp_send_reply_end(st->req);
        st->dirty = false;
        /* it may still be on the dirty list: leak it rather than risk a
         * dangling pointer (only when memory is exhausted) */
        return;
    }
}

void http_on_wakeup(evutil_socket_t fd, short what, void *arg)
{
    struct http_server *srv = arg;

    (void) fd;
    (void) what;
    engine_take_events(srv->engine, &srv->events);
    for (int i = 0; i < srv->events.n; i++)
        handle_event(srv, &srv->events.ev[i]);

    /* one HTTP chunk per stream per wakeup, however many tokens it holds */
    for (int i = 0; i < srv->dirty.n; i++) {
        struct stream *st = srv->dirty.s[i];
        if (st->dirty && !st->closed && st->started)
            evhttp_send_reply_chunk(st->req, st->out);
        st->dirty = false;
    }
    srv->dirty.n = 0;
    for (int i = 0; i < srv->done.n; i++) {
        struct stream *st = srv->done.s[i];
        if (evbuffer_get_length(st->out) > 0)
            evhttp_send_reply_chunk(st->req, st->out);
        evhttp_send_reply_end(st->req);
        stream_free(st);
    }
    srv->done.n = 0;
}

void http_server_notify(void *arg)
{
    struct http_server *srv = arg;

    event_active(srv->wakeup, EV_READ, 0);
}
