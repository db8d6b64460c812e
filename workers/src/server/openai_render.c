/*
 * The OpenAI API's responses: bodies, SSE chunks and errors, rendered with
 * jansson (requests are parsed in openai_api.c).
 */

#include "openai_api.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_prompt.h"
#include "model/tokenizer_vocab.h"

static char *utf8_clean(const char *text, size_t n, size_t *out_len);

/* ------------------------------------------------------------------------ */
/* rendering */

static const char *finish_name(enum finish_reason why)
{
    switch (why) {
    case FINISH_STOP:   return "stop";
    case FINISH_LENGTH: return "length";
    case FINISH_ABORT:  return "abort";
    default:            return NULL;
    }
}

static char *dump(json_t *obj, size_t *len)
{
    char *s = json_dumps(obj, JSON_COMPACT);

    json_decref(obj);
    if (s)
        *len = strlen(s);
    return s;
}

static char *dump_sse(json_t *obj, size_t *len)
{
    size_t n = 0;
    char *body = dump(obj, &n), *out;

    if (body == NULL)
        return NULL;
    out = malloc(n + 9);
    if (out) {
        memcpy(out, "data: ", 6);
        memcpy(out + 6, body, n);
        memcpy(out + 6 + n, "\n\n", 3);
        *len = n + 8;
    }
    free(body);
    return out;
}

static json_t *opt_string(const char *s)
{
    return s ? json_string(s) : json_null();
}

char *api_render_error(const struct api_error *err, size_t *len)
{
    json_t *e = json_pack("{s:s, s:s, s:o, s:o}",
                          "message", err->message,
                          "type", err->type ? err->type : "invalid_request_error",
                          "param", opt_string(err->param),
                          "code", opt_string(err->code));

    return dump(json_pack("{s:o}", "error", e), len);
}

static json_t *usage(int prompt_tokens, int completion_tokens)
{
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", prompt_tokens,
                     "completion_tokens", completion_tokens,
                     "total_tokens", prompt_tokens + completion_tokens);
}

char *api_render_response(enum api_kind kind, const char *id, long created,
    const char *model, const char *text, size_t text_len,
    enum finish_reason why, int prompt_tokens, int completion_tokens,
    size_t *len)
{
    json_t *choice;
    size_t clean_len = 0;
    char *clean = utf8_clean(text, text_len, &clean_len);

    if (clean == NULL)
        return NULL;
    text = clean;
    text_len = clean_len;
    if (kind == API_CHAT)
        choice = json_pack("{s:i, s:{s:s, s:s%}, s:n, s:o}", "index", 0,
                           "message", "role", "assistant", "content", text, text_len,
                           "logprobs", "finish_reason", opt_string(finish_name(why)));
    else
        choice = json_pack("{s:i, s:s%, s:n, s:o}", "index", 0,
                           "text", text, text_len, "logprobs",
                           "finish_reason", opt_string(finish_name(why)));
    free(clean);
    return dump(json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}",
                          "id", id,
                          "object", kind == API_CHAT ? "chat.completion"
                                                     : "text_completion",
                          "created", (json_int_t) created, "model", model,
                          "choices", choice,
                          "usage", usage(prompt_tokens, completion_tokens)),
                len);
}

char *api_render_models(const char *model, long created, int max_model_len,
    size_t *len)
{
    return dump(json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s, s:n, s:i}]}",
                          "object", "list", "data",
                          "id", model, "object", "model",
                          "created", (json_int_t) created,
                          "owned_by", "llmd", "root", model, "parent",
                          "max_model_len", max_model_len),
                len);
}

static const char chat_chunk_suffix[] =
    "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
static const char completion_chunk_suffix[] =
    "\",\"logprobs\":null,\"finish_reason\":null}]}\n\n";

int api_chunk_prefix(enum api_kind kind, const char *id, long created,
    const char *model, char *buf, size_t size)
{
    char esc[6 * 256 + 1];
    size_t n = strlen(model);

    if (n > 256)
        n = 256;
    esc[json_escape(esc, model, n)] = '\0';
    if (kind == API_CHAT)
        return snprintf(buf, size,
                        "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
                        "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
                        "\"delta\":{\"content\":\"", id, created, esc);
    return snprintf(buf, size,
                    "data: {\"id\":\"%s\",\"object\":\"text_completion\","
                    "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
                    "\"text\":\"", id, created, esc);
}

