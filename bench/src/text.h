/*
 * Prompt text: deterministic pseudo-words of an exact byte length, kept in
 * an arena that lives as long as the workload.  The sim worker's tokenizer
 * is byte-level, so a text of N bytes is N prompt tokens; the words are
 * lowercase ASCII and spaces, so they need no JSON escaping.
 */
#ifndef BENCH_TEXT_H
#define BENCH_TEXT_H

#include <stddef.h>

#include "rng.h"

struct text_arena {
    struct text_chunk  *chunks;
    size_t              bytes;      /* handed out so far */
};

void  text_arena_free(struct text_arena *a);
char *text_alloc(struct text_arena *a, size_t len);   /* len + NUL */
char *text_copy(struct text_arena *a, const char *s, size_t len);

/* Exactly len bytes of pseudo-words (plus a NUL) drawn from r.  A non-NULL
 * tag (e.g. "g12 ") opens the text, so texts that must differ diverge in
 * their first bytes whatever the generator draws. */
char *text_words(struct text_arena *a, struct rng *r, size_t len, const char *tag);

#endif
