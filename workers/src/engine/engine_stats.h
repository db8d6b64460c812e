/*
 * What the engine measures about itself for the fleet heartbeat: prefill
 * speed, decode step time as a function of batch size, time to first
 * token, and the prompt tokens still to compute.
 *
 * The engine thread updates the estimators after each step and copies them
 * into a snapshot under a mutex it only ever *tries* to take, so a reader
 * on the HTTP thread can delay a snapshot by a step but never stall one.
 */

#ifndef LLMD_ENGINE_STATS_H
#define LLMD_ENGINE_STATS_H

#include <pthread.h>
#include <stdint.h>

#include "sched/scheduler.h"

/* Weighted least squares of y = base + slope * x in which every new sample
 * scales the weight of the older ones by `keep`: O(1) memory, and the fit
 * follows the last ~1 / (1 - keep) samples. */
struct step_fit {
    double      keep;
    double      w, sx, sy, sxx, sxy;
    uint64_t    n;
};

void step_fit_init(struct step_fit *f, int horizon);
void step_fit_add(struct step_fit *f, double x, double y);
/* -1 before the first sample.  With one distinct x (say, always batch 1)
 * the slope is 0 and base the mean; a negative slope, which only noise can
 * produce, is clamped to 0 as well. */
int step_fit_get(const struct step_fit *f, double *base, double *slope);

struct engine_stats_snapshot {
    uint64_t    queued_prefill_tokens;
    double      prefill_tps;
    double      decode_ms_base;
    double      decode_ms_per_seq;
    double      ttft_ms;
};

struct engine_stats {
    /* engine thread only */
    struct step_fit     decode;         /* ms per pure-decode step vs batch */
    double              prefill_tps;    /* EWMA, 0 until measured */
    double              ttft_ms;        /* EWMA, 0 until measured */
    double              queued_at;      /* when queued_prefill was counted */
    uint64_t            queued_prefill;

    pthread_mutex_t     lock;
    struct engine_stats_snapshot shared;
};

void engine_stats_init(struct engine_stats *s);
void engine_stats_destroy(struct engine_stats *s);

/* One step computed n_decode single-token decodes and n_prefill prompt
 * tokens in `seconds`. */
void engine_stats_step(struct engine_stats *s, int n_decode, int n_prefill,
    double seconds);
void engine_stats_first_token(struct engine_stats *s, double ttft_seconds);

/* Prompt tokens not yet computed, over the running and waiting requests. */
uint64_t engine_stats_queued_prefill(struct engine_stats *s,
    const struct scheduler *sched);

/* Engine thread: refresh the snapshot unless a reader holds it right now. */
void engine_stats_publish(struct engine_stats *s, uint64_t queued_prefill);

/* Any thread. */
void engine_stats_read(struct engine_stats *s, struct engine_stats_snapshot *out);

#endif
