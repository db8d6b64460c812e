#include "text.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES (4u << 20)

struct text_chunk {
    struct text_chunk  *next;
    size_t              used, size;
    char                data[];
};

void text_arena_free(struct text_arena *a)
{
    struct text_chunk *c = a->chunks, *next;

    for (; c; c = next) {
        next = c->next;
        free(c);
    }
    a->chunks = NULL;
    a->bytes = 0;
}

char *text_alloc(struct text_arena *a, size_t len)
{
    struct text_chunk *c = a->chunks;
    size_t need = len + 1;

    if (c == NULL || c->size - c->used < need) {
        size_t size = need > CHUNK_BYTES ? need : CHUNK_BYTES;

        c = malloc(sizeof(*c) + size);
        if (c == NULL)
            abort();                /* a workload that does not fit is fatal */
        c->used = 0;
        c->size = size;
        c->next = a->chunks;
        a->chunks = c;
    }
    char *p = c->data + c->used;
    c->used += need;
    a->bytes += need;
    p[len] = '\0';
    return p;
}

char *text_copy(struct text_arena *a, const char *s, size_t len)
{
    char *p = text_alloc(a, len);

    memcpy(p, s, len);
    return p;
}

static const char consonants[] = "bcdfghjklmnprstvwz";
static const char vowels[] = "aeiou";

char *text_words(struct text_arena *a, struct rng *r, size_t len, const char *tag)
{
    char *out = text_alloc(a, len);
    size_t at = 0;

    if (tag) {
        size_t n = strlen(tag);

        n = n < len ? n : len;
        memcpy(out, tag, n);
        at = n;
    }
    while (at < len) {
        /* one draw gives a word of 1..4 syllables */
        uint64_t x = rng_next(r);
        int syllables = 1 + (int) (x & 3);

        x >>= 2;
        for (int s = 0; s < syllables && at < len; s++) {
            out[at++] = consonants[(x & 0x3f) % (sizeof(consonants) - 1)];
            x >>= 6;
            if (at < len)
                out[at++] = vowels[(x & 0x3f) % (sizeof(vowels) - 1)];
            x >>= 6;
        }
        if (at < len)
            out[at++] = ' ';
    }
    return out;
}
