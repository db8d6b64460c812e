#include "sse.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void sse_init(struct sse_parser *p, sse_chunk_cb cb, void *arg)
{
    memset(p, 0, sizeof(*p));
    p->cb = cb;
    p->arg = arg;
}

void sse_free(struct sse_parser *p)
{
    free(p->line);
    free(p->data);
    free(p->scratch);
    memset(p, 0, sizeof(*p));
}

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;

        while (c < *len + n + 1)
            c *= 2;
        *buf = realloc(*buf, c);
        if (*buf == NULL)
            abort();
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static char *scratch(struct sse_parser *p, size_t n)
{
    if (n + 1 > p->scratch_cap) {
        p->scratch_cap = n + 1 > 256 ? n + 1 : 256;
        p->scratch = realloc(p->scratch, p->scratch_cap);
        if (p->scratch == NULL)
            abort();
    }
    return p->scratch;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes the JSON string starting after its opening quote into dst (at
 * least as large as the input); returns the decoded length, or -1. */
static long decode_string(const char *s, const char *end, char *dst)
{
    char *o = dst;

    while (s < end && *s != '"') {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        if (++s >= end)
            return -1;
        switch (*s) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            unsigned cp = 0;

            if (end - s < 5)
                return -1;
            for (int i = 1; i <= 4; i++) {
                int h = hexval(s[i]);

                if (h < 0)
                    return -1;
                cp = cp << 4 | (unsigned) h;
            }
            s += 4;
            /* surrogate halves are copied as three bytes each: we count
             * and echo text, we never display it */
            if (cp < 0x80) {
                *o++ = (char) cp;
            } else if (cp < 0x800) {
                *o++ = (char) (0xc0 | cp >> 6);
                *o++ = (char) (0x80 | (cp & 0x3f));
            } else {
                *o++ = (char) (0xe0 | cp >> 12);
                *o++ = (char) (0x80 | ((cp >> 6) & 0x3f));
                *o++ = (char) (0x80 | (cp & 0x3f));
            }
            break;
        }
        default: *o++ = *s; break;     /* \" \\ \/ */
        }
        s++;
    }
    return s < end ? (long) (o - dst) : -1;
}

static void parse_full(struct sse_parser *p, const char *data, size_t len,
                       struct sse_chunk *out)
{
    json_t *o = json_loadb(data, len, 0, NULL);
    json_t *usage, *err, *choice, *text;

    if (!json_is_object(o)) {
        out->error = "unparseable stream chunk";
        json_decref(o);
        return;
    }
    usage = json_object_get(o, "usage");
    if (json_is_object(usage)) {
        json_t *pt = json_object_get(usage, "prompt_tokens");
        json_t *ct = json_object_get(usage, "completion_tokens");

        out->prompt_tokens = json_is_integer(pt) ? (long) json_integer_value(pt) : -1;
        out->completion_tokens = json_is_integer(ct) ? (long) json_integer_value(ct) : -1;
    }
    err = json_object_get(o, "error");
    if (err) {
        json_t *msg = json_object_get(err, "message");
        const char *m = json_is_string(msg) ? json_string_value(msg)
                        : json_is_string(err) ? json_string_value(err) : "error event";

        out->error = strcpy(scratch(p, strlen(m)), m);
    }
    choice = json_array_get(json_object_get(o, "choices"), 0);
    text = json_object_get(json_object_get(choice, "delta"), "content");
    if (!text)
        text = json_object_get(choice, "text");
    if (!out->error && json_is_string(text) && json_string_length(text) > 0) {
        size_t n = json_string_length(text);

        out->text = memcpy(scratch(p, n), json_string_value(text), n);
        out->text_len = n;
    }
    json_decref(o);
}

static const char *find(const char *data, size_t len, const char *needle)
{
    return memmem(data, len, needle, strlen(needle));
}

void sse_parse_chunk(struct sse_parser *p, const char *data, size_t len,
                     struct sse_chunk *out)
{
    const char *end = data + len, *at;

    memset(out, 0, sizeof(*out));
    out->prompt_tokens = out->completion_tokens = -1;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        out->done = 1;
        return;
    }
    if (find(data, len, "\"usage\":{") || find(data, len, "\"error\"")) {
        parse_full(p, data, len, out);
        return;
    }
    if ((at = find(data, len, "\"content\":\"")) != NULL)
        at += 11;
    else if ((at = find(data, len, "\"text\":\"")) != NULL)
        at += 8;
    else
        return;                         /* role or finish chunk: no text */
    long n = decode_string(at, end, scratch(p, (size_t) (end - at)));

    if (n < 0) {
        out->error = "unterminated string in stream chunk";
    } else if (n > 0) {
        out->text = p->scratch;
        out->text_len = (size_t) n;
    }
}

static void dispatch(struct sse_parser *p)
{
    struct sse_chunk chunk;

    if (p->data_len == 0)
        return;
    sse_parse_chunk(p, p->data, p->data_len, &chunk);
    p->data_len = 0;
    p->cb(p->arg, &chunk);
}

static void on_line(struct sse_parser *p, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        len--;
    if (len == 0) {
        dispatch(p);
        return;
    }
    if (len < 5 || memcmp(line, "data:", 5) != 0)
        return;                         /* comments, event:, id: */
    line += 5;
    len -= 5;
    if (len && *line == ' ') {
        line++;
        len--;
    }
    if (p->data_len)
        append(&p->data, &p->data_len, &p->data_cap, "\n", 1);
    append(&p->data, &p->data_len, &p->data_cap, line, len);
}

void sse_feed(struct sse_parser *p, const char *bytes, size_t len)
{
    const char *end = bytes + len;

    while (bytes < end) {
        const char *nl = memchr(bytes, '\n', (size_t) (end - bytes));

        if (nl == NULL) {
            append(&p->line, &p->line_len, &p->line_cap, bytes, (size_t) (end - bytes));
            return;
        }
        if (p->line_len) {
            append(&p->line, &p->line_len, &p->line_cap, bytes, (size_t) (nl - bytes));
            on_line(p, p->line, p->line_len);
            p->line_len = 0;
        } else {
            on_line(p, bytes, (size_t) (nl - bytes));
        }
        bytes = nl + 1;
    }
}
