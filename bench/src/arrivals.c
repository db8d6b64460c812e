#include "arrivals.h"

enum { STREAM_ARRIVALS = 1 };

void arrivals_init(struct arrivals *a, uint64_t seed, double rate)
{
    rng_seed(&a->rng, seed, STREAM_ARRIVALS);
    a->rate = rate;
    a->t = 0;
}

double arrivals_next(struct arrivals *a)
{
    if (a->rate > 0)
        a->t += rng_exp(&a->rng, 1.0 / a->rate);
    return a->t;
}
