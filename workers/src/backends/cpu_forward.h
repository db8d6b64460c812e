/*
 * The transformer forward pass over one engine batch: every batch item's
 * new tokens go through the layers together (each weight row is read once
 * per step for all of them), K and V are written into the item's KV blocks,
 * and attention reads every earlier position through the block table.
 */

#ifndef LLMD_CPU_FORWARD_H
#define LLMD_CPU_FORWARD_H

#include "sched/scheduler.h"
#include "cpu.h"

/* Computes the batch; fills st->logits for the items that sample.
 * Returns 0, or -1 when scratch memory cannot be had. */
int cpu_forward_batch(struct cpu_state *st, const struct batch *batch);

#endif
