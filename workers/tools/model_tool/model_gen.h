/*
 * Tiny-model generator: a valid GGUF with deterministic random weights
 * (a pure function of the seed, the shape and each tensor's name) and a
 * small real vocabulary, for tests, benchmarks and demos.
 *
 *   vocab "spm":    SentencePiece pieces of common English words, byte
 *                   fallback, <s>/</s>; no chat template
 *   vocab "qwen2":  byte-level BPE with merges, the qwen2 pre-tokenizer and
 *                   ChatML markers and template
 *   vocab "llama3": byte-level BPE, the Llama-3 pre-tokenizer, header
 *                   markers and template
 */

#ifndef LLMD_MODEL_GEN_H
#define LLMD_MODEL_GEN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"

struct model_gen_params {
    char            arch[16];       /* llama | qwen2 (q/k/v biases) */
    char            vocab[16];      /* spm | qwen2 | llama3 */
    int             dim, hidden_dim, n_layers, n_heads, n_kv_heads;
    int             context_length;
    enum ggml_type  type;           /* of the matrices; norms stay F32 */
    bool            tied;           /* no output.weight */
    int             vocab_size;     /* embedding rows; 0: the tokenizer's
                                       (more pads the table, as real models
                                       do: Llama-3 shapes for benchmarks) */
    uint64_t        seed;
};

void model_gen_defaults(struct model_gen_params *p);

/* Writes the model to path; -1 with a reason in err. */
int model_gen_write(const struct model_gen_params *p, const char *path,
    char *err, int err_len);

/* `llmd-worker mkmodel ...`: parses flags, writes the file. */
int model_gen_main(int argc, char **argv);

#endif
