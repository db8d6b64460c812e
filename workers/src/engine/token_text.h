/*
 * Generated tokens to text, for the engine: through the model's vocabulary
 * when the backend has one, else one byte per token.  Text is released to
 * clients only in whole UTF-8 characters, since a byte-fallback or
 * byte-level BPE token may end inside one.
 */

#ifndef LLMD_MODEL_TEXT_H
#define LLMD_MODEL_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "sched/request.h"
#include "model/tokenizer_vocab.h"

/* The bytes of the token just appended to r (r->tokens[r->n_tokens - 1]);
 * `byte` is storage for the byte-level case. */
const char *model_token_text(const struct vocab *v, const struct worker_request *r,
    char *byte, int *len);

/* Whether the token ends generation: the backend's EOS or, with a
 * vocabulary, an end-of-turn marker. */
bool model_token_ends(const struct vocab *v, int eos_token, int32_t tok);

/* Room for `more` bytes in r->text; false when out of memory. */
bool model_text_reserve(struct worker_request *r, int more);

/* How much of text[0, len) ends on a character boundary (never below
 * `from`, what was sent already). */
int utf8_whole_prefix(const char *text, int len, int from);

#endif
