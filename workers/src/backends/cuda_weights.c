/*
 * Weight upload: convert on the host into a pinned staging buffer, copy to
 * one device allocation.  Run twice over the model: once to measure (no
 * device calls), once to copy.
 */

#include "cuda_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cpu_kernels.h"

#define STAGING_BYTES   ((size_t) 64 << 20)
#define ALIGN           256         /* cudaMalloc's own alignment */

void cuda_rows_to_bf16(const struct weight *w, int row0, int n, uint16_t *out)
{
    size_t cols = (size_t) w->cols, count = (size_t) n * cols;

    switch (w->type) {
    case GGML_F32: {
        const float *src = (const float *) w->data + (size_t) row0 * cols;
        for (size_t i = 0; i < count; i++)
            out[i] = f32_to_bf16(src[i]);
        return;
    }
    case GGML_F16: {
        const uint16_t *src = (const uint16_t *) w->data + (size_t) row0 * cols;
        for (size_t i = 0; i < count; i++)
            out[i] = f32_to_bf16(f16_to_f32(src[i]));
        return;
    }
    case GGML_BF16:
        memcpy(out, (const uint16_t *) w->data + (size_t) row0 * cols,
               count * sizeof(uint16_t));
        return;
    case GGML_Q8_0: {
        /* blocks of 32: an f16 scale, then 32 signed bytes; rows hold
         * whole blocks */
        size_t blocks = count / Q8_0_BLOCK;
        const uint8_t *b = (const uint8_t *) w->data
                           + (size_t) row0 * (cols / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
        for (size_t k = 0; k < blocks; k++, b += Q8_0_BLOCK_BYTES) {
            uint16_t d16;
            float d;

            memcpy(&d16, b, 2);
            d = f16_to_f32(d16);
            for (int j = 0; j < Q8_0_BLOCK; j++)
                out[k * Q8_0_BLOCK + j] = f32_to_bf16(d * (float) (int8_t) b[2 + j]);
        }
        return;
    }
    }
}

/* ------------------------------------------------------------------------ */

struct upload {
    uint8_t    *dev;            /* NULL while measuring */
    size_t      off;
    uint16_t   *staging;        /* pinned, STAGING_BYTES */
    cudaError_t rc;
};

/* Room for `bytes` at the next aligned offset; its device address. */
static void *place(struct upload *u, size_t bytes)
{
    void *p;

    u->off = (u->off + ALIGN - 1) / ALIGN * ALIGN;
    p = u->dev ? u->dev + u->off : NULL;
    u->off += bytes;
    return p;
}

static void copy(struct upload *u, void *dst, const void *src, size_t bytes)
{
    if (dst && u->rc == cudaSuccess)
        u->rc = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
}

/* Matrices stacked by rows into one bf16 matrix of their common cols. */
static const uint16_t *matrix_stack(struct upload *u,
    const struct weight *const *ws, int n)
{
    size_t rows = 0, cols = (size_t) ws[0]->cols;
    int chunk = (int) (STAGING_BYTES / sizeof(uint16_t) / cols);
    uint16_t *start, *dst;

    for (int i = 0; i < n; i++)
        rows += (size_t) ws[i]->rows;
    start = dst = place(u, rows * cols * sizeof(uint16_t));
    if (chunk < 1)
        chunk = 1;
    for (int i = 0; dst && i < n; i++) {
        for (int r = 0; r < ws[i]->rows; r += chunk) {
            int k = ws[i]->rows - r < chunk ? ws[i]->rows - r : chunk;

            cuda_rows_to_bf16(ws[i], r, k, u->staging);
            copy(u, dst, u->staging, (size_t) k * cols * sizeof(uint16_t));
            dst += (size_t) k * cols;
        }
    }
    return start;
}

/* f32 vectors concatenated; NULL in, NULL out */
static const float *vectors(struct upload *u, const float *const *vs,
    const int *lens, int n)
{
    size_t total = 0;
    uint8_t *dst, *at;

    if (vs[0] == NULL)
        return NULL;
    for (int i = 0; i < n; i++)
        total += (size_t) lens[i] * sizeof(float);
    dst = at = place(u, total);
    for (int i = 0; at && i < n; i++) {
        copy(u, at, vs[i], (size_t) lens[i] * sizeof(float));
        at += (size_t) lens[i] * sizeof(float);
    }
    return (const float *) dst;
}

static const float *vector(struct upload *u, const float *v, int n)
{
    return vectors(u, &v, &n, 1);
}

static void walk(struct upload *u, struct cuda_weights *w, const struct model *m,
    const float *inv_freq)
{
    const struct model_config *c = &m->cfg;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;

    w->embd = matrix_stack(u, (const struct weight *[]) { &m->token_embd }, 1);
    w->head = m->output.data == m->token_embd.data ? w->embd
              : matrix_stack(u, (const struct weight *[]) { &m->output }, 1);
    w->out_norm = vector(u, m->output_norm, c->dim);
    w->inv_freq = vector(u, inv_freq, c->n_rot / 2);
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_weights *lw = &m->layers[l];
        struct cuda_layer *cl = &w->layers[l];

        cl->attn_norm = vector(u, lw->attn_norm, c->dim);
        cl->ffn_norm = vector(u, lw->ffn_norm, c->dim);
        cl->qkv_bias = vectors(u, (const float *[]) { lw->bq, lw->bk, lw->bv },
                               (const int[]) { q_dim, kv_dim, kv_dim }, 3);
        cl->qkv = matrix_stack(u, (const struct weight *[]) { &lw->wq, &lw->wk, &lw->wv }, 3);
        cl->o = matrix_stack(u, (const struct weight *[]) { &lw->wo }, 1);
        cl->gate_up = matrix_stack(u, (const struct weight *[]) { &lw->w_gate, &lw->w_up }, 2);
        cl->down = matrix_stack(u, (const struct weight *[]) { &lw->w_down }, 1);
    }
}

int cuda_weights_upload(struct cuda_weights *w, const struct model *m,
    const float *inv_freq, char *err, int err_len)
{
    struct upload u = { 0 };
    cudaError_t rc;

    memset(w, 0, sizeof(*w));
    w->layers = calloc((size_t) m->cfg.n_layers, sizeof(*w->layers));
    if (w->layers == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    walk(&u, w, m, inv_freq);           /* measure */
    w->bytes = u.off;
    rc = cudaMalloc(&w->base, w->bytes);
    if (rc != cudaSuccess) {
        snprintf(err, (size_t) err_len, "cannot allocate %.2f GiB of GPU memory "
                 "for the weights (%s)", w->bytes / 1073741824.0, cudaGetErrorString(rc));
        w->base = NULL;
        cuda_weights_free(w);
        return -1;
    }
    rc = cudaMallocHost((void **) &u.staging, STAGING_BYTES);
    if (rc == cudaSuccess) {
        u.dev = w->base;
        u.off = 0;
        walk(&u, w, m, inv_freq);       /* copy */
        rc = u.rc;
        cudaFreeHost(u.staging);
    }
    if (rc != cudaSuccess) {
        snprintf(err, (size_t) err_len, "cannot upload the weights (%s)",
                 cudaGetErrorString(rc));
        cuda_weights_free(w);
        return -1;
    }
    return 0;
}

void cuda_weights_free(struct cuda_weights *w)
{
    if (w->base)
        cudaFree(w->base);
    free(w->layers);
    memset(w, 0, sizeof(*w));
}
