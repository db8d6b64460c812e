/*
 * What the host tells the kernels about one step, shared by C and CUDA.
 *
 * The host packs the step into one array of int32 words (cuda_plan.c) and
 * copies it to the device in one transfer; every kernel reads its counts,
 * positions and block tables from there instead of from launch arguments.
 * A captured CUDA graph therefore stays valid from step to step: only the
 * words change, never a kernel argument.
 *
 *   header      PLAN_HEADER_WORDS words, indexed by enum plan_word
 *   row_token   [n_rows]        token id of each new token
 *   row_pos     [n_rows]        its position in its sequence
 *   row_slot    [n_rows]        block * block_tokens + pos % block_tokens
 *   att         [n_att][3]      row, item, keys (= pos + 1): one query for
 *                               the per-row (split-K) attention kernel
 *   tile        [n_tiles][4]    item, first row, first pos, rows: a tile of
 *                               consecutive prompt rows for the tiled kernel
 *   sample_row  [n_sample]      row whose logits are sampled
 *   sample_par  [n_sample][3]   temperature, top_p, uniform draw (f32 bits)
 *   table       [n_items][table_stride]   block tables (last: variable)
 */

#ifndef LLMD_CUDA_PLAN_LAYOUT_H
#define LLMD_CUDA_PLAN_LAYOUT_H

#include <math.h>
#include <stdint.h>

enum plan_word {
    PLAN_N_ROWS,
    PLAN_N_ITEMS,
    PLAN_N_SAMPLE,
    PLAN_N_ATT,
    PLAN_N_TILES,
    PLAN_TABLE_STRIDE,
    PLAN_SPLIT_TOKENS,      /* keys per split of the per-row kernel */
    PLAN_MAX_SPLITS,        /* splits per query the partials have room for */
    /* offsets, in words from the start, of the arrays above */
    PLAN_ROW_TOKEN,
    PLAN_ROW_POS,
    PLAN_ROW_SLOT,
    PLAN_ATT,
    PLAN_TILE,
    PLAN_SAMPLE_ROW,
    PLAN_SAMPLE_PAR,
    PLAN_TABLE,
    PLAN_HEADER_WORDS
};

#define PLAN_ATT_WORDS      3
#define PLAN_TILE_WORDS     4
#define PLAN_PAR_WORDS      3

/* prompt rows per tile of the tiled prefill kernel */
#define PLAN_TILE_ROWS      64
/* split-K of the per-row kernel: at least this many keys per split, split
 * lengths rounded to this multiple, and at most this many splits */
#define PLAN_SPLIT_MIN      64
#define PLAN_SPLIT_ALIGN    16
#define PLAN_MAX_SPLIT      64

#ifdef __CUDACC__
#define PLAN_FN __host__ __device__ static inline
#else
#define PLAN_FN static inline
#endif

/* Splits a query of `keys` keys is cut into. */
PLAN_FN int plan_splits_of(int keys, int split_tokens)
{
    return (keys + split_tokens - 1) / split_tokens;
}

/* Element offset (in KV dtype units) of one token's K or V row of one head
 * in the pool, the layout of kv_blocks.h:
 * [block][layer][K, V][block_tokens][kv_heads][head_dim]. */
PLAN_FN int64_t plan_kv_offset(int block, int layer, int k_or_v, int slot,
    int head, int block_tokens, int kv_heads, int head_dim, int num_layers)
{
    int64_t row = (int64_t) kv_heads * head_dim;
    int64_t layer_elems = 2 * (int64_t) block_tokens * row;

    return (int64_t) block * layer_elems * num_layers
           + (int64_t) layer * layer_elems
           + ((int64_t) k_or_v * block_tokens + slot) * row
           + (int64_t) head * head_dim;
}

/* Weight of a partial softmax with running max m_part when the maxima are
 * merged to m_all (scores in log2 units); an empty partial weighs 0. */
PLAN_FN float plan_merge_weight(float m_part, float m_all)
{
    return m_part == -INFINITY ? 0.0f : exp2f(m_part - m_all);
}

#endif
