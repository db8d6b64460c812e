#include "runner.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http_client.h"
#include "sse.h"

struct req_state {
    struct runner      *run;
    size_t              id;
    double              t_sched, t_send, t_first, t_last, t_done, now;
    struct float_vec    gaps;
    long                chunks, prompt_tokens, output_tokens;
    int                 status, done_seen;
    char               *upstream;
    char               *error;          /* from the stream */
    struct sse_parser   sse;
    struct evbuffer    *err_body;       /* of a non-200 response, capped */
    char               *answer;         /* kept when a later turn needs it */
    size_t              answer_len, answer_cap;
};

struct runner {
    const struct runner_opts   *o;
    const struct workload      *wl;
    struct records             *rec;
    struct event_base          *base;
    struct http_pool           *pool;
    struct req_state           *st;
    size_t                     *starts;     /* requests without predecessor, by t */
    size_t                      n_starts, next_start;
    struct event               *timer;
    double                      t0;
    long                        in_flight, finished;
    struct runner_stats        *stats;
    struct evbuffer            *scratch;
};

static void send_request(struct runner *run, size_t id, double t_sched);

#define ERR_BODY_MAX 512

static void on_write(void *arg, double now)
{
    struct req_state *s = arg;

    s->t_send = now;
}

static void on_head(void *arg, int status, const char *upstream)
{
    struct req_state *s = arg;

    s->status = status;
    if (upstream)
        s->upstream = strdup(upstream);
}

static void keep_answer(struct req_state *s, const char *text, size_t len)
{
    if (s->answer_len + len > s->answer_cap) {
        s->answer_cap = (s->answer_len + len) * 2;
        s->answer = realloc(s->answer, s->answer_cap);
        if (s->answer == NULL)
            abort();
    }
    memcpy(s->answer + s->answer_len, text, len);
    s->answer_len += len;
}

static void on_chunk(void *arg, const struct sse_chunk *c)
{
    struct req_state *s = arg;

    if (c->done)
        s->done_seen = 1;
    if (c->error && s->error == NULL)
        s->error = strdup(c->error);
    if (c->prompt_tokens >= 0)
        s->prompt_tokens = c->prompt_tokens;
    if (c->completion_tokens >= 0)
        s->output_tokens = c->completion_tokens;
    if (c->text == NULL)
        return;
    s->chunks++;
    if (s->t_first == 0)
        s->t_first = s->now;
    else
        float_vec_push(&s->gaps, (float) ((s->now - s->t_last) * 1000.0));
    s->t_last = s->now;
    if (s->run->wl->reqs[s->id].next >= 0)
        keep_answer(s, c->text, c->text_len);
}

static void on_body(void *arg, const char *bytes, size_t len, double now)
{
    struct req_state *s = arg;

    if (s->status == 200) {
        s->now = now;
        sse_feed(&s->sse, bytes, len);
    } else if (evbuffer_get_length(s->err_body) < ERR_BODY_MAX) {
        evbuffer_add(s->err_body, bytes, len);
    }
}

struct chained {
    struct runner  *run;
    size_t          id;
    double          t_sched;
};

static void on_think_done(evutil_socket_t fd, short what, void *arg)
{
    struct chained *c = arg;

    (void) fd;
    (void) what;
    send_request(c->run, c->id, c->t_sched);
    free(c);
}

