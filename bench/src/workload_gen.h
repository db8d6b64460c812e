/* The interface each workload generator implements (workload_*.c). */
#ifndef BENCH_WORKLOAD_GEN_H
#define BENCH_WORKLOAD_GEN_H

#include "workload.h"

/* independent random streams, so that e.g. the arrival times do not move
 * when a prompt length changes */
enum { STREAM_TEXT = 2, STREAM_PICK = 3 };

struct gen_ctx {
    const struct workload_params   *p;
    struct workload                *wl;
    struct rng                      text;   /* prompt words */
    struct rng                      pick;   /* choices: group, lengths, think */
    size_t                          limit;  /* requests to generate at most */
    long                            arrivals;
    void                           *state;  /* the generator's, freed after */
};

struct generator {
    const char *name;
    void      (*defaults)(struct workload_params *p);
    int       (*check)(const struct workload_params *p, char *err, size_t errlen);
    int       (*prepare)(struct gen_ctx *g);
    void      (*emit)(struct gen_ctx *g, double t);
    void      (*release)(struct gen_ctx *g);     /* default: free(state) */
    double    (*requests_per_arrival)(const struct workload_params *p);
};

extern const struct generator gen_shared_prefix, gen_hot_spot;
extern const struct generator gen_multi_turn, gen_mixed;
extern const struct generator gen_uniform, gen_bursty;

double one_request_per_arrival(const struct workload_params *p);

#define DEFAULT(field, value) do { if (p->field < 0) p->field = (value); } while (0)

#endif
