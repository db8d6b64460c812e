/*
 * Deterministic pseudo-random numbers (xoshiro256**, seeded by splitmix64).
 * Our own generator rather than rand() so that a seed gives the same
 * workload on every libc.
 */
#ifndef BENCH_RNG_H
#define BENCH_RNG_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

void     rng_seed(struct rng *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(struct rng *r);
double   rng_unit(struct rng *r);                   /* [0, 1) */
long     rng_range(struct rng *r, long lo, long hi); /* [lo, hi] */
double   rng_exp(struct rng *r, double mean);

#endif
