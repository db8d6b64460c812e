/*
 * Server-sent events from an OpenAI streaming response: splits the body
 * into events and reads each chunk's text, usage and error.
 *
 * Text chunks take a fast path (the "content" or "text" string is located
 * and decoded without parsing the rest); chunks that carry usage or an
 * error are parsed with jansson.  One SSE event is one chunk; the worker
 * sends one token per chunk, other servers may send several, and every
 * figure llmd-bench derives per chunk (inter-token gaps) is per chunk.
 */
#ifndef BENCH_SSE_H
#define BENCH_SSE_H

#include <stddef.h>

struct sse_chunk {
    const char *text;           /* decoded content; NULL when none */
    size_t      text_len;
    long        prompt_tokens;  /* from usage, else -1 */
    long        completion_tokens;
    const char *error;          /* an error event's message, else NULL */
    int         done;           /* data: [DONE] */
};

typedef void (*sse_chunk_cb)(void *arg, const struct sse_chunk *chunk);

struct sse_parser {
    char       *line;           /* the incomplete line carried over */
    size_t      line_len, line_cap;
    char       *data;           /* the current event's data lines */
    size_t      data_len, data_cap;
    char       *scratch;        /* decoded text / error message */
    size_t      scratch_cap;
    sse_chunk_cb cb;
    void       *arg;
};

void sse_init(struct sse_parser *p, sse_chunk_cb cb, void *arg);
void sse_feed(struct sse_parser *p, const char *bytes, size_t len);
void sse_free(struct sse_parser *p);

/* exposed for the tests */
void sse_parse_chunk(struct sse_parser *p, const char *data, size_t len,
                     struct sse_chunk *out);

#endif
