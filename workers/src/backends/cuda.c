/*
 * CUDA backend: model load and upload, the KV pool in GPU memory, and the
 * backend_ops the engine calls (device checks: cuda_probe.c).
 *
 * Threads: init runs on the main thread, forward on the engine thread; the
 * CUDA device is per thread, so forward selects it on every call.
 */

#include "cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "cuda_forward.h"

#define BLAS_WORKSPACE_BYTES    ((size_t) 32 << 20)

static void release_pool(void *pool)
{
    cudaFree(pool);
}

static void free_state(struct cuda_state *st)
{
    if (st == NULL)
        return;
    cuda_buffers_free(st);
    cuda_plan_free(&st->plan);
    cuda_weights_free(&st->w);
    if (st->spare_pool)
        cudaFree(st->spare_pool);
    if (st->blas)
        cublasDestroy(st->blas);
    if (st->blas_workspace)
        cudaFree(st->blas_workspace);
    if (st->stream)
        cudaStreamDestroy(st->stream);
    vocab_free(&st->vocab);
    model_free(&st->model);
    gguf_close(&st->file);
    free(st);
}

static void destroy_graph(void *exec)
{
    cudaGraphExecDestroy((cudaGraphExec_t) exec);
}

/* What the kernels need of the model; -1 when they cannot run it. */
static int set_dims(struct cuda_state *st, char *err, int err_len)
{
    const struct model_config *c = &st->model.cfg;
    struct cuda_dims *d = &st->dims;

    /* 16-byte (8 x bf16) loads of a head's K and V rows */
    if (c->head_dim % 8 != 0 || c->head_dim > 256) {
        snprintf(err, (size_t) err_len, "the cuda backend needs a head size that "
                 "is a multiple of 8 up to 256 (this model: %d)", c->head_dim);
        return -1;
    }
    d->dim = c->dim;
    d->hidden = c->hidden_dim;
    d->n_heads = c->n_heads;
    d->n_kv_heads = c->n_kv_heads;
    d->head_dim = c->head_dim;
    d->n_rot = c->n_rot;
    d->vocab = c->vocab_size;
    d->neox = c->rope_style == ROPE_NEOX;
    d->eps = c->norm_eps;
    d->rope_scale = c->rope_linear_scale;
    d->num_layers = c->n_layers;
    st->tiles = cuda_attention_tiles_ok(c->head_dim);
    return 0;
}

static int setup_device(struct cuda_state *st, char *err, int err_len)
{
    struct cudaDeviceProp prop;
    const char *graphs = getenv("LLMD_CUDA_GRAPHS");
    cudaError_t rc;

    if ((rc = cudaSetDevice(st->device)) != cudaSuccess
        || (rc = cudaGetDeviceProperties(&prop, st->device)) != cudaSuccess
        || (rc = cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking)) != cudaSuccess
        || (rc = cudaMalloc(&st->blas_workspace, BLAS_WORKSPACE_BYTES)) != cudaSuccess) {
        snprintf(err, (size_t) err_len, "CUDA device %d: %s", st->device,
                 cudaGetErrorString(rc));
        return -1;
    }
    st->n_sms = prop.multiProcessorCount;
    snprintf(st->device_name, sizeof(st->device_name), "%s", prop.name);
    /* cuBLAS on our stream with our workspace: it must not allocate while
     * a decode step is being captured into a graph */
    if (cublasCreate(&st->blas) != CUBLAS_STATUS_SUCCESS
        || cublasSetStream(st->blas, st->stream) != CUBLAS_STATUS_SUCCESS
        || cublasSetWorkspace(st->blas, st->blas_workspace, BLAS_WORKSPACE_BYTES)
           != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, (size_t) err_len, "CUDA device %d: cannot set up cuBLAS", st->device);
        return -1;
    }
    if (cuda_attention_setup() != 0) {
        snprintf(err, (size_t) err_len, "CUDA device %d: the attention kernels' "
                 "shared memory was refused", st->device);
        return -1;
    }
    st->use_graphs = graphs == NULL || strcmp(graphs, "0") != 0;
    st->graphs.destroy = destroy_graph;
    return 0;
}

int cuda_backend_open(struct backend *b, const char *path, int device,
    char *err, int err_len)
{
    struct cuda_state *st;
    const struct model_config *c;
    float *inv_freq;

    if (cuda_device_probe(device, err, err_len) != 0)
        return -1;
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    st->device = device;
    if (gguf_open(&st->file, path, err, err_len) != 0) {
        free(st);
        return -1;
    }
    if (model_load(&st->model, &st->file, err, err_len) != 0
        || vocab_load(&st->vocab, &st->file, err, err_len) != 0
        || set_dims(st, err, err_len) != 0)
        goto fail;
    c = &st->model.cfg;
    if (st->vocab.n > c->vocab_size) {
        snprintf(err, (size_t) err_len, "the tokenizer has %d tokens but the "
                 "model only %d embeddings", st->vocab.n, c->vocab_size);
        goto fail;
    }
    if (setup_device(st, err, err_len) != 0)
        goto fail;

    /* RoPE frequencies as the cpu backend computes them */
    inv_freq = malloc(sizeof(float) * (size_t) (c->n_rot / 2));
    if (inv_freq == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        goto fail;
    }
    for (int i = 0; i < c->n_rot / 2; i++) {
        double f = pow(c->rope_theta, -2.0 * i / c->n_rot);
        if (st->model.rope_freq_factors)
            f /= st->model.rope_freq_factors[i];
        inv_freq[i] = (float) f;
    }
    if (cuda_weights_upload(&st->w, &st->model, inv_freq, err, err_len) != 0) {
        free(inv_freq);
        goto fail;
    }
    free(inv_freq);

    b->state = st;
    b->info.max_model_len = c->context_length;
    b->info.vocab_size = c->vocab_size;
    b->info.eos_token = st->vocab.eos;
    b->info.num_layers = c->n_layers;
    b->info.kv_heads = c->n_kv_heads;
    b->info.head_dim = c->head_dim;
    b->info.dtype_bytes = 2;            /* bf16 pages */
    b->vocab = &st->vocab;
    return 0;

fail:
    free_state(st);
    return -1;
}

