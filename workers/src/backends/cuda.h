/*
 * CUDA backend: the cpu backend's models (GGUF llama, mistral, qwen2) on
 * one GPU, on the same engine.  Weights in bf16 (cuda_weights.h), KV pages
 * in bf16 in GPU memory (the engine's pool, adopted in attach_kv), cuBLAS
 * GEMMs, the kernels of cuda_api.h, decode steps replayed from CUDA
 * graphs.  Exposed for tests and tools.
 */

#ifndef LLMD_BACKEND_CUDA_H
#define LLMD_BACKEND_CUDA_H

#include <stdbool.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend.h"
#include "model/model.h"
#include "model/tokenizer_vocab.h"
#include "cuda_api.h"
#include "cuda_graph.h"
#include "cuda_plan.h"
#include "cuda_weights.h"

struct cuda_state {
    int                 device;
    int                 n_sms;
    char                device_name[256];
    struct gguf_file    file;
    struct model        model;
    struct vocab        vocab;
    struct cuda_dims    dims;
    struct cuda_weights w;
    bool                tiles;          /* tiled prefill for this head size */
    bool                use_graphs;     /* LLMD_CUDA_GRAPHS=0 turns them off */

    cudaStream_t        stream;
    cublasHandle_t      blas;
    void               *blas_workspace;

    /* the KV pages: made at init for the engine's pool, adopted by it */
    struct kv_manager  *kv;
    void               *pool;           /* device pages of kv */
    void               *spare_pool;     /* made at init, not yet adopted */
    size_t              spare_bytes;

    /* per-step device buffers, for cap_rows rows and cap_sample samples */
    int                 cap_rows, cap_sample;
    size_t              cap_words;
    int32_t            *plan_dev;
    float              *x;              /* [rows][dim] residual stream */
    uint16_t           *xb;             /* [rows][dim] normed, bf16 */
    float              *qkv;            /* [rows][q_dim + 2 kv_dim] */
    float              *q;              /* [rows][q_dim] after RoPE */
    uint16_t           *att;            /* [rows][q_dim] attention output */
    float              *gate_up;        /* [rows][2 hidden] */
    uint16_t           *h;              /* [rows][hidden] */
    float              *rope;           /* [rows][n_rot / 2][2] */
    float              *partials;       /* split-K partial results */
    uint16_t           *xs;             /* [samples][dim] head input */
    float              *logits;         /* [samples][vocab] */
    int32_t            *tokens_dev;     /* [samples] */

    /* pinned host memory */
    int32_t            *plan_host;      /* cap_words */
    int32_t            *tokens_host;    /* cap_sample */
    float              *logits_host;    /* [vocab]: one row brought back */

    struct cuda_plan    plan;
    struct graph_cache  graphs;
    char                last_error[256];
};

/* "no CUDA device visible (reason)" or a device that cannot run this
 * build's kernels: -1 with the one-line reason; 0 when `device` is usable. */
int cuda_device_probe(int device, char *err, int err_len);

/* The device's limits as this process can reach them, for benchmarks:
 * device-to-device copy bandwidth (bytes read + written per second, GB/s)
 * and cuBLAS bf16 GEMM throughput on n x n x n (TFLOP/s); best of 5,
 * 0 on failure. */
double cuda_copy_gbs(int device, size_t bytes);
double cuda_gemm_tflops(int device, int n);

/* Load a model for tools and tests (no worker config needed). */
int cuda_backend_open(struct backend *b, const char *path, int device,
    char *err, int err_len);

/* Logits of batch item `item` from the last forward(), copied to the host
 * (valid until the next call), or NULL when that item did not sample. */
const float *cuda_backend_logits(const struct backend *b, int item);

#endif
