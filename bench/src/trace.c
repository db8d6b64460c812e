#include "trace.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int trace_write(FILE *f, const struct workload *wl, const struct body_opts *o)
{
    struct evbuffer *line = evbuffer_new();
    int rc = 0;

    for (size_t i = 0; i < wl->n && rc == 0; i++) {
        const struct bench_request *r = &wl->reqs[i];

        evbuffer_add_printf(line, "{\"t\":%.6f,\"id\":%zu,\"group\":%d,\"session\":%d,"
                            "\"turn\":%d,\"tag\":", r->t, i, r->group, r->session, r->turn);
        if (r->tag)
            json_add_string(line, r->tag, strlen(r->tag));
        else
            evbuffer_add_printf(line, "null");
        if (r->prev >= 0)
            evbuffer_add_printf(line, ",\"after\":%.6f", r->after);
        evbuffer_add_printf(line, ",\"body\":");
        body_render(line, o, wl, NULL, 0, r);
        evbuffer_add(line, "}\n", 2);
        if (evbuffer_write(line, fileno(f)) < 0)
            rc = -1;
        evbuffer_drain(line, evbuffer_get_length(line));
    }
    evbuffer_free(line);
    return rc;
}

static int int_field(json_t *o, const char *key, int dflt)
{
    json_t *v = json_object_get(o, key);

    return json_is_integer(v) ? (int) json_integer_value(v) : dflt;
}

static const char *add_body(struct workload *wl, struct bench_request *r, json_t *body)
{
    json_t *msgs = json_object_get(body, "messages");
    json_t *prompt = json_object_get(body, "prompt");
    json_t *max = json_object_get(body, "max_tokens");
    size_t i;
    json_t *m;

    if (!max)
        max = json_object_get(body, "max_completion_tokens");
    if (!json_is_integer(max) || json_integer_value(max) < 1)
        return "body.max_tokens: expected a positive integer";
    r->max_tokens = (int) json_integer_value(max);
    if (json_is_string(prompt)) {
        request_add_msg(wl, r, "user",
                        text_copy(&wl->arena, json_string_value(prompt),
                                  json_string_length(prompt)),
                        json_string_length(prompt));
        return NULL;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return "body: expected messages (non-empty array) or prompt (string)";
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role");
        json_t *content = json_object_get(m, "content");

        if (!json_is_string(role) || !json_is_string(content))
            return "body.messages: expected {role, content} strings";
        request_add_msg(wl, r,
                        text_copy(&wl->arena, json_string_value(role),
                                  json_string_length(role)),
                        text_copy(&wl->arena, json_string_value(content),
                                  json_string_length(content)),
                        json_string_length(content));
    }
    return NULL;
}

/* the latest earlier request of a session, for chaining "after" lines */
static int last_of_session(const struct workload *wl, int session)
{
    for (size_t i = wl->n - 1; i-- > 0;)
        if (wl->reqs[i].session == session)
            return (int) i;
    return -1;
}

int trace_read(const char *path, struct workload *wl, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    ssize_t len;

    memset(wl, 0, sizeof(*wl));
    if (f == NULL) {
        snprintf(err, errlen, "--trace %s: cannot open", path);
        return -1;
    }
    while ((len = getline(&line, &cap, f)) > 0) {
        json_error_t jerr;
        json_t *o, *t, *after, *tag, *body;
        const char *problem = NULL;

        lineno++;
        if (strspn(line, " \t\r\n") == (size_t) len)
            continue;
        o = json_loadb(line, (size_t) len, 0, &jerr);
        t = json_object_get(o, "t");
        if (!json_is_object(o) || !json_is_number(t) || json_number_value(t) < 0) {
            snprintf(err, errlen, "--trace %s:%ld: expected an object with t >= 0",
                     path, lineno);
            json_decref(o);
            goto fail;
        }
        struct bench_request *r = workload_add(wl, json_number_value(t));

        r->group = int_field(o, "group", -1);
        r->session = int_field(o, "session", -1);
        r->turn = int_field(o, "turn", 0);
        tag = json_object_get(o, "tag");
        if (json_is_string(tag))
            r->tag = text_copy(&wl->arena, json_string_value(tag), json_string_length(tag));
        body = json_object_get(o, "body");
        problem = add_body(wl, r, json_is_object(body) ? body : o);
        after = json_object_get(o, "after");
        if (!problem && json_is_number(after)) {
            int prev = r->session >= 0 ? last_of_session(wl, r->session) : -1;

            if (prev < 0)
                problem = "\"after\" needs an earlier line of the same session";
            else if (wl->reqs[prev].next >= 0)
                problem = "session turn already continued";
            else
                workload_chain(wl, (size_t) prev, wl->n - 1, json_number_value(after));
        }
        json_decref(o);
        if (problem) {
            snprintf(err, errlen, "--trace %s:%ld: %s", path, lineno, problem);
            goto fail;
        }
    }
    free(line);
    fclose(f);
    if (wl->n == 0) {
        snprintf(err, errlen, "--trace %s: no requests", path);
        return -1;
    }
    return 0;
fail:
    free(line);
    fclose(f);
    workload_free(wl);
    return -1;
}
