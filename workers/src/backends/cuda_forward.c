/*
 * The forward pass of a Llama-family decoder over one engine batch on the
 * GPU.  As in the cpu backend, every new token of every batch item is a
 * row of one activation matrix, so each weight is read once per step.
 * Per layer:
 *
 *   xb = rmsnorm(x)                          bf16
 *   qkv = xb Wqkv^T                          cuBLAS, f32 out
 *   q, K/V pages = rope(qkv + bias)          K, V stored bf16 in their slots
 *   att = attention(q, pages)                per-row split-K or tiled prefill
 *   x += att Wo^T                            cuBLAS, beta = 1: residual fused
 *   xb = rmsnorm(x); gu = xb Wgu^T           gate | up in one GEMM
 *   x += swiglu(gu) Wdown^T
 *
 * then, for the sampled rows only, the final norm, the head and sampling.
 */

#include "cuda_forward.h"

#include <stdio.h>
#include <string.h>

#include "cpu_sample.h"

static int fail(struct cuda_state *st, const char *what, const char *why)
{
    snprintf(st->last_error, sizeof(st->last_error), "%s: %s", what, why);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* buffers */

static int regrow(void **p, size_t bytes)
{
    if (*p)
        cudaFree(*p);
    *p = NULL;
    return cudaMalloc(p, bytes ? bytes : 1) == cudaSuccess ? 0 : -1;
}

static int regrow_host(void **p, size_t bytes)
{
    if (*p)
        cudaFreeHost(*p);
    *p = NULL;
    return cudaMallocHost(p, bytes ? bytes : 1) == cudaSuccess ? 0 : -1;
}

static int pow2_at_least(int n, int floor)
{
    int c = floor;

    while (c < n)
        c *= 2;
    return c;
}

int cuda_reserve(struct cuda_state *st, int rows, int samples, size_t words)
{
    const struct cuda_dims *d = &st->dims;
    size_t q_dim = (size_t) d->n_heads * d->head_dim;
    size_t kv_dim = (size_t) d->n_kv_heads * d->head_dim;
    int moved = 0;

    if (rows > st->cap_rows) {
        size_t r = (size_t) pow2_at_least(rows, 16);
        size_t partials = cuda_split_partials((int) r, d->n_heads, st->n_sms)
                          * (size_t) (d->head_dim + 2);

        st->cap_rows = 0;
        if (regrow((void **) &st->x, r * d->dim * 4) || regrow((void **) &st->xb, r * d->dim * 2)
            || regrow((void **) &st->qkv, r * (q_dim + 2 * kv_dim) * 4)
            || regrow((void **) &st->q, r * q_dim * 4) || regrow((void **) &st->att, r * q_dim * 2)
            || regrow((void **) &st->gate_up, r * 2 * (size_t) d->hidden * 4)
            || regrow((void **) &st->h, r * (size_t) d->hidden * 2)
            || regrow((void **) &st->rope, r * (size_t) (d->n_rot / 2) * 2 * 4)
            || regrow((void **) &st->partials, partials * 4))
            return -1;
        st->cap_rows = (int) r;
        moved = 1;
    }
    if (samples > st->cap_sample) {
        size_t n = (size_t) pow2_at_least(samples, 8);

        st->cap_sample = 0;
        if (regrow((void **) &st->xs, n * d->dim * 2)
            || regrow((void **) &st->logits, n * (size_t) d->vocab * 4)
            || regrow((void **) &st->tokens_dev, n * 4)
            || regrow_host((void **) &st->tokens_host, n * 4))
            return -1;
        st->cap_sample = (int) n;
        moved = 1;
    }
    if (words > st->cap_words) {
        size_t n = words * 2;

        st->cap_words = 0;
        if (regrow((void **) &st->plan_dev, n * 4)
            || regrow_host((void **) &st->plan_host, n * 4))
            return -1;
        st->cap_words = n;
        moved = 1;
    }
    if (st->logits_host == NULL
        && regrow_host((void **) &st->logits_host, (size_t) d->vocab * 4))
        return -1;
    if (moved)                  /* captured graphs point at the old buffers */
        graph_cache_clear(&st->graphs);
    return 0;
}

void cuda_buffers_free(struct cuda_state *st)
{
    void *dev[] = { st->x, st->xb, st->qkv, st->q, st->att, st->gate_up, st->h,
                    st->rope, st->partials, st->xs, st->logits, st->tokens_dev,
                    st->plan_dev };
    void *host[] = { st->tokens_host, st->plan_host, st->logits_host };

    graph_cache_clear(&st->graphs);
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
        if (dev[i])
            cudaFree(dev[i]);
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++)
        if (host[i])
            cudaFreeHost(host[i]);
    st->x = st->qkv = st->q = st->gate_up = st->rope = st->partials = st->logits = NULL;
    st->xb = st->att = st->h = st->xs = NULL;
    st->tokens_dev = st->plan_dev = st->tokens_host = st->plan_host = NULL;
    st->logits_host = NULL;
    st->cap_rows = st->cap_sample = 0;
    st->cap_words = 0;
}

