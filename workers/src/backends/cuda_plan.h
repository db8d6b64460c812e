/*
 * One engine batch as the cuda kernels see it: rows (one per new token),
 * attention queries, prefill tiles, sampled rows and block tables, packed
 * into the words of cuda_plan_layout.h.  Plain C, no CUDA: the packing is
 * unit-tested on machines without a GPU.
 */

#ifndef LLMD_CUDA_PLAN_H
#define LLMD_CUDA_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sched/scheduler.h"
#include "cuda_plan_layout.h"

struct cuda_plan_params {
    int     block_tokens;
    int     n_heads;
    int     n_sms;          /* multiprocessors, for sizing split-K */
    bool    tiles;          /* prompts go to the tiled kernel (head_dim 64/128) */
};

struct cuda_plan {
    int         n_rows, n_items, n_sample, n_att, n_tiles;
    int         table_stride, split_tokens, max_splits;
    bool        pure_decode;    /* one token per item, every item samples */
    int32_t    *words;
    size_t      n_words, cap_words;
    int        *item_sample;    /* batch item -> sample index, or -1 */
    int         cap_items;
};

/* Pack batch b.  Draws each sampled item's uniform from its request's
 * generator (only at temperature > 0, as the cpu backend does).
 * Returns 0, or -1 when out of memory. */
int cuda_plan_build(struct cuda_plan *p, const struct batch *b,
    const struct cuda_plan_params *pp);
void cuda_plan_free(struct cuda_plan *p);

/* Split-K for queries of at most max_keys keys: enough splits that
 * n_queries * n_heads * splits blocks fill every multiprocessor about
 * twice, each split at least PLAN_SPLIT_MIN keys, at most PLAN_MAX_SPLIT.
 * *split_tokens * *splits >= max_keys. */
void cuda_split_plan(int max_keys, int n_queries, int n_heads, int n_sms,
    int *split_tokens, int *splits);

/* Per-query partial results the split-K kernel may write for a plan of at
 * most `queries` queries (the bound cuda_split_plan keeps). */
size_t cuda_split_partials(int queries, int n_heads, int n_sms);

#endif
