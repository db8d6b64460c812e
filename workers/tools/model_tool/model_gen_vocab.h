/*
 * Vocabularies for generated models (see model_gen.h).
 */

#ifndef LLMD_MODEL_GEN_VOCAB_H
#define LLMD_MODEL_GEN_VOCAB_H

#include <stdint.h>

struct gen_vocab {
    char      **tokens;
    int         n;
    float      *scores;
    int32_t    *types;
    char      **merges;     /* BPE only */
    int         n_merges;
    int         bos, eos;   /* -1: none */
};

/* kind: spm | qwen2 | llama3.  Returns 0, or -1 (unknown kind, OOM). */
int gen_vocab_build(struct gen_vocab *v, const char *kind);
void gen_vocab_free(struct gen_vocab *v);

#endif