static size_t pool_bytes(const struct backend *b, int blocks, int block_tokens)
{
    return (size_t) blocks * (size_t) block_tokens * 2 * (size_t) b->info.num_layers
           * (size_t) b->info.kv_heads * (size_t) b->info.head_dim * 2;
}

static int cuda_init(struct backend *b, const struct worker_config *cfg,
    char *err, int err_len)
{
    struct cuda_state *st;
    size_t bytes;
    cudaError_t rc;

    if (cuda_device_probe(cfg->device, err, err_len) != 0)
        return -1;
    if (cfg->model_path[0] == '\0') {
        snprintf(err, (size_t) err_len, "--backend cuda needs --model FILE.gguf");
        return -1;
    }
    if (cuda_backend_open(b, cfg->model_path, cfg->device, err, err_len) != 0)
        return -1;
    st = b->state;
    /* The engine's pool and the step buffers are made now, where a failure
     * can still be reported; attach_kv adopts the pool. */
    bytes = pool_bytes(b, cfg->kv_blocks, cfg->block_tokens);
    rc = cudaMalloc(&st->spare_pool, bytes);
    if (rc != cudaSuccess) {
        snprintf(err, (size_t) err_len, "cannot allocate %d KV blocks (%.2f GiB) "
                 "in GPU memory (%s)", cfg->kv_blocks, bytes / 1073741824.0,
                 cudaGetErrorString(rc));
        st->spare_pool = NULL;
        goto fail;
    }
    st->spare_bytes = bytes;
    /* on the backend's stream: a non-blocking stream does not wait for
     * work on the default one */
    cudaMemsetAsync(st->spare_pool, 0, bytes, st->stream);
    if (cuda_reserve(st, cfg->max_batch_tokens, cfg->max_batch, 0) != 0) {
        snprintf(err, (size_t) err_len, "cannot allocate the step buffers for "
                 "--max-batch-tokens %d in GPU memory", cfg->max_batch_tokens);
        goto fail;
    }
    return 0;

fail:
    free_state(st);
    b->state = NULL;
    b->vocab = NULL;
    return -1;
}

/* The engine's pages move to GPU memory: from now on kv->pool is a device
 * pointer, freed by kv_free() through release_pool(). */
static void cuda_attach_kv(struct backend *b, struct kv_manager *kv)
{
    struct cuda_state *st = b->state;
    size_t bytes = (size_t) kv->geo.num_blocks * kv->block_bytes;
    void *pool = NULL;

    cudaSetDevice(st->device);
    if (st->spare_pool && bytes <= st->spare_bytes) {
        pool = st->spare_pool;
        st->spare_pool = NULL;
    } else if (cudaMalloc(&pool, bytes) != cudaSuccess) {
        /* forward() reports it: attach_kv cannot fail */
        cudaGetLastError();
        pool = NULL;
    } else {
        cudaMemsetAsync(pool, 0, bytes, st->stream);
    }
    if (pool)
        kv_adopt_pool(kv, pool, release_pool);
    st->kv = kv;
    st->pool = pool;
    st->dims.block_tokens = kv->geo.block_tokens;
    st->dims.layer_elems = (long long) (kv->layer_bytes / 2);
    st->dims.block_elems = (long long) (kv->block_bytes / 2);
    graph_cache_clear(&st->graphs);     /* they point into the old pool */
}

static int cuda_forward(struct backend *b, const struct batch *batch,
    int32_t *next_tokens)
{
    struct cuda_state *st = b->state;
    static int reported;

    if (cuda_forward_batch(st, batch, next_tokens) == 0)
        return 0;
    if (!reported++)
        fprintf(stderr, "llmd-worker: cuda backend: %s\n", st->last_error);
    /* the engine goes on with these tokens: end the sequences */
    for (int i = 0; i < batch->n; i++)
        next_tokens[i] = b->info.eos_token >= 0 ? b->info.eos_token : 0;
    return -1;
}

const float *cuda_backend_logits(const struct backend *b, int item)
{
    struct cuda_state *st = b->state;
    int k = item < st->plan.n_items ? st->plan.item_sample[item] : -1;

    if (k < 0 || cudaMemcpy(st->logits_host, st->logits + (size_t) k * st->dims.vocab,
                            (size_t) st->dims.vocab * 4, cudaMemcpyDeviceToHost)
                 != cudaSuccess)
        return NULL;
    return st->logits_host;
}

static void cuda_free(struct backend *b)
{
    free_state(b->state);
    b->state = NULL;
    b->vocab = NULL;
}

const struct backend_ops cuda_backend_ops = {
    .name = "cuda",
    .init = cuda_init,
    .attach_kv = cuda_attach_kv,
    .forward = cuda_forward,
    .free = cuda_free,
};
