/*
 * A model's own tokenizer, read from GGUF metadata (tokenizer.ggml.*):
 *   "llama": SentencePiece-style BPE over code points, merged by score,
 *            with <0xXX> byte fallback (tokenizer_spm.c);
 *   "gpt2":  byte-level BPE merged by rank after a pre-tokenizer regex
 *            (Llama-3, Qwen2, GPT-2; tokenizer_bpe.c).
 * Control and user-defined tokens written in the text (chat markers) are
 * split out first and become their own ids.
 */

#ifndef LLMD_TOKENIZER_VOCAB_H
#define LLMD_TOKENIZER_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "vocab.h"

int vocab_load(struct vocab *v, const struct gguf_file *f, char *err, int err_len);
void vocab_free(struct vocab *v);

/* Encode text.  out must have room for 3 * len + 3 ids.  add_bos prepends BOS
 * when the model wants one; parse_special turns control-token text into
 * those tokens.  Returns the count, or -1 (invalid regex match, OOM). */
int vocab_encode(const struct vocab *v, const char *text, size_t len,
    bool add_bos, bool parse_special, int32_t *out);

/* The bytes a token decodes to, given the token before it (SentencePiece
 * drops the leading space of the first piece after BOS).  Control tokens
 * decode to nothing. */
const char *vocab_token_text(const struct vocab *v, int32_t prev, int32_t tok,
    int *len);

/* Whether generation ends at this token (EOS, end-of-turn markers). */
bool vocab_is_end(const struct vocab *v, int32_t tok);

#endif
