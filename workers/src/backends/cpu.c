/*
 * CPU backend: loads the GGUF model and its tokenizer, runs the forward
 * pass on the engine's batches and samples each item's next token.
 */

#include "cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "cpu_forward.h"
#include "cpu_sample.h"

static void free_state(struct cpu_state *st)
{
    if (st == NULL)
        return;
    pool_destroy(&st->pool);
    vocab_free(&st->vocab);
    model_free(&st->model);
    gguf_close(&st->file);
    free(st->inv_freq);
    free(st->x); free(st->xb); free(st->xb2);
    free(st->q); free(st->k); free(st->v);
    free(st->hb); free(st->hb2);
    free(st->row_item); free(st->row_pos);
    free(st->row_scratch); free(st->att);
    free(st->xs); free(st->logits); free(st->item_logits);
    free(st->probs); free(st->order);
    free(st);
}

static int max3(int a, int b, int c)
{
    int m = a > b ? a : b;
    return m > c ? m : c;
}

int cpu_backend_open(struct backend *b, const char *path, int threads,
    char *err, int err_len)
{
    struct cpu_state *st = calloc(1, sizeof(*st));
    const struct model_config *c;
    int n_threads = threads > 0 ? threads : (int) sysconf(_SC_NPROCESSORS_ONLN);

    if (st == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    if (gguf_open(&st->file, path, err, err_len) != 0) {
        free(st);
        return -1;
    }
    if (model_load(&st->model, &st->file, err, err_len) != 0
        || vocab_load(&st->vocab, &st->file, err, err_len) != 0)
        goto fail;
    c = &st->model.cfg;
    if (st->vocab.n > c->vocab_size) {
        snprintf(err, (size_t) err_len, "the tokenizer has %d tokens but the "
                 "model only %d embeddings", st->vocab.n, c->vocab_size);
        goto fail;
    }
    if (pool_init(&st->pool, n_threads < 1 ? 1 : n_threads) != 0) {
        snprintf(err, (size_t) err_len, "cannot start %d threads", n_threads);
        goto fail;
    }

    st->inv_freq = malloc(sizeof(float) * (size_t) (c->n_rot / 2));
    st->row_scratch_len = max3(c->dim, c->hidden_dim, c->n_heads * c->head_dim);
    st->row_scratch = malloc(sizeof(float) * (size_t) st->row_scratch_len
                             * (size_t) st->pool.n_threads);
    st->att_len = c->context_length;
    st->att = malloc(sizeof(float) * (size_t) st->att_len * (size_t) st->pool.n_threads);
    st->probs = malloc(sizeof(float) * (size_t) c->vocab_size);
    st->order = malloc(sizeof(int32_t) * (size_t) c->vocab_size);
    if (!st->inv_freq || !st->row_scratch || !st->att || !st->probs || !st->order) {
        snprintf(err, (size_t) err_len, "out of memory");
        goto fail;
    }
    for (int i = 0; i < c->n_rot / 2; i++) {
        double f = pow(c->rope_theta, -2.0 * i / c->n_rot);
        if (st->model.rope_freq_factors)
            f /= st->model.rope_freq_factors[i];
        st->inv_freq[i] = (float) f;
    }

    b->state = st;
    b->info.max_model_len = c->context_length;
    b->info.vocab_size = c->vocab_size;
    b->info.eos_token = st->vocab.eos;
    b->info.num_layers = c->n_layers;
    b->info.kv_heads = c->n_kv_heads;
    b->info.head_dim = c->head_dim;
    b->info.dtype_bytes = (int) sizeof(float);
    b->vocab = &st->vocab;
    return 0;

fail:
    free_state(st);
    return -1;
}

static int cpu_init(struct backend *b, const struct worker_config *cfg,
    char *err, int err_len)
{
    if (cfg->model_path[0] == '\0') {
        snprintf(err, (size_t) err_len, "--backend cpu needs --model FILE.gguf");
        return -1;
    }
    return cpu_backend_open(b, cfg->model_path, cfg->threads, err, err_len);
}

static void cpu_attach_kv(struct backend *b, struct kv_manager *kv)
{
    ((struct cpu_state *) b->state)->kv = kv;
}

static int cpu_forward(struct backend *b, const struct batch *batch,
    int32_t *next_tokens)
{
    struct cpu_state *st = b->state;
    int vocab = st->model.cfg.vocab_size;

    st->backend = b;
    if (cpu_forward_batch(st, batch) != 0)
        return -1;
    for (int i = 0; i < batch->n; i++) {
        struct worker_request *r = batch->items[i].req;
        int k = st->item_logits[i];

        if (k < 0)
            continue;
        next_tokens[i] = sample_token(st->logits + (size_t) k * vocab, vocab,
                                      &r->params, &r->rng, st->probs, st->order);
        if (r->logprobs != NULL && r->n_tokens - r->n_prompt <= r->params.max_tokens)
            token_logprobs(st->logits + (size_t) k * vocab, vocab, next_tokens[i],
                           r->params.logprobs - 1, &r->logprobs[r->n_tokens - r->n_prompt]);
    }
    return 0;
}

const float *cpu_backend_logits(const struct backend *b, int item)
{
    const struct cpu_state *st = b->state;
    int k = st->item_logits[item];

    return k < 0 ? NULL : st->logits + (size_t) k * st->model.cfg.vocab_size;
}

static void cpu_free(struct backend *b)
{
    free_state(b->state);
    b->state = NULL;
    b->vocab = NULL;
}

const struct backend_ops cpu_backend_ops = {
    .name = "cpu",
    .init = cpu_init,
    .attach_kv = cpu_attach_kv,
    .forward = cpu_forward,
    .free = cpu_free,
};
