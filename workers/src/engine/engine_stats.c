/*
 * Engine self-measurement: see engine_stats.h.
 */

#include "engine_stats.h"
#include "base/clock.h"

#include <string.h>

#define EWMA_ALPHA  0.1

void step_fit_init(struct step_fit *f, int horizon)
{
    memset(f, 0, sizeof(*f));
    f->keep = horizon > 1 ? 1.0 - 1.0 / horizon : 0.5;
}

void step_fit_add(struct step_fit *f, double x, double y)
{
    f->w = f->w * f->keep + 1;
    f->sx = f->sx * f->keep + x;
    f->sy = f->sy * f->keep + y;
    f->sxx = f->sxx * f->keep + x * x;
    f->sxy = f->sxy * f->keep + x * y;
    f->n++;
}

int step_fit_get(const struct step_fit *f, double *base, double *slope)
{
    double mx, my, var, cov;

    if (f->n == 0 || f->w <= 0)
        return -1;
    mx = f->sx / f->w;
    my = f->sy / f->w;
    var = f->sxx / f->w - mx * mx;
    cov = f->sxy / f->w - mx * my;
    /* relative threshold: batch sizes that barely vary tell nothing about
     * the slope */
    *slope = var > 1e-9 * (1 + mx * mx) ? cov / var : 0;
    if (*slope < 0)
        *slope = 0;
    *base = my - *slope * mx;
    if (*base < 0) {
        /* keep the line through the mean with a non-negative intercept */
        *base = 0;
        *slope = mx > 0 ? my / mx : 0;
    }
    return 0;
}

void engine_stats_init(struct engine_stats *s)
{
    memset(s, 0, sizeof(*s));
    step_fit_init(&s->decode, 512);
    pthread_mutex_init(&s->lock, NULL);
}

void engine_stats_destroy(struct engine_stats *s)
{
    pthread_mutex_destroy(&s->lock);
}

static double ewma(double old, double sample)
{
    return old == 0 ? sample : old + EWMA_ALPHA * (sample - old);
}

void engine_stats_step(struct engine_stats *s, int n_decode, int n_prefill,
    double seconds)
{
    double ms = seconds * 1e3, base, slope, prefill_ms;

    if (n_prefill == 0) {
        if (n_decode > 0)
            step_fit_add(&s->decode, n_decode, ms);
        return;
    }
    /* a mixed step: charge the decodes what the fit says they cost, but
     * never more than three quarters of the step */
    prefill_ms = ms;
    if (step_fit_get(&s->decode, &base, &slope) == 0)
        prefill_ms -= base + slope * n_decode;
    if (prefill_ms < ms * 0.25)
        prefill_ms = ms * 0.25;
    if (prefill_ms <= 0)
        return;
    s->prefill_tps = ewma(s->prefill_tps, n_prefill / (prefill_ms * 1e-3));
}

void engine_stats_first_token(struct engine_stats *s, double ttft_seconds)
{
    s->ttft_ms = ewma(s->ttft_ms, ttft_seconds * 1e3);
}

/* Tokens a waiting request will really compute: the blocks of its prompt
 * already in the cache are reused at admission.  Counting the whole prompt
 * made a worker holding hot prefixes look far busier than it is. */
static uint64_t uncached_prompt_tokens(const struct kv_manager *kv,
    const struct worker_request *r)
{
    int bt = kv->geo.block_tokens, full = (r->n_tokens - 1) / bt, i;
    uint64_t parent = KV_HASH_SEED;

    for (i = 0; i < full; i++) {
        parent = kv_block_hash(parent, r->tokens + (size_t) i * bt, bt);
        if (kv_lookup(kv, parent) == KV_NO_BLOCK)
            break;
    }
    return (uint64_t) (r->n_tokens - i * bt);
}

/* Recounted at most every 20 ms: the walk hashes every waiting prompt. */
#define QUEUED_RECOUNT_S    0.02

uint64_t engine_stats_queued_prefill(struct engine_stats *s,
    const struct scheduler *sched)
{
    uint64_t n = 0;
    double now = now_seconds();

    if (now - s->queued_at < QUEUED_RECOUNT_S)
        return s->queued_prefill;

    for (int i = 0; i < sched->n_running; i++) {
        const struct worker_request *r = sched->running[i];
        /* a prefill worker computes these, not this one */
        if (r->pd_state == PD_WAITING)
            continue;
        if (r->num_computed < r->n_prompt)
            n += (uint64_t) (r->n_prompt - r->num_computed);
    }
    /* waiting requests (preempted ones too) start over at admission */
    for (int i = 0; i < sched->n_waiting; i++)
        if (sched->waiting[i]->pd_state != PD_PENDING)
            n += uncached_prompt_tokens(sched->kv, sched->waiting[i]);

    s->queued_at = now;
    s->queued_prefill = n;
    return n;
}

void engine_stats_publish(struct engine_stats *s, uint64_t queued_prefill)
{
    struct engine_stats_snapshot snap = { .queued_prefill_tokens = queued_prefill,
                                          .prefill_tps = s->prefill_tps,
                                          .ttft_ms = s->ttft_ms };

    if (step_fit_get(&s->decode, &snap.decode_ms_base,
                     &snap.decode_ms_per_seq) != 0)
        snap.decode_ms_base = snap.decode_ms_per_seq = 0;
    if (pthread_mutex_trylock(&s->lock) != 0)
        return;
    s->shared = snap;
    pthread_mutex_unlock(&s->lock);
}

void engine_stats_read(struct engine_stats *s, struct engine_stats_snapshot *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->shared;
    pthread_mutex_unlock(&s->lock);
}
