#include "body.h"

#include <string.h>

void json_add_string(struct evbuffer *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    evbuffer_add(out, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        evbuffer_add(out, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':  evbuffer_add(out, "\\\"", 2); break;
        case '\\': evbuffer_add(out, "\\\\", 2); break;
        case '\n': evbuffer_add(out, "\\n", 2); break;
        case '\r': evbuffer_add(out, "\\r", 2); break;
        case '\t': evbuffer_add(out, "\\t", 2); break;
        default: {
            char u[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

            evbuffer_add(out, u, 6);
        }
        }
    }
    evbuffer_add(out, s + run, len - run);
    evbuffer_add(out, "\"", 1);
}

static void add_message(struct evbuffer *out, int *first, const char *role,
                        const char *text, size_t len)
{
    evbuffer_add_printf(out, "%s{\"role\":", *first ? "" : ",");
    json_add_string(out, role, strlen(role));
    evbuffer_add_printf(out, ",\"content\":");
    json_add_string(out, text, len);
    evbuffer_add(out, "}", 1);
    *first = 0;
}

static void add_messages(struct evbuffer *out, const struct workload *wl,
                         const struct history_turn *hist, size_t n_hist,
                         const struct bench_request *req)
{
    int first = 1;

    evbuffer_add_printf(out, "\"messages\":[");
    for (size_t h = 0; h < n_hist; h++) {
        const struct bench_request *r = hist[h].req;

        for (int i = 0; i < r->n_msgs; i++) {
            const struct bench_msg *m = &wl->msgs[r->msg_first + (size_t) i];

            add_message(out, &first, m->role, m->text, m->len);
        }
        add_message(out, &first, "assistant", hist[h].answer, hist[h].answer_len);
    }
    for (int i = 0; i < req->n_msgs; i++) {
        const struct bench_msg *m = &wl->msgs[req->msg_first + (size_t) i];

        add_message(out, &first, m->role, m->text, m->len);
    }
    evbuffer_add(out, "]", 1);
}

/* completions: the texts concatenated, so their lengths are the prompt's */
static void add_prompt(struct evbuffer *out, const struct workload *wl,
                       const struct history_turn *hist, size_t n_hist,
                       const struct bench_request *req)
{
    struct evbuffer *text = evbuffer_new();

    for (size_t h = 0; h <= n_hist; h++) {
        const struct bench_request *r = h < n_hist ? hist[h].req : req;

        for (int i = 0; i < r->n_msgs; i++) {
            const struct bench_msg *m = &wl->msgs[r->msg_first + (size_t) i];

            evbuffer_add(text, m->text, m->len);
        }
        if (h < n_hist)
            evbuffer_add(text, hist[h].answer, hist[h].answer_len);
    }
    size_t len = evbuffer_get_length(text);

    evbuffer_add_printf(out, "\"prompt\":");
    json_add_string(out, (const char *) evbuffer_pullup(text, -1), len);
    evbuffer_free(text);
}

void body_render(struct evbuffer *out, const struct body_opts *o,
                 const struct workload *wl, const struct history_turn *hist,
                 size_t n_hist, const struct bench_request *req)
{
    evbuffer_add_printf(out, "{\"model\":");
    json_add_string(out, o->model, strlen(o->model));
    evbuffer_add(out, ",", 1);
    if (o->api == API_CHAT)
        add_messages(out, wl, hist, n_hist, req);
    else
        add_prompt(out, wl, hist, n_hist, req);
    evbuffer_add_printf(out, ",\"max_tokens\":%d", req->max_tokens);
    if (o->ignore_eos)
        evbuffer_add_printf(out, ",\"ignore_eos\":true");
    if (o->stream)
        evbuffer_add_printf(out, ",\"stream\":true,"
                            "\"stream_options\":{\"include_usage\":true}");
    evbuffer_add(out, "}", 1);
}