/* The suffix differs by kind only in the closing brace of "delta". */
const char *api_chunk_suffix_for(enum api_kind kind, size_t *len)
{
    if (kind == API_CHAT) {
        *len = sizeof(chat_chunk_suffix) - 1;
        return chat_chunk_suffix;
    }
    *len = sizeof(completion_chunk_suffix) - 1;
    return completion_chunk_suffix;
}

static json_t *chunk(enum api_kind kind, const char *id, long created,
    const char *model, json_t *choices)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", id,
                     "object", kind == API_CHAT ? "chat.completion.chunk"
                                                : "text_completion",
                     "created", (json_int_t) created, "model", model,
                     "choices", choices);
}

char *api_render_role_chunk(const char *id, long created, const char *model,
    size_t *len)
{
    json_t *choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", 0,
                               "delta", "role", "assistant", "content", "",
                               "logprobs", "finish_reason");

    return dump_sse(chunk(API_CHAT, id, created, model, json_pack("[o]", choice)),
                    len);
}

char *api_render_finish_chunk(enum api_kind kind, const char *id, long created,
    const char *model, enum finish_reason why, size_t *len)
{
    json_t *choice;

    if (kind == API_CHAT)
        choice = json_pack("{s:i, s:{}, s:n, s:o}", "index", 0, "delta",
                           "logprobs", "finish_reason", opt_string(finish_name(why)));
    else
        choice = json_pack("{s:i, s:s, s:n, s:o}", "index", 0, "text", "",
                           "logprobs", "finish_reason", opt_string(finish_name(why)));
    return dump_sse(chunk(kind, id, created, model, json_pack("[o]", choice)), len);
}

char *api_render_usage_chunk(enum api_kind kind, const char *id, long created,
    const char *model, int prompt_tokens, int completion_tokens, size_t *len)
{
    json_t *c = chunk(kind, id, created, model, json_array());

    json_object_set_new(c, "usage", usage(prompt_tokens, completion_tokens));
    return dump_sse(c, len);
}

/* The length of the valid UTF-8 character at s (n bytes left), or 0. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 && s[0] >= 0xc2 ? 2
                 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 && s[0] <= 0xf4 ? 4 : 0;

    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (len == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0)))
        return 0;       /* overlong, surrogate */
    if (len == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90)))
        return 0;
    return len;
}

/* text as valid UTF-8 (bad bytes -> U+FFFD), malloc'd; a model can end
 * mid-character when it hits max_tokens */
