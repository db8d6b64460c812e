/*
 * llmd-loadgen: closed-loop streaming load for one worker.
 *
 * Each of --clients connections sends streaming completion requests back to
 * back (keep-alive) for --duration seconds and counts the streamed tokens:
 * every SSE event carrying text has "finish_reason":null, and the worker
 * never splits an event across HTTP chunks, so counting that marker per
 * chunk counts tokens.  Prints one summary line.
 *
 *   llmd-loadgen --host 127.0.0.1 --port 8000 --clients 64 --duration 10 \
 *                --max-tokens 256 --prompt-bytes 64
 */

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct load {
    struct event_base  *base;
    const char         *host;
    int                 port;
    int                 max_tokens;
    char               *body;
    size_t              body_len;
    double              deadline;
    int                 active;
    unsigned long long  tokens;
    unsigned long long  requests;
    unsigned long long  errors;
};

struct client {
    struct load                *load;
    struct evhttp_connection   *conn;
    unsigned long long          tokens;     /* of the current request */
};

static const char marker[] = "\"finish_reason\":null";

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static void send_request(struct client *c);

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct client *c = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *p = (const char *) evbuffer_pullup(in, -1);
    const char *end = p + len;

    while (p && (p = memmem(p, (size_t) (end - p), marker, sizeof(marker) - 1))) {
        c->tokens++;
        p += sizeof(marker) - 1;
    }
    evbuffer_drain(in, len);
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct client *c = arg;
    struct load *l = c->load;

    if (req == NULL || evhttp_request_get_response_code(req) != 200
        || c->tokens != (unsigned long long) l->max_tokens)
        l->errors++;
    l->tokens += c->tokens;
    l->requests++;
    c->tokens = 0;
    if (now() < l->deadline) {
        send_request(c);
    } else if (--l->active == 0) {
        event_base_loopexit(l->base, NULL);
    }
}

static void send_request(struct client *c)
{
    struct load *l = c->load;
    struct evhttp_request *req = evhttp_request_new(on_done, c);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_request_set_chunked_cb(req, on_chunk);
    evhttp_add_header(h, "Host", l->host);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), l->body, l->body_len);
    if (evhttp_make_request(c->conn, req, EVHTTP_REQ_POST, "/v1/completions") != 0) {
        l->errors++;
        if (--l->active == 0)
            event_base_loopexit(l->base, NULL);
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "host", required_argument, NULL, 'h' },
        { "port", required_argument, NULL, 'p' },
        { "clients", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' },
        { "max-tokens", required_argument, NULL, 't' },
        { "prompt-bytes", required_argument, NULL, 'b' },
        { NULL, 0, NULL, 0 }
    };
    struct load l = { .host = "127.0.0.1", .port = 8000, .max_tokens = 256 };
    int clients = 64, prompt_bytes = 64, opt;
    double duration = 10, t0, elapsed;
    struct client *cs;
    char *prompt;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'h': l.host = optarg; break;
        case 'p': l.port = atoi(optarg); break;
        case 'c': clients = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 't': l.max_tokens = atoi(optarg); break;
        case 'b': prompt_bytes = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: llmd-loadgen [--host H] [--port P] [--clients N] "
                    "[--duration S] [--max-tokens N] [--prompt-bytes N]\n");
            return 2;
        }
    }
    if (clients < 1 || l.max_tokens < 1 || prompt_bytes < 1 || duration <= 0) {
        fprintf(stderr, "llmd-loadgen: bad arguments\n");
        return 2;
    }
    prompt = malloc((size_t) prompt_bytes + 1);
    l.body = malloc((size_t) prompt_bytes + 128);
    cs = calloc((size_t) clients, sizeof(*cs));
    l.base = event_base_new();
    if (!prompt || !l.body || !cs || !l.base)
        return 1;
    for (int i = 0; i < prompt_bytes; i++)
        prompt[i] = (char) ('a' + i % 26);
    prompt[prompt_bytes] = '\0';
    l.body_len = (size_t) sprintf(l.body, "{\"prompt\":\"%s\",\"max_tokens\":%d,"
                                  "\"stream\":true}", prompt, l.max_tokens);

    t0 = now();
    l.deadline = t0 + duration;
    l.active = clients;
    for (int i = 0; i < clients; i++) {
        cs[i].load = &l;
        cs[i].conn = evhttp_connection_base_new(l.base, NULL, l.host,
                                                (unsigned short) l.port);
        send_request(&cs[i]);
    }
    event_base_dispatch(l.base);
    elapsed = now() - t0;

    printf("clients %d  requests %llu  errors %llu  tokens %llu  seconds %.3f  "
           "tokens/s %.0f\n", clients, l.requests, l.errors, l.tokens, elapsed,
           (double) l.tokens / elapsed);
    for (int i = 0; i < clients; i++)
        evhttp_connection_free(cs[i].conn);
    event_base_free(l.base);
    free(cs);
    free(prompt);
    free(l.body);
    return l.errors ? 1 : 0;
}
