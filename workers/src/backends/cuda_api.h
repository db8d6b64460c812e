/*
 * The cuda backend's kernels, callable from C.  Each launcher queues its
 * kernel(s) on `stream` and returns at once; launch errors surface through
 * cudaGetLastError() (or at the end of a graph capture).
 *
 * `plan` is the device copy of the step words (cuda_plan_layout.h): counts,
 * positions, slots and block tables come from there, so a launch with the
 * same grid can be replayed from a CUDA graph on later steps.  Grid sizes
 * are given by the host (n_* arguments); kernels past the plan's counts
 * return at once.
 *
 * Types: activations of the residual stream, GEMM outputs, q and logits
 * are f32; GEMM inputs, weights and KV pages are bf16 (uint16_t here).
 */

#ifndef LLMD_CUDA_API_H
#define LLMD_CUDA_API_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Model shape and KV page strides, passed by value to the kernels. */
struct cuda_dims {
    int         dim, hidden, n_heads, n_kv_heads, head_dim, n_rot, vocab;
    int         neox;               /* RoPE pairs (i, i + n_rot/2) */
    float       eps;                /* RMSNorm epsilon */
    float       rope_scale;         /* positions are divided by it */
    int         block_tokens;
    int         num_layers;
    long long   layer_elems;        /* bf16 elements of one layer of a block */
    long long   block_elems;        /* ... of one block */
};

/* cos, sin of pos / rope_scale * inv_freq[i] (double precision) for every
 * row: table [n_rows][n_rot / 2] of float2. */
void cuda_rope_table(cudaStream_t s, const int32_t *plan, const float *inv_freq,
    struct cuda_dims d, float *table, int n_rows);

/* x[row] = embedding row of the row's token, widened to f32. */
void cuda_embed(cudaStream_t s, const int32_t *plan, const uint16_t *table,
    struct cuda_dims d, float *x, int n_rows);

/* out[i] = bf16(w * x[row] / rms(x[row])) for i < n: rows 0.. in order, or
 * with `sampled` the plan's sampled rows (the head's input). */
void cuda_rmsnorm(cudaStream_t s, const int32_t *plan, int sampled,
    const float *x, const float *w, struct cuda_dims d, uint16_t *out, int n);

/* The QKV GEMM's output qkv [n_rows][q_dim + 2 kv_dim] (+ bias when not
 * NULL) -> RoPE on q and k; q to q_out [n_rows][q_dim] (f32), k and v as
 * bf16 into the row's KV slot of `layer` in the page pool. */
void cuda_qkv_store(cudaStream_t s, const int32_t *plan, const float *qkv,
    const float *bias, const float *rope, struct cuda_dims d, int layer,
    uint16_t *pool, float *q_out, int n_rows);

/* h = bf16(silu(gate) * up), gu [n_rows][2 hidden] = gate | up. */
void cuda_swiglu(cudaStream_t s, const int32_t *plan, const float *gu,
    struct cuda_dims d, uint16_t *h, int n_rows);

/* Paged attention, one query row at a time (decode, and prompts whose head
 * size has no tiled kernel): split-K over the keys, `splits` splits at most
 * per query, partial results in `partials`
 * (cuda_split_partials() x (head_dim + 2) floats), then merged into
 * out [n_rows][q_dim] (bf16). */
void cuda_attention_rows(cudaStream_t s, const int32_t *plan, const float *q,
    const uint16_t *pool, struct cuda_dims d, int layer, float *partials,
    uint16_t *out, int n_att, int splits);

/* Chunked-prefill attention: causal, in tiles of PLAN_TILE_ROWS queries by
 * 64 keys with an online softmax on tensor cores, reading every earlier
 * key (cached prefix pages included) through the block table.
 * head_dim 64 or 128 only (cuda_attention_tiles_ok()). */
void cuda_attention_tiles(cudaStream_t s, const int32_t *plan, const float *q,
    const uint16_t *pool, struct cuda_dims d, int layer, uint16_t *out,
    int n_tiles);
int cuda_attention_tiles_ok(int head_dim);
/* Once per process and device, before any launch or capture: raises the
 * tiled kernels' shared-memory limit.  0, or -1 when refused. */
int cuda_attention_setup(void);

/* Next token of each sampled row: argmax at temperature 0, else a draw
 * (the plan's uniform) from softmax(logits / T) restricted to the top-p
 * nucleus.  logits [n][vocab] -> tokens [n]. */
void cuda_sample(cudaStream_t s, const int32_t *plan, const float *logits,
    int vocab, int32_t *tokens, int n);

#ifdef __cplusplus
}
#endif

#endif
