/*
 * Backend interface: what the engine needs from a model implementation.
 *
 * The engine owns scheduling and the KV block manager; a backend only
 * computes.  forward() runs one step: for every batch item it computes the
 * KV of tokens [start, start + n_tokens) into the item's blocks, and for
 * items with `sample` set it returns the next token in next_tokens[i].
 * forward() blocks for as long as the step takes: the engine thread is the
 * only caller, and the HTTP thread never waits on it.
 */

#ifndef LLMD_BACKEND_H
#define LLMD_BACKEND_H

#include <stdint.h>

#include "sched/kv_blocks.h"
#include "sched/scheduler.h"

struct worker_config;

struct backend_info {
    int     max_model_len;      /* context length in tokens */
    int     vocab_size;
    int     eos_token;          /* -1: the model never ends on its own */
    /* KV page geometry (num_blocks and block_tokens come from the flags) */
    int     num_layers;
    int     kv_heads;
    int     head_dim;
    int     dtype_bytes;
};

struct backend;

struct backend_ops {
    const char *name;
    /* Load the model / profile and fill b->info.  Returns 0, or -1 with a
     * one-line reason in err. */
    int  (*init)(struct backend *b, const struct worker_config *cfg,
                 char *err, int err_len);
    /* The KV cache exists now; called once before the first forward. */
    void (*attach_kv)(struct backend *b, struct kv_manager *kv);
    int  (*forward)(struct backend *b, const struct batch *batch,
                    int32_t *next_tokens);
    void (*free)(struct backend *b);
    /* Optional: the backend's own Prometheus samples for /metrics, written
     * to buf (at most cap bytes, NUL included); returns their length. */
    int  (*metrics_text)(const struct backend *b, char *buf, size_t cap);
};

struct vocab;

struct backend {
    const struct backend_ops   *ops;
    struct backend_info         info;
    void                       *state;     /* backend private */
    /* the model's own tokenizer; NULL: the byte-level one (tokenizer.h) */
    const struct vocab         *vocab;
    /* set by the engine for steps whose KV is streamed to another worker:
     * called after each layer's K and V of the whole batch are written, so
     * the transfer of layer l overlaps the compute of layer l + 1 */
    void                      (*layer_done)(void *arg, int layer);
    void                       *layer_arg;
};

static inline int backend_metrics_text(const struct backend *b, char *buf,
    size_t cap)
{
    return b->ops && b->ops->metrics_text ? b->ops->metrics_text(b, buf, cap) : 0;
}

static inline void backend_layer_done(const struct backend *b, int layer)
{
    if (b->layer_done)
        b->layer_done(b->layer_arg, layer);
}

/* The backend called `name`, or NULL if this build has none by that name. */
const struct backend_ops *backend_find(const char *name);

extern const struct backend_ops sim_backend_ops;
extern const struct backend_ops cpu_backend_ops;
/* built only where nvcc is (workers/cuda.mk defines LLMD_HAVE_CUDA) */
extern const struct backend_ops cuda_backend_ops;

#endif
