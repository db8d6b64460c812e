/*
 * Request bodies: a request's messages, preceded by its session's history
 * (earlier turns and the answers they got), as an OpenAI chat or
 * completions body with streaming and usage on.
 */
#ifndef BENCH_BODY_H
#define BENCH_BODY_H

#include <event2/buffer.h>

#include "workload.h"

struct body_opts {
    enum bench_api  api;
    const char     *model;
    int             ignore_eos;     /* vLLM's extension, for fixed lengths */
    int             stream;         /* 0 only for trace dumps */
};

struct history_turn {
    const struct bench_request *req;
    const char                 *answer;
    size_t                      answer_len;
};

void body_render(struct evbuffer *out, const struct body_opts *o,
                 const struct workload *wl, const struct history_turn *hist,
                 size_t n_hist, const struct bench_request *req);

/* JSON string with quotes; escapes only what JSON requires */
void json_add_string(struct evbuffer *out, const char *s, size_t len);

#endif