static const char *final_error(struct req_state *s, const char *transport,
                               char *buf, size_t len)
{
    if (transport)
        return transport;
    if (s->status != 200) {
        size_t n = evbuffer_get_length(s->err_body);
        const char *b = (const char *) evbuffer_pullup(s->err_body, -1);

        n = n > ERR_BODY_MAX ? ERR_BODY_MAX : n;
        snprintf(buf, len, "HTTP %d: %.*s", s->status, (int) n, b ? b : "");
        for (char *p = buf; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        return buf;
    }
    if (s->error)
        return s->error;
    if (!s->done_seen)
        return "stream ended without [DONE]";
    return NULL;
}

static void next_burst(struct runner *run);

static void on_done(void *arg, const char *error, double now)
{
    struct req_state *s = arg;
    struct runner *run = s->run;
    const struct bench_request *q = &run->wl->reqs[s->id];
    char buf[ERR_BODY_MAX + 64];
    struct request_result res = {
        .id = s->id, .req = q, .t_sched = s->t_sched,
        .t_send = s->t_send ? s->t_send : s->t_sched,
        .t_first = s->t_first, .t_last = s->t_last, .t_done = now,
        .gaps = s->gaps.v, .n_gaps = s->gaps.n, .chunks = s->chunks,
        .prompt_tokens = s->prompt_tokens, .output_tokens = s->output_tokens,
        .status = s->status, .upstream = s->upstream,
    };

    res.error = final_error(s, error, buf, sizeof(buf));
    s->t_done = now;
    records_add(run->rec, &res);
    free(s->gaps.v);
    s->gaps = (struct float_vec) { 0 };
    free(s->upstream);
    free(s->error);
    s->upstream = s->error = NULL;
    sse_free(&s->sse);
    evbuffer_free(s->err_body);
    s->err_body = NULL;
    run->in_flight--;
    run->finished++;

    /* the session goes on whatever this turn got: the request count of a
     * run does not depend on failures */
    if (q->next >= 0) {
        struct chained *c = malloc(sizeof(*c));
        double after = run->wl->reqs[q->next].after;
        struct timeval tv = { (time_t) after,
                              (suseconds_t) ((after - (double) (time_t) after) * 1e6) };

        *c = (struct chained) { run, (size_t) q->next, now + after };
        event_base_once(run->base, -1, EV_TIMEOUT, on_think_done, c, &tv);
    }
    if (run->o->burst > 0 && run->in_flight == 0)
        next_burst(run);
    if (run->finished == (long) run->wl->n)
        event_base_loopexit(run->base, NULL);
}

static const struct http_handler handler = { on_write, on_head, on_body, on_done };

static void send_request(struct runner *run, size_t id, double t_sched)
{
    const struct runner_opts *o = run->o;
    const struct workload *wl = run->wl;
    const struct bench_request *q = &wl->reqs[id];
    struct req_state *s = &run->st[id];
    struct history_turn *hist = NULL;
    size_t n_hist = 0;
    struct evbuffer *body = evbuffer_new(), *msg = run->scratch;

    for (int p = q->prev; p >= 0; p = wl->reqs[p].prev)
        n_hist++;
    if (n_hist) {
        size_t k = n_hist;

        hist = calloc(n_hist, sizeof(*hist));
        for (int p = q->prev; p >= 0; p = wl->reqs[p].prev)
            hist[--k] = (struct history_turn) { &wl->reqs[p], run->st[p].answer,
                                                run->st[p].answer_len };
    }
    body_render(body, &o->body, wl, hist, n_hist, q);
    free(hist);

    evbuffer_drain(msg, evbuffer_get_length(msg));
    evbuffer_add_printf(msg, "POST %s HTTP/1.1\r\nHost: %s:%s\r\n"
                        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                        /* a stable key per user or session, for hash-based
                         * balancers (nginx: hash $http_x_session_id) */
                        "X-Session-Id: %d-%d\r\n",
                        o->path, o->host, o->port, q->group, q->session);
    for (int i = 0; i < o->n_headers; i++)
        evbuffer_add_printf(msg, "%s\r\n", o->headers[i]);
    evbuffer_add_printf(msg, "Content-Length: %zu\r\n\r\n", evbuffer_get_length(body));
    evbuffer_add_buffer(msg, body);
    evbuffer_free(body);

    s->run = run;
    s->id = id;
    s->t_sched = t_sched;
    s->prompt_tokens = s->output_tokens = -1;
    s->err_body = evbuffer_new();
    sse_init(&s->sse, on_chunk, s);
    run->in_flight++;
    run->stats->sent++;
    size_t len = evbuffer_get_length(msg);

    http_pool_send(run->pool, (const char *) evbuffer_pullup(msg, -1), len, &handler, s);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct runner *run = arg;
    double now = clock_now();

    (void) fd;
    (void) what;
    /* everything due (within 0.2 ms) goes now; a late timer sends the
     * backlog at once, and the lag shows in the records */
    while (run->next_start < run->n_starts) {
        size_t id = run->starts[run->next_start];
        double due = run->t0 + run->wl->reqs[id].t;

        if (due > now + 0.0002) {
            double wait = due - now;
            struct timeval tv = { (time_t) wait,
                                  (suseconds_t) ((wait - (double) (time_t) wait) * 1e6) };

            evtimer_add(run->timer, &tv);
            return;
        }
        run->next_start++;
        send_request(run, id, due);
    }
}

static void next_burst(struct runner *run)
{
    double now = clock_now();

    for (long i = 0; i < run->o->burst && run->next_start < run->n_starts; i++)
        send_request(run, run->starts[run->next_start++], now);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct runner *run = arg;

    (void) fd;
    (void) what;
    run->stats->interrupted = 1;
    event_base_loopbreak(run->base);
}

static const struct workload *sort_wl;

static int by_time(const void *a, const void *b)
{
    const struct bench_request *x = &sort_wl->reqs[*(const size_t *) a];
    const struct bench_request *y = &sort_wl->reqs[*(const size_t *) b];

    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return *(const size_t *) a < *(const size_t *) b ? -1 : 1;
}

int runner_run(const struct runner_opts *o, const struct workload *wl,
               struct records *rec, struct runner_stats *stats,
               char *err, size_t errlen)
{
    struct runner run = { .o = o, .wl = wl, .rec = rec, .stats = stats };
    struct event *sigint;

    memset(stats, 0, sizeof(*stats));
    signal(SIGPIPE, SIG_IGN);
    run.base = event_base_new();
    run.pool = http_pool_new(run.base, o->host, o->port, o->max_conns, o->timeout_s,
                             err, errlen);
    if (run.pool == NULL) {
        event_base_free(run.base);
        return -1;
    }
    run.st = calloc(wl->n, sizeof(*run.st));
    run.starts = malloc(wl->n * sizeof(size_t));
    for (size_t i = 0; i < wl->n; i++)
        if (wl->reqs[i].prev < 0)
            run.starts[run.n_starts++] = i;
    sort_wl = wl;
    qsort(run.starts, run.n_starts, sizeof(size_t), by_time);
    run.scratch = evbuffer_new();
    run.timer = evtimer_new(run.base, on_timer, &run);
    sigint = evsignal_new(run.base, SIGINT, on_signal, &run);
    event_add(sigint, NULL);

    run.t0 = clock_now();
    rec->t0 = run.t0;
    if (o->burst > 0)
        next_burst(&run);
    else
        on_timer(-1, 0, &run);
    if (wl->n > 0)
        event_base_dispatch(run.base);

    stats->connections = http_pool_connections_opened(run.pool);
    stats->finished = run.finished;
    for (size_t i = 0; i < wl->n; i++)
        free(run.st[i].answer);
    /* requests still in flight after an interrupt are abandoned with the
     * process; the pool only closes its idle connections */
    http_pool_free(run.pool);
    event_free(run.timer);
    event_free(sigint);
    evbuffer_free(run.scratch);
    free(run.starts);
    free(run.st);
    event_base_free(run.base);
    return 0;
}
