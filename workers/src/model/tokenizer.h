/*
 * Byte-level tokenizer: one token per byte, ids 0..255.
 *
 * It is deterministic and needs no vocabulary file, and since a token is a
 * byte, the worker's KV blocks line up with the canonical prompt bytes the
 * gateway hashes for prefix routing (see common/llmd_canon.h).
 */

#ifndef LLMD_TOKENIZER_H
#define LLMD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define TOKENIZER_VOCAB 256

/* out must hold len tokens; returns the number of tokens. */
static inline int tokenizer_encode(const void *bytes, size_t len, int32_t *out)
{
    const unsigned char *p = bytes;

    for (size_t i = 0; i < len; i++)
        out[i] = p[i];
    return (int) len;
}

/* The bytes of one token; returns their count. */
static inline int tokenizer_decode(int32_t token, char *out)
{
    if (token < 0 || token >= TOKENIZER_VOCAB)
        return 0;
    out[0] = (char) token;
    return 1;
}

#endif
