/*
 * Byte-level BPE ("gpt2" vocabularies: Llama-3, Qwen2, GPT-2): merged by
 * rank after the pre-tokenizer's regex.
 */

#ifndef LLMD_TOKENIZER_BPE_H
#define LLMD_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "vocab.h"

/* Reads the merges and the pre-tokenizer; -1 with err filled in. */
int bpe_setup(struct vocab *v, const struct gguf_file *f, char *err, int err_len);
void bpe_teardown(struct vocab *v);

/* Encodes a fragment without specials; returns the count, or -1. */
int bpe_encode_fragment(const struct vocab *v, const char *text, size_t len,
    int32_t *out);

/* The bytes piece id decodes to, into out; returns their count. */
int bpe_piece_text(const struct vocab *v, int id, char *out);

#endif
