/*
 * OpenAI-compatible request parsing (jansson); responses are rendered in
 * openai_render.c.
 *
 * The prompt is written in the canonical form the gateway hashes for
 * prefix routing, through common/llmd_canon.h, so both sides agree byte for
 * byte; the request keeps those bytes for its prefix claim.  Without a real
 * model the byte-level tokenizer makes each byte one token (token ids are
 * taken as they are); with one, its vocabulary and chat format make the
 * tokens (model_prompt.h).
 */

#include "openai_api.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmd_canon.h"
#include "model/tokenizer.h"
#include "chat_prompt.h"

/* the served model's tokenizer and chat format; NULL: canonical bytes */
static const struct model_prompt *served_model;


void api_use_model_prompt(const struct model_prompt *mp)
{
    served_model = mp;
}

const struct model_prompt *api_model_prompt(void)
{
    return served_model;
}

void api_error_set(struct api_error *err, int status, const char *type,
    const char *param, const char *code, const char *fmt, ...)
{
    va_list ap;

    err->status = status;
    err->type = type;
    err->param = param;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

#define BAD(param, ...) \
    (api_error_set(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__), -1)

/* ------------------------------------------------------------------------ */
/* a growable byte buffer for the canonical prompt */

struct bytes {
    char   *p;
    size_t  len;
    size_t  cap;
};

static int bytes_add(struct bytes *b, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        if ((p = realloc(b->p, cap)) == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

/* the canonical form's sink: a failed allocation is remembered, not lost */
struct canon_buf {
    struct bytes    b;
    bool            nomem;
};

static void canon_write(void *ctx, const void *data, size_t len)
{
    struct canon_buf *cb = ctx;

    if (!cb->nomem && bytes_add(&cb->b, data, len))
        cb->nomem = true;
}

/* ------------------------------------------------------------------------ */
/* prompt forms */

/* Token ids; kept as the prompt only without a real model (whose own
 * vocabulary, in model_prompt_build, checks them otherwise). */
static int ids_prompt(struct api_request *rq, json_t *arr,
    const llmd_canon_sink_t *sink, bool keep, struct api_error *err)
{
    size_t n = json_array_size(arr), i;
    json_t *v;

    if (keep && (rq->prompt = malloc(sizeof(int32_t) * (n ? n : 1))) == NULL)
        return BAD("prompt", "out of memory");
    json_array_foreach(arr, i, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || (keep && id >= TOKENIZER_VOCAB)
            || id > INT32_MAX)
            return BAD("prompt", "prompt token ids must be integers in "
                       "[0, %d)", keep ? TOKENIZER_VOCAB : INT32_MAX);
        llmd_canon_token(sink, (uint32_t) id);
        if (keep)
            rq->prompt[i] = (int32_t) id;
    }
    if (keep)
        rq->n_prompt = (int) n;
    return 0;
}

static int completion_prompt(struct api_request *rq, json_t *prompt,
    const llmd_canon_sink_t *sink, bool keep_ids, struct api_error *err)
{
    json_t *first;

    if (json_is_string(prompt)) {
        llmd_canon_text(sink, json_string_value(prompt),
                        json_string_length(prompt));
        return 0;
    }
    if (!json_is_array(prompt) || json_array_size(prompt) == 0)
        return BAD("prompt", "'prompt' must be a string, an array of one "
                   "string, or an array of token ids");
    first = json_array_get(prompt, 0);
    if (json_is_integer(first))
        return ids_prompt(rq, prompt, sink, keep_ids, err);
    if (json_array_size(prompt) > 1)
        return BAD("prompt", "only one prompt per request is supported");
    if (json_is_array(first))
        return ids_prompt(rq, first, sink, keep_ids, err);
    if (!json_is_string(first))
        return BAD("prompt", "'prompt' must be a string, an array of one "
                   "string, or an array of token ids");
    llmd_canon_prompt_item(sink, json_string_value(first),
                           json_string_length(first));
    return 0;
}

static int chat_prompt(json_t *messages, const llmd_canon_sink_t *sink,
    struct api_error *err)
{
    size_t i, j;
    json_t *msg, *part;

    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return BAD("messages", "'messages' must be a non-empty array");
    json_array_foreach(messages, i, msg) {
        json_t *role = json_object_get(msg, "role");
        json_t *content = json_object_get(msg, "content");

        if (!json_is_object(msg) || !json_is_string(role))
            return BAD("messages", "messages[%zu] needs a string 'role'", i);
        if (json_is_string(content)) {
            llmd_canon_text(sink, json_string_value(content),
                            json_string_length(content));
        } else if (json_is_array(content)) {
            json_array_foreach(content, j, part) {
                json_t *text = json_is_string(part) ? part
                               : json_object_get(part, "text");
                if (!json_is_string(text))
                    return BAD("messages", "messages[%zu].content[%zu]: only "
                               "text parts are supported", i, j);
                llmd_canon_part(sink, json_string_value(text),
                                json_string_length(text));
            }
        } else if (content != NULL && !json_is_null(content)) {
            return BAD("messages", "messages[%zu].content must be a string "
                       "or an array of parts", i);
        }
        llmd_canon_message_end(sink, json_string_value(role),
                               json_string_length(role));
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* sampling and output fields */

static bool absent(json_t *v)
{
    return v == NULL || json_is_null(v);
}

static int parse_stop(struct gen_params *p, json_t *stop, struct api_error *err)
{
    json_t *v;
    size_t i;

    if (absent(stop))
        return 0;
    if (json_is_string(stop)) {
        v = stop;
        stop = json_array();
        json_array_append(stop, v);
    } else if (!json_is_array(stop)) {
        return BAD("stop", "'stop' must be a string or an array of strings");
    } else {
        json_incref(stop);
    }
    if (json_array_size(stop) > REQ_MAX_STOP) {
        json_decref(stop);
        return BAD("stop", "at most %d stop sequences are supported", REQ_MAX_STOP);
    }
    json_array_foreach(stop, i, v) {
        size_t len = json_string_length(v);
        if (!json_is_string(v) || len == 0 || len > REQ_MAX_STOP_LEN
            || memchr(json_string_value(v), 0, len)) {
            json_decref(stop);
            return BAD("stop", "stop sequences must be strings of 1 to %d bytes",
                       REQ_MAX_STOP_LEN);
        }
        memcpy(p->stop[p->n_stop], json_string_value(v), len);
        p->stop[p->n_stop++][len] = '\0';
    }
    json_decref(stop);
    return 0;
}

static int parse_number(json_t *v, const char *name, double min, double max,
    bool min_open, double *out, struct api_error *err)
{
    double d;

    if (absent(v))
        return 0;
    if (!json_is_number(v))
        return BAD(name, "'%s' must be a number", name);
    d = json_number_value(v);
    if (d < min || d > max || (min_open && d == min))
        return BAD(name, "'%s' must be in %s%g, %g]", name, min_open ? "(" : "[",
                   min, max);
    *out = d;
    return 0;
}

/* completions: "logprobs": N alternatives (0..20); chat: "logprobs": true
 * with "top_logprobs": N.  Stored as N + 1 (0: not asked). */
static int parse_logprobs(struct api_request *rq, json_t *root,
    struct api_error *err)
{
    json_t *lp = json_object_get(root, "logprobs");
    json_t *top = json_object_get(root, "top_logprobs");
    json_int_t n = 0;

    if (rq->kind == API_COMPLETIONS) {
        if (absent(lp))
            return 0;
        if (!json_is_integer(lp) || json_integer_value(lp) < 0
            || json_integer_value(lp) > REQ_MAX_TOP_LOGPROBS)
            return BAD("logprobs", "'logprobs' must be an integer in [0, %d]",
                       REQ_MAX_TOP_LOGPROBS);
        rq->params.logprobs = (int) json_integer_value(lp) + 1;
        return 0;
    }
    if (!absent(lp) && !json_is_boolean(lp))
        return BAD("logprobs", "'logprobs' must be a boolean");
    if (!absent(top)) {
        n = json_integer_value(top);
        if (!json_is_integer(top) || n < 0 || n > REQ_MAX_TOP_LOGPROBS)
            return BAD("top_logprobs", "'top_logprobs' must be an integer in "
                       "[0, %d]", REQ_MAX_TOP_LOGPROBS);
        if (!json_is_true(lp))
            return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    if (json_is_true(lp))
        rq->params.logprobs = (int) n + 1;
    return 0;
}

static int parse_fields(struct api_request *rq, json_t *root,
    struct api_error *err)
{
    json_t *v;
    struct gen_params *p = &rq->params;

    v = json_object_get(root, "model");
    if (!absent(v)) {
        if (!json_is_string(v) || json_string_length(v) >= sizeof(rq->model))
            return BAD("model", "'model' must be a string");
        strcpy(rq->model, json_string_value(v));
    }
    v = json_object_get(root, "stream");
    if (!absent(v)) {
        if (!json_is_boolean(v))
            return BAD("stream", "'stream' must be a boolean");
        rq->stream = json_is_true(v);
    }
    v = json_object_get(root, "stream_options");
    if (!absent(v)) {
        json_t *u = json_object_get(v, "include_usage");
        if (!json_is_object(v) || (!absent(u) && !json_is_boolean(u)))
            return BAD("stream_options", "'stream_options' must be an object "
                       "with a boolean 'include_usage'");
        rq->include_usage = json_is_true(u);
    }

    rq->max_tokens = -1;
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "max_completion_tokens" : "max_tokens";
        v = json_object_get(root, name);
        if (absent(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > 1 << 24)
            return BAD(name, "'%s' must be a positive integer", name);
        rq->max_tokens = (int) json_integer_value(v);
    }
    v = json_object_get(root, "n");
    if (!absent(v) && (!json_is_integer(v) || json_integer_value(v) != 1))
        return BAD("n", "only n=1 is supported");

    p->temperature = 1.0;
    p->top_p = 1.0;
    if (parse_number(json_object_get(root, "temperature"), "temperature",
                     0, 2, false, &p->temperature, err)
        || parse_number(json_object_get(root, "top_p"), "top_p",
                        0, 1, true, &p->top_p, err))
        return -1;
    v = json_object_get(root, "seed");
    if (!absent(v)) {
        if (!json_is_integer(v))
            return BAD("seed", "'seed' must be an integer");
        p->seed = (uint64_t) json_integer_value(v);
        rq->has_seed = true;
    }
    v = json_object_get(root, "priority");
    if (!absent(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < -1000000
            || json_integer_value(v) > 1000000)
            return BAD("priority", "'priority' must be an integer in "
                       "[-1000000, 1000000]");
        p->priority = (int) json_integer_value(v);
        rq->has_priority = true;
    }
    if (parse_logprobs(rq, root, err) != 0)
        return -1;
    v = json_object_get(root, "user");
    if (!absent(v) && !json_is_string(v))
        return BAD("user", "'user' must be a string");
    return parse_stop(p, json_object_get(root, "stop"), err);
}

int api_parse_request(enum api_kind kind, const char *body, size_t len,
    struct api_request *rq, struct api_error *err)
{
    json_error_t jerr;
    json_t *root, *prompt;
    struct canon_buf cb = { .b = { 0 } };
    llmd_canon_sink_t sink = { canon_write, &cb };
    int rc;

    memset(rq, 0, sizeof(*rq));
    rq->kind = kind;
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return BAD(NULL, "invalid JSON body: %s (line %d, column %d)",
                   jerr.text, jerr.line, jerr.column);
    if (!json_is_object(root)) {
        json_decref(root);
        return BAD(NULL, "the request body must be a JSON object");
    }

    /* the canonical bytes always, for the prefix claim; the tokens from
     * them, or from the served model */
    rc = parse_fields(rq, root, err);
    if (rc == 0 && kind == API_COMPLETIONS) {
        prompt = json_object_get(root, "prompt");
        rc = absent(prompt) ? BAD("prompt", "'prompt' is required")
             : completion_prompt(rq, prompt, &sink, served_model == NULL, err);
    } else if (rc == 0) {
        rc = chat_prompt(json_object_get(root, "messages"), &sink, err);
    }
    if (rc == 0 && cb.nomem)
        rc = BAD(NULL, "out of memory");
    if (rc == 0 && served_model != NULL)
        rc = model_prompt_build(served_model, kind, root, &rq->prompt,
                                &rq->n_prompt, err);
    json_decref(root);

    if (rc == 0 && rq->prompt == NULL) {
        rq->prompt = malloc(sizeof(int32_t) * (cb.b.len ? cb.b.len : 1));
        if (rq->prompt == NULL)
            rc = BAD(NULL, "out of memory");
        else
            rq->n_prompt = tokenizer_encode(cb.b.p, cb.b.len, rq->prompt);
    }
    rq->canon = cb.b.p;
    rq->canon_len = cb.b.len;
    if (rc == 0 && rq->n_prompt == 0)
        rc = BAD(kind == API_CHAT ? "messages" : "prompt", "the prompt is empty");
    if (rc != 0)
        api_request_free(rq);
    return rc;
}

void api_request_free(struct api_request *rq)
{
    free(rq->prompt);
    rq->prompt = NULL;
    free(rq->canon);
    rq->canon = NULL;
    rq->canon_len = 0;
}

int api_fit_context(struct api_request *rq, int max_model_len,
    struct api_error *err)
{
    const char *param = rq->kind == API_CHAT ? "messages" : "prompt";

    if (rq->n_prompt >= max_model_len) {
        api_error_set(err, 400, "invalid_request_error", param,
                      "context_length_exceeded",
                      "This model's maximum context length is %d tokens. "
                      "However, your prompt has %d tokens; reduce its length.",
                      max_model_len, rq->n_prompt);
        return -1;
    }
    if (rq->max_tokens < 0) {
        /* OpenAI's legacy default for completions; chat may use the rest */
        rq->max_tokens = max_model_len - rq->n_prompt;
        if (rq->kind == API_COMPLETIONS && rq->max_tokens > 16)
            rq->max_tokens = 16;
    } else if (rq->n_prompt + rq->max_tokens > max_model_len) {
        api_error_set(err, 400, "invalid_request_error", "max_tokens",
                      "context_length_exceeded",
                      "This model's maximum context length is %d tokens. "
                      "However, you requested %d tokens (%d in the %s, %d in "
                      "the completion). Reduce the length of the %s or "
                      "completion.", max_model_len,
                      rq->n_prompt + rq->max_tokens, rq->n_prompt, param,
                      rq->max_tokens, param);
        return -1;
    }
    rq->params.max_tokens = rq->max_tokens;
    return 0;
}
