#include "chat_prompt.h"

#include <stdlib.h>
#include <string.h>

#define BAD(param, ...) \
    (api_error_set(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__), -1)

void model_prompt_init(struct model_prompt *mp, const struct vocab *v,
    int vocab_size, const char *chat_override)
{
    mp->vocab = v;
    mp->vocab_size = vocab_size;
    mp->chat = v->chat;
    if (chat_override && chat_override[0])
        mp->chat = chat_family_by_name(chat_override);
}

static int encode(const struct model_prompt *mp, const char *text, size_t len,
    int32_t **ids, int *n, struct api_error *err)
{
    *ids = malloc(sizeof(int32_t) * (3 * len + 3));
    if (*ids == NULL || (*n = vocab_encode(mp->vocab, text, len, true, true, *ids)) < 0)
        return BAD(NULL, "cannot tokenize the prompt");
    return 0;
}

static int ids_prompt(const struct model_prompt *mp, json_t *arr, int32_t **ids,
    int *n, struct api_error *err)
{
    size_t i;
    json_t *v;

    *ids = malloc(sizeof(int32_t) * (json_array_size(arr) + 1));
    if (*ids == NULL)
        return BAD("prompt", "out of memory");
    json_array_foreach(arr, i, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id >= mp->vocab_size)
            return BAD("prompt", "prompt token ids must be integers in [0, %d)",
                       mp->vocab_size);
        (*ids)[i] = (int32_t) id;
    }
    *n = (int) json_array_size(arr);
    return 0;
}

static int completion(const struct model_prompt *mp, json_t *prompt,
    int32_t **ids, int *n, struct api_error *err)
{
    json_t *first = json_array_get(prompt, 0);

    if (json_is_string(prompt))
        return encode(mp, json_string_value(prompt), json_string_length(prompt),
                      ids, n, err);
    if (!json_is_array(prompt) || json_array_size(prompt) == 0)
        return BAD("prompt", "'prompt' must be a string, an array of one "
                   "string, or an array of token ids");
    if (json_is_integer(first))
        return ids_prompt(mp, prompt, ids, n, err);
    if (json_array_size(prompt) > 1)
        return BAD("prompt", "only one prompt per request is supported");
    if (json_is_array(first))
        return ids_prompt(mp, first, ids, n, err);
    if (!json_is_string(first))
        return BAD("prompt", "'prompt' must be a string, an array of one "
                   "string, or an array of token ids");
    return encode(mp, json_string_value(first), json_string_length(first), ids, n, err);
}

/* A message's text: a string, or the concatenated text parts. */
static char *message_text(json_t *content, size_t *len)
{
    size_t j, total = 0;
    json_t *part;
    char *s;

    if (json_is_string(content)) {
        *len = json_string_length(content);
        s = malloc(*len + 1);
        if (s)
            memcpy(s, json_string_value(content), *len + 1);
        return s;
    }
    json_array_foreach(content, j, part) {
        json_t *t = json_is_string(part) ? part : json_object_get(part, "text");
        total += json_string_length(t);
    }
    s = malloc(total + 1);
    if (s == NULL)
        return NULL;
    total = 0;
    json_array_foreach(content, j, part) {
        json_t *t = json_is_string(part) ? part : json_object_get(part, "text");
        memcpy(s + total, json_string_value(t) ? json_string_value(t) : "",
               json_string_length(t));
        total += json_string_length(t);
    }
    s[total] = '\0';
    *len = total;
    return s;
}

static const char no_text[] = "";

static int chat(const struct model_prompt *mp, json_t *messages, int32_t **ids,
    int *n, struct api_error *err)
{
    size_t count = json_array_size(messages), i;
    struct chat_message *m;
    char *text;
    size_t len = 0;
    int rc = 0;
    json_t *msg;

    if (mp->chat == CHAT_UNKNOWN)
        return BAD("messages", "this model's chat template is not one the "
                   "worker recognises (llama3, chatml, llama2, gemma); start "
                   "it with --chat-template NAME to choose one");
    m = calloc(count ? count : 1, sizeof(*m));
    if (m == NULL)
        return BAD("messages", "out of memory");
    /* the message shapes were checked by the byte-level parser already */
    json_array_foreach(messages, i, msg) {
        json_t *role = json_object_get(msg, "role");
        json_t *content = json_object_get(msg, "content");
        m[i].role = json_string_value(role);
        m[i].role_len = json_string_length(role);
        m[i].content = content == NULL || json_is_null(content) ? no_text
                       : message_text(content, &m[i].content_len);
        if (m[i].content == NULL)
            rc = -1;
    }
    text = rc == 0 ? chat_render(mp->chat, m, (int) count, &len) : NULL;
    for (i = 0; i < count; i++)
        if (m[i].content != no_text)
            free((char *) m[i].content);
    free(m);
    if (text == NULL)
        return BAD("messages", "out of memory");
    rc = encode(mp, text, len, ids, n, err);
    free(text);
    return rc;
}

int model_prompt_build(const struct model_prompt *mp, enum api_kind kind,
    json_t *root, int32_t **ids, int *n, struct api_error *err)
{
    if (kind == API_CHAT)
        return chat(mp, json_object_get(root, "messages"), ids, n, err);
    return completion(mp, json_object_get(root, "prompt"), ids, n, err);
}