static char *utf8_clean(const char *text, size_t n, size_t *out_len)
{
    char *out = malloc(3 * n + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; ) {
        size_t k = utf8_char_len((const unsigned char *) text + i, n - i);
        if (k == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, text + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

size_t json_escape(char *dst, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) src[i];

        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
            dst[o++] = (char) c;
            continue;
        }
        if (c >= 0x80) {
            /* whole characters pass (the engine sends only those for real
             * models); a stray byte becomes U+FFFD */
            size_t k = utf8_char_len((const unsigned char *) src + i, n - i);
            if (k > 0) {
                memcpy(dst + o, src + i, k);
                o += k;
                i += k - 1;
            } else {
                memcpy(dst + o, "\\ufffd", 6);
                o += 6;
            }
            continue;
        }
        dst[o++] = '\\';
        switch (c) {
        case '"':  dst[o++] = '"';  break;
        case '\\': dst[o++] = '\\'; break;
        case '\n': dst[o++] = 'n';  break;
        case '\r': dst[o++] = 'r';  break;
        case '\t': dst[o++] = 't';  break;
        default:
            /* control bytes and, since the tokenizer is byte-level, bytes of
             * a UTF-8 sequence split across chunks: escape each byte as a
             * code point so every chunk is valid JSON on its own */
            dst[o++] = 'u';
            dst[o++] = '0';
            dst[o++] = '0';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    return o;
}

/* ------------------------------------------------------------------------ */
/* logprobs, for backends with a model vocabulary */

static json_t *token_json(const char *text, int len, bool chat, float logprob)
{
    size_t clean_len = 0;
    char *clean = utf8_clean(text, (size_t) len, &clean_len);
    json_t *o, *bytes;

    if (clean == NULL)
        return NULL;
    if (!chat) {
        o = json_stringn(clean, clean_len);
        free(clean);
        return o;
    }
    bytes = json_array();
    for (int i = 0; i < len; i++)
        json_array_append_new(bytes, json_integer((unsigned char) text[i]));
    o = json_pack("{s:s%, s:f, s:o}", "token", clean, clean_len,
                  "logprob", (double) logprob, "bytes", bytes);
    free(clean);
    return o;
}

/* generated tokens [from, to); *offset: text_offset of the first, advanced */
static json_t *logprobs_json(enum api_kind kind, const struct worker_request *r,
    int from, int to, int *offset_io)
{
    const struct vocab *v = api_model_prompt()->vocab;
    bool chat = kind == API_CHAT;
    json_t *content = json_array(), *tokens = json_array(), *values = json_array(),
           *tops = json_array(), *offsets = json_array();
    int offset = *offset_io;

    for (int i = from; i < to; i++) {
        const struct token_logprob *lp = &r->logprobs[i];
        int32_t prev = r->tokens[r->n_prompt + i - 1];
        int len;
        const char *text = vocab_token_text(v, prev, lp->token, &len);
        json_t *top = chat ? json_array() : json_object();

        for (int k = 0; k < lp->n_top; k++) {
            int tlen;
            const char *t = vocab_token_text(v, prev, lp->top_token[k], &tlen);
            if (chat) {
                json_array_append_new(top, token_json(t, tlen, true, lp->top_logprob[k]));
            } else {
                json_t *key = token_json(t, tlen, false, 0);
                json_object_set_new(top, json_string_value(key),
                                    json_real(lp->top_logprob[k]));
                json_decref(key);
            }
        }
        if (chat) {
            json_t *entry = token_json(text, len, true, lp->logprob);
            json_object_set_new(entry, "top_logprobs", top);
            json_array_append_new(content, entry);
        } else {
            json_array_append_new(tokens, token_json(text, len, false, 0));
            json_array_append_new(values, json_real(lp->logprob));
            json_array_append_new(tops, top);
            json_array_append_new(offsets, json_integer(offset));
        }
        offset += len;
    }
    *offset_io = offset;
    if (chat) {
        json_decref(tokens);
        json_decref(values);
        json_decref(tops);
        json_decref(offsets);
        return json_pack("{s:o}", "content", content);
    }
    json_decref(content);
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs",
                     values, "top_logprobs", tops, "text_offset", offsets);
}

bool api_wants_logprobs(const struct worker_request *r)
{
    return api_model_prompt() != NULL && r->logprobs != NULL && r->params.logprobs > 0;
}

char *api_render_logprob_chunk(enum api_kind kind, const char *id,
    long created, const char *model, const char *text, size_t text_len,
    const struct worker_request *r, int from, int to, int *offset,
    size_t *len)
{
    size_t clean_len = 0;
    char *clean = utf8_clean(text, text_len, &clean_len);
    json_t *lp, *choice;

    if (clean == NULL)
        return NULL;
    lp = logprobs_json(kind, r, from, to, offset);
    if (kind == API_CHAT)
        choice = json_pack("{s:i, s:{s:s%}, s:o, s:n}", "index", 0,
                           "delta", "content", clean, clean_len,
                           "logprobs", lp, "finish_reason");
    else
        choice = json_pack("{s:i, s:s%, s:o, s:n}", "index", 0,
                           "text", clean, clean_len, "logprobs", lp,
                           "finish_reason");
    free(clean);
    return dump_sse(chunk(kind, id, created, model, json_pack("[o]", choice)), len);
}

char *api_attach_logprobs(enum api_kind kind, char *body, size_t *len,
    const struct worker_request *r)
{
    json_t *root, *choice, *lp;
    int offset = 0;

    if (body == NULL || !api_wants_logprobs(r))
        return body;
    root = json_loadb(body, *len, 0, NULL);
    choice = json_array_get(json_object_get(root, "choices"), 0);
    lp = choice ? logprobs_json(kind, r, 0, r->n_generated, &offset) : NULL;
    if (lp == NULL) {
        json_decref(root);
        return body;
    }
    json_object_set_new(choice, "logprobs", lp);
    free(body);
    return dump(root, len);
}
