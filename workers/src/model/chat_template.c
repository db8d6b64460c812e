/*
 * Chat template families, recognised and rendered (after llama.cpp's
 * llama-chat.cpp).
 */

#include "chat_template.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool has(const char *s, size_t len, const char *needle)
{
    return memmem(s, len, needle, strlen(needle)) != NULL;
}

enum chat_family chat_template_detect(const char *t, size_t len)
{
    if (t == NULL || len == 0)
        return CHAT_UNKNOWN;
    if (has(t, len, "<|im_start|>"))
        return CHAT_CHATML;
    if (has(t, len, "<|start_header_id|>") && has(t, len, "<|end_header_id|>"))
        return CHAT_LLAMA3;
    if (has(t, len, "<start_of_turn>"))
        return CHAT_GEMMA;
    if (has(t, len, "[INST]"))
        return CHAT_LLAMA2;
    return CHAT_UNKNOWN;
}

static const char *const family_names[] = {
    [CHAT_UNKNOWN] = "unknown", [CHAT_LLAMA3] = "llama3", [CHAT_CHATML] = "chatml",
    [CHAT_LLAMA2] = "llama2", [CHAT_GEMMA] = "gemma", [CHAT_PLAIN] = "plain",
};

enum chat_family chat_family_by_name(const char *name)
{
    for (int f = CHAT_LLAMA3; f <= CHAT_PLAIN; f++)
        if (strcmp(name, family_names[f]) == 0)
            return (enum chat_family) f;
    return CHAT_UNKNOWN;
}

/* ------------------------------------------------------------------------ */

struct out {
    char   *p;
    size_t  len, cap;
    bool    oom;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->p, cap);
        if (p == NULL) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static bool role_is(const struct chat_message *m, const char *role)
{
    return m->role_len == strlen(role) && memcmp(m->role, role, m->role_len) == 0;
}

/* Llama-3 trims each message's content */
static void put_trimmed(struct out *o, const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t'
                     || s[n - 1] == '\r'))
        n--;
    put(o, s, n);
}

static void render_llama2(struct out *o, const struct chat_message *m, int n)
{
    bool in_inst = false;

    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "system")) {
            puts_(o, "[INST] <<SYS>>\n");
            put(o, m[i].content, m[i].content_len);
            puts_(o, "\n<</SYS>>\n\n");
            in_inst = true;
        } else if (role_is(&m[i], "assistant")) {
            puts_(o, " ");
            put(o, m[i].content, m[i].content_len);
            puts_(o, " </s><s>");
        } else {
            if (!in_inst)
                puts_(o, "[INST] ");
            put(o, m[i].content, m[i].content_len);
            puts_(o, " [/INST]");
            in_inst = false;
        }
    }
}

char *chat_render(enum chat_family f, const struct chat_message *m, int n,
    size_t *len)
{
    struct out o = { 0 };

    put(&o, "", 0);
    switch (f) {
    case CHAT_LLAMA3:
        for (int i = 0; i < n; i++) {
            puts_(&o, "<|start_header_id|>");
            put(&o, m[i].role, m[i].role_len);
            puts_(&o, "<|end_header_id|>\n\n");
            put_trimmed(&o, m[i].content, m[i].content_len);
            puts_(&o, "<|eot_id|>");
        }
        puts_(&o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_CHATML:
        for (int i = 0; i < n; i++) {
            puts_(&o, "<|im_start|>");
            put(&o, m[i].role, m[i].role_len);
            puts_(&o, "\n");
            put(&o, m[i].content, m[i].content_len);
            puts_(&o, "<|im_end|>\n");
        }
        puts_(&o, "<|im_start|>assistant\n");
        break;
    case CHAT_GEMMA:
        /* Gemma has no system role: its text opens the first user turn */
        for (int i = 0; i < n; i++) {
            bool assistant = role_is(&m[i], "assistant");
            puts_(&o, assistant ? "<start_of_turn>model\n" : "<start_of_turn>user\n");
            put(&o, m[i].content, m[i].content_len);
            puts_(&o, "<end_of_turn>\n");
        }
        puts_(&o, "<start_of_turn>model\n");
        break;
    case CHAT_LLAMA2:
        render_llama2(&o, m, n);
        break;
    case CHAT_PLAIN:
    case CHAT_UNKNOWN:
        for (int i = 0; i < n; i++) {
            put(&o, m[i].role, m[i].role_len);
            puts_(&o, ": ");
            put(&o, m[i].content, m[i].content_len);
            puts_(&o, "\n");
        }
        puts_(&o, "assistant:");
        break;
    }
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
