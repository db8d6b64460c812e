/*
 * The OpenAI-compatible wire format: request bodies in, response bodies,
 * SSE chunks and errors out.  No I/O here; http_server.c does that.
 */

#ifndef LLMD_OPENAI_API_H
#define LLMD_OPENAI_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/request.h"

enum api_kind { API_COMPLETIONS, API_CHAT };

struct api_error {
    int         status;             /* HTTP status */
    char        message[512];
    const char *type;               /* invalid_request_error, ... */
    const char *param;              /* NULL: JSON null */
    const char *code;               /* NULL: JSON null */
};

struct api_request {
    enum api_kind       kind;
    bool                stream;
    bool                include_usage;
    char                model[256];     /* "" when absent */
    int                 max_tokens;     /* -1 when absent */
    bool                has_seed;
    bool                has_priority;
    struct gen_params   params;         /* max_tokens filled in later */
    int32_t            *prompt;         /* token ids */
    int                 n_prompt;
    char               *canon;          /* canonical prompt bytes */
    size_t              canon_len;      /* (common/llmd_canon.h) */
};

/* With a real model, prompts are tokenized by its vocabulary and chat
 * messages rendered with its chat format (model_prompt.h); without one they
 * are the canonical bytes, one token per byte.  Set once, before serving. */
struct model_prompt;
void api_use_model_prompt(const struct model_prompt *mp);
/* the model prompt in use (NULL: the byte-level tokenizer) */
const struct model_prompt *api_model_prompt(void);

/* Parse and check a body; 0, or -1 with err filled in (status 400). */
int api_parse_request(enum api_kind kind, const char *body, size_t len,
    struct api_request *out, struct api_error *err);
void api_request_free(struct api_request *rq);

/* Settle max_tokens against the context; -1 with a 400 naming the limit. */
int api_fit_context(struct api_request *rq, int max_model_len,
    struct api_error *err);

void api_error_set(struct api_error *err, int status, const char *type,
    const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Rendered bodies are malloc'd; *len gets their length. */
char *api_render_error(const struct api_error *err, size_t *len);
char *api_render_response(enum api_kind kind, const char *id, long created,
    const char *model, const char *text, size_t text_len,
    enum finish_reason why, int prompt_tokens, int completion_tokens,
    size_t *len);
/* With a model vocabulary and logprobs asked for: body with the choice's
 * "logprobs" filled in (OpenAI's shape for each API); body itself
 * otherwise.  Frees body when it returns a new one. */
char *api_attach_logprobs(enum api_kind kind, char *body, size_t *len,
    const struct worker_request *r);
/* Whether r's response carries logprobs (asked for, model vocabulary). */
bool api_wants_logprobs(const struct worker_request *r);
/* A streamed chunk with text and the logprobs of generated tokens
 * [from, to); *offset is the completions text_offset of the first and is
 * advanced past the last.  "data: {...}\n\n", malloc'd. */
char *api_render_logprob_chunk(enum api_kind kind, const char *id,
    long created, const char *model, const char *text, size_t text_len,
    const struct worker_request *r, int from, int to, int *offset,
    size_t *len);
char *api_render_models(const char *model, long created, int max_model_len,
    size_t *len);

/* Streaming.  A text chunk is  prefix + json_escape(text) + suffix, where
 * the prefix is rendered once per stream. */
int api_chunk_prefix(enum api_kind kind, const char *id, long created,
    const char *model, char *buf, size_t size);
const char *api_chunk_suffix_for(enum api_kind kind, size_t *len);
/* The first chat chunk (role), the last chunk (finish_reason) and the usage
 * chunk; each is "data: {...}\n\n", malloc'd. */
char *api_render_role_chunk(const char *id, long created, const char *model,
    size_t *len);
char *api_render_finish_chunk(enum api_kind kind, const char *id, long created,
    const char *model, enum finish_reason why, size_t *len);
char *api_render_usage_chunk(enum api_kind kind, const char *id, long created,
    const char *model, int prompt_tokens, int completion_tokens, size_t *len);

/* JSON string escaping into dst (room for 6 * n bytes); returns the length. */
size_t json_escape(char *dst, const char *src, size_t n);

#endif
