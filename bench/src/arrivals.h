/*
 * Open-loop arrival times: a Poisson process (exponential gaps) at a fixed
 * rate, or every arrival at t = 0 for burst mode.  Arrivals never depend
 * on responses, so a slow server sees the load pile up as it would in
 * production instead of slowing the client down.
 */
#ifndef BENCH_ARRIVALS_H
#define BENCH_ARRIVALS_H

#include "rng.h"

struct arrivals {
    struct rng  rng;
    double      rate;       /* arrivals/s; 0 = all at once */
    double      t;
};

void   arrivals_init(struct arrivals *a, uint64_t seed, double rate);
double arrivals_next(struct arrivals *a);

#endif
