/*
 * One engine batch on the GPU: plan the step, copy the plan over, run the
 * layers (eagerly, or by replaying the decode shape's CUDA graph), sample
 * and bring the chosen tokens back.
 */

#ifndef LLMD_CUDA_FORWARD_H
#define LLMD_CUDA_FORWARD_H

#include "sched/scheduler.h"
#include "cuda.h"

/* Computes the batch; next_tokens[i] for the items that sample.  Returns 0,
 * or -1 with the reason in st->last_error. */
int cuda_forward_batch(struct cuda_state *st, const struct batch *batch,
    int32_t *next_tokens);

/* Make the per-step buffers hold rows and samples (dropping the graphs
 * when they move).  0, or -1 when GPU memory runs out. */
int cuda_reserve(struct cuda_state *st, int rows, int samples, size_t words);

void cuda_buffers_free(struct cuda_state *st);

#endif
