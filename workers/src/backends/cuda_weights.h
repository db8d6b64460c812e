/*
 * The model's weights in GPU memory, uploaded once at load.
 *
 * Matrices become bf16 whatever their file type: F32 and F16 are rounded
 * to nearest even, BF16 is copied, Q8_0 is dequantised (scale x int8, then
 * rounded to bf16): the GEMMs are bf16 x bf16 -> f32 on tensor cores, and
 * an int8 path would need its own kernels.  A Q8_0 file therefore takes
 * about twice its size in GPU memory.  Norm weights, biases and RoPE
 * frequencies stay f32.
 *
 * Matrices that read the same input are fused so that one GEMM computes
 * them: wq | wk | wv (rows stacked) and gate | up.  All tensors live in one
 * allocation.
 */

#ifndef LLMD_CUDA_WEIGHTS_H
#define LLMD_CUDA_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

struct cuda_layer {
    const float    *attn_norm, *ffn_norm;   /* [dim] */
    const float    *qkv_bias;               /* [q_dim + 2 kv_dim] or NULL */
    const uint16_t *qkv;                    /* [q_dim + 2 kv_dim][dim] */
    const uint16_t *o;                      /* [dim][q_dim] */
    const uint16_t *gate_up;                /* [2 hidden][dim] */
    const uint16_t *down;                   /* [dim][hidden] */
};

struct cuda_weights {
    void               *base;               /* the one device allocation */
    size_t              bytes;
    const uint16_t     *embd;               /* [vocab][dim] */
    const uint16_t     *head;               /* [vocab][dim]; embd if tied */
    const float        *out_norm;           /* [dim] */
    const float        *inv_freq;           /* [n_rot / 2] */
    struct cuda_layer  *layers;             /* host array of device pointers */
};

/* Upload m (and the RoPE frequencies) to the current device.
 * Returns 0, or -1 with a one-line reason. */
int cuda_weights_upload(struct cuda_weights *w, const struct model *m,
    const float *inv_freq, char *err, int err_len);
void cuda_weights_free(struct cuda_weights *w);

/* Rows [row0, row0 + n) of w as bf16 bits, n * w->cols values: the
 * conversion the upload applies (host side, testable without a GPU). */
void cuda_rows_to_bf16(const struct weight *w, int row0, int n, uint16_t *out);

#endif
