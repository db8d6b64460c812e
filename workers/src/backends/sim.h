/*
 * Sim backend: the real engine with model-free steps.  Exposed for tests.
 */

#ifndef LLMD_BACKEND_SIM_H
#define LLMD_BACKEND_SIM_H

#include <stdint.h>

#include "sched/request.h"

/* The byte the sim writes at offset j of the K (kv = 0) or V (kv = 1) row of
 * a token, so tests can check that a block table really holds a prefix. */
static inline uint8_t sim_kv_byte(int32_t token, int pos, int layer, int kv,
    int j)
{
    return (uint8_t) (token * 31 + pos * 7 + layer * 13 + kv * 101 + j);
}

/* The sim "model": the next byte of readable pseudo-words, a pure function
 * of the request's sampler state and the text so far. */
int32_t sim_next_token(struct worker_request *r);

/* --sim-check-kv: token positions whose KV rows were checked, and how many
 * of them held other bytes than the sim writes (pages lost or corrupted
 * on their way, from the cache or from another worker). */
void sim_kv_check_counts(uint64_t *checked, uint64_t *mismatched);

#endif
