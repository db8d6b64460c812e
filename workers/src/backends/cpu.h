/*
 * CPU backend: a Llama-family model from a GGUF file, computed in f32 on
 * the engine's paged KV cache (f32 pages).  Exposed for tests and tools.
 */

#ifndef LLMD_BACKEND_CPU_H
#define LLMD_BACKEND_CPU_H

#include "backend.h"
#include "model/model.h"
#include "model/tokenizer_vocab.h"
#include "cpu_threads.h"

struct cpu_state {
    struct gguf_file    file;
    struct model        model;
    struct vocab        vocab;
    struct kv_manager  *kv;
    const struct backend *backend;      /* for its layer_done hook */
    struct thread_pool  pool;
    float              *inv_freq;       /* [n_rot / 2] RoPE frequencies */

    /* per-step activations, one row per token of the batch */
    int                 cap_rows;
    float              *x, *xb, *xb2;   /* [rows][dim] / [rows][q_dim] */
    float              *q, *k, *v;      /* [rows][q_dim], [rows][kv_dim] x2 */
    float              *hb, *hb2;       /* [rows][hidden] */
    int                *row_item;       /* batch item of each row */
    int                *row_pos;        /* its position in the sequence */

    /* per-thread scratch: a widened weight row, attention scores */
    int                 row_scratch_len;
    float              *row_scratch;
    int                 att_len;
    float              *att;

    /* the head's output for the items that sample */
    int                 cap_sample;
    float              *xs;             /* [n][dim] */
    float              *logits;         /* [n][vocab] */
    int                *item_logits;    /* batch item -> logits row, or -1 */
    int                 cap_items;
    int                 n_logits;
    float              *probs;          /* [vocab] sampling scratch */
    int32_t            *order;          /* [vocab] */
};

/* Logits of batch item `item` from the last forward(), or NULL when that
 * item did not sample. */
const float *cpu_backend_logits(const struct backend *b, int item);

/* Load a model for tools and tests (no worker config needed). */
int cpu_backend_open(struct backend *b, const char *path, int threads,
    char *err, int err_len);

#endif
