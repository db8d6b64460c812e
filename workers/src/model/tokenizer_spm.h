/*
 * SentencePiece-style BPE ("llama" vocabularies): pieces merged by score
 * over code points, with <0xXX> byte fallback.
 */

#ifndef LLMD_TOKENIZER_SPM_H
#define LLMD_TOKENIZER_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vocab.h"

/* Encodes a fragment without specials; returns the count of ids. */
int spm_encode_fragment(const struct vocab *v, const char *text, size_t len,
    bool space_prefix, int32_t *out);

/* "<0xAB>" -> 0xAB: the byte a byte-fallback piece stands for, or -1. */
int spm_byte_piece(const char *p, int len);

/* The bytes piece id decodes to, into out; returns their count. */
int spm_piece_text(const struct vocab *v, int id, char *out);

#endif