/* ------------------------------------------------------------------------ */
/* the step */

/* y[rows][out] = x[rows][in] W[out][in]^T + beta y: column-major cuBLAS
 * sees y^T = W x^T, W transposed. */
static int gemm(struct cuda_state *st, const uint16_t *w, int out, int in,
    const uint16_t *x, int rows, float *y, float beta)
{
    const float one = 1.0f;

    return cublasGemmEx(st->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one,
                        w, CUDA_R_16BF, in, x, CUDA_R_16BF, in, &beta,
                        y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS ? 0 : -1;
}

/* Queue every kernel of the step; no synchronisation, no allocation (it may
 * be under graph capture). */
static int run_step(struct cuda_state *st, const struct cuda_plan *p)
{
    const struct cuda_dims d = st->dims;
    const int32_t *plan = st->plan_dev;
    cudaStream_t s = st->stream;
    int rows = p->n_rows, q_dim = d.n_heads * d.head_dim;
    int qkv_dim = q_dim + 2 * d.n_kv_heads * d.head_dim, bad = 0;

    cuda_rope_table(s, plan, st->w.inv_freq, d, st->rope, rows);
    cuda_embed(s, plan, st->w.embd, d, st->x, rows);
    for (int l = 0; l < d.num_layers && !bad; l++) {
        const struct cuda_layer *w = &st->w.layers[l];

        cuda_rmsnorm(s, plan, 0, st->x, w->attn_norm, d, st->xb, rows);
        bad |= gemm(st, w->qkv, qkv_dim, d.dim, st->xb, rows, st->qkv, 0);
        cuda_qkv_store(s, plan, st->qkv, w->qkv_bias, st->rope, d, l, st->pool,
                       st->q, rows);
        cuda_attention_rows(s, plan, st->q, st->pool, d, l, st->partials, st->att,
                            p->n_att, p->max_splits);
        cuda_attention_tiles(s, plan, st->q, st->pool, d, l, st->att, p->n_tiles);
        bad |= gemm(st, w->o, d.dim, q_dim, st->att, rows, st->x, 1);
        cuda_rmsnorm(s, plan, 0, st->x, w->ffn_norm, d, st->xb, rows);
        bad |= gemm(st, w->gate_up, 2 * d.hidden, d.dim, st->xb, rows, st->gate_up, 0);
        cuda_swiglu(s, plan, st->gate_up, d, st->h, rows);
        bad |= gemm(st, w->down, d.dim, d.hidden, st->h, rows, st->x, 1);
    }
    if (!bad && p->n_sample > 0) {
        cuda_rmsnorm(s, plan, 1, st->x, st->w.out_norm, d, st->xs, p->n_sample);
        bad |= gemm(st, st->w.head, d.vocab, d.dim, st->xs, p->n_sample, st->logits, 0);
        cuda_sample(s, plan, st->logits, d.vocab, st->tokens_dev, p->n_sample);
    }
    if (bad)
        return fail(st, "cuBLAS", "a GEMM was refused");
    if (cudaPeekAtLastError() != cudaSuccess)
        return fail(st, "kernel launch", cudaGetErrorString(cudaGetLastError()));
    return 0;
}

static void graphs_off(struct cuda_state *st, const char *why)
{
    fprintf(stderr, "llmd-worker: cuda backend: decode graphs disabled (%s)\n", why);
    st->use_graphs = false;
    graph_cache_clear(&st->graphs);
    cudaGetLastError();         /* a failed capture's error is not sticky */
}

/* A pure-decode step: replay its shape's graph, capture it on the second
 * sighting, run it eagerly before that. */
static int run_decode(struct cuda_state *st, const struct cuda_plan *p)
{
    struct graph_entry *e = graph_cache_get(&st->graphs, p->n_rows, p->max_splits);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t rc;
    int step_rc;

    if (e->exec == NULL && !graph_should_capture(e))
        return run_step(st, p);
    if (e->exec == NULL) {
        rc = cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal);
        if (rc != cudaSuccess) {
            graphs_off(st, cudaGetErrorString(rc));
            return run_step(st, p);
        }
        step_rc = run_step(st, p);
        rc = cudaStreamEndCapture(st->stream, &graph);
        if (rc == cudaSuccess && step_rc == 0)
            rc = cudaGraphInstantiate(&exec, graph, 0);
        if (graph)
            cudaGraphDestroy(graph);
        if (rc != cudaSuccess || step_rc != 0) {
            graphs_off(st, step_rc != 0 ? st->last_error : cudaGetErrorString(rc));
            return run_step(st, p);
        }
        e->exec = exec;
    }
    rc = cudaGraphLaunch((cudaGraphExec_t) e->exec, st->stream);
    return rc == cudaSuccess ? 0 : fail(st, "graph launch", cudaGetErrorString(rc));
}

