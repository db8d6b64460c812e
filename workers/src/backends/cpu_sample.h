/*
 * Next-token choice from logits: greedy at temperature 0, otherwise
 * temperature-scaled softmax with top-p (nucleus) truncation, drawn from the
 * request's own seeded generator so a (prompt, seed) pair always gives the
 * same text, whatever else shares the batch.
 */

#ifndef LLMD_CPU_SAMPLE_H
#define LLMD_CPU_SAMPLE_H

#include <stdint.h>

#include "sched/request.h"

/* probs and order are scratch of n entries each. */
int32_t sample_token(const float *logits, int n, const struct gen_params *p,
    uint64_t *rng, float *probs, int32_t *order);

int32_t argmax(const float *x, int n);

/* The next draw in [0, 1) from a request's generator (splitmix64); every
 * backend draws once per token sampled at a temperature above 0. */
double sample_uniform(uint64_t *rng);

/* The chosen token's log-probability under the model (raw logits, before
 * temperature, as vLLM reports them) and the `top` most likely tokens. */
void token_logprobs(const float *logits, int n, int32_t chosen, int top,
    struct token_logprob *out);

#endif
