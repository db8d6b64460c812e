/*
 * A Llama-family decoder as described by a GGUF file: hyperparameters from
 * the metadata and views of the weight tensors (no copies; the file stays
 * mapped).  Architectures that reuse the llama graph are told apart by a few
 * flags: qwen2 adds q/k/v biases and rotates NEOX-style halves.
 */

#ifndef LLMD_MODEL_H
#define LLMD_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"

/* A matrix of `rows` rows of `cols` weights (y = W x has `rows` outputs). */
struct weight {
    const void     *data;
    enum ggml_type  type;
    int             rows;
    int             cols;
};

struct layer_weights {
    const float    *attn_norm;      /* [dim] */
    struct weight   wq, wk, wv, wo;
    const float    *bq, *bk, *bv;   /* qwen2 biases, or NULL */
    const float    *ffn_norm;       /* [dim] */
    struct weight   w_gate, w_up, w_down;
};

enum rope_style {
    ROPE_ADJACENT,      /* pairs (x[2i], x[2i+1]): GGUF llama */
    ROPE_NEOX           /* pairs (x[i], x[i + n_rot/2]): qwen2 */
};

struct model_config {
    char            arch[32];
    int             dim;
    int             hidden_dim;
    int             n_layers;
    int             n_heads;
    int             n_kv_heads;
    int             head_dim;
    int             n_rot;              /* rotated dims per head */
    int             vocab_size;
    int             context_length;
    float           norm_eps;
    float           rope_theta;
    float           rope_linear_scale;  /* positions are divided by it */
    enum rope_style rope_style;
};

struct model {
    struct model_config     cfg;
    struct weight           token_embd;     /* vocab rows of dim */
    const float            *output_norm;
    struct weight           output;         /* the head; token_embd if tied */
    const float            *rope_freq_factors;     /* [n_rot/2] or NULL */
    struct layer_weights   *layers;
};

/* Read the config and find every tensor, checking shapes and types;
 * -1 with a reason (naming the key, tensor or architecture) in err. */
int model_load(struct model *m, const struct gguf_file *f, char *err, int err_len);
void model_free(struct model *m);

/* Parameters in the matrices. */
uint64_t model_param_count(const struct model *m);

#endif