int cuda_forward_batch(struct cuda_state *st, const struct batch *batch,
    int32_t *next_tokens)
{
    struct cuda_plan *p = &st->plan;
    struct cuda_plan_params pp = { st->dims.block_tokens, st->dims.n_heads,
                                   st->n_sms, st->tiles };
    int vocab = st->dims.vocab, rc;
    cudaError_t ce;

    if (batch->n == 0)
        return 0;
    if (st->pool == NULL)
        return fail(st, "KV pages", "no GPU memory for the KV pool");
    cudaSetDevice(st->device);          /* the engine thread's first call */
    if (cuda_plan_build(p, batch, &pp) != 0)
        return fail(st, "plan", "out of memory");
    if (cuda_reserve(st, p->n_rows, p->n_sample, p->n_words) != 0)
        return fail(st, "step buffers", "out of GPU memory");

    memcpy(st->plan_host, p->words, p->n_words * sizeof(int32_t));
    ce = cudaMemcpyAsync(st->plan_dev, st->plan_host, p->n_words * sizeof(int32_t),
                         cudaMemcpyHostToDevice, st->stream);
    if (ce != cudaSuccess)
        return fail(st, "plan copy", cudaGetErrorString(ce));
    rc = st->use_graphs && p->pure_decode ? run_decode(st, p) : run_step(st, p);
    if (rc == 0 && p->n_sample > 0)
        cudaMemcpyAsync(st->tokens_host, st->tokens_dev, (size_t) p->n_sample * 4,
                        cudaMemcpyDeviceToHost, st->stream);
    ce = cudaStreamSynchronize(st->stream);
    if (rc != 0)
        return -1;
    if (ce != cudaSuccess)
        return fail(st, "step", cudaGetErrorString(ce));

    for (int i = 0; i < batch->n; i++) {
        struct worker_request *r = batch->items[i].req;
        int k = p->item_sample[i];

        if (k < 0)
            continue;
        next_tokens[i] = st->tokens_host[k];
        /* logprobs come from the raw logits: bring this row back */
        if (r->logprobs != NULL && r->n_tokens - r->n_prompt <= r->params.max_tokens) {
            ce = cudaMemcpy(st->logits_host, st->logits + (size_t) k * vocab,
                            (size_t) vocab * 4, cudaMemcpyDeviceToHost);
            if (ce != cudaSuccess)
                return fail(st, "logits copy", cudaGetErrorString(ce));
            token_logprobs(st->logits_host, vocab, next_tokens[i],
                           r->params.logprobs - 1, &r->logprobs[r->n_tokens - r->n_prompt]);
        }
    }
    return 0;
}
