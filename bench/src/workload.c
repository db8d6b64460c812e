/* Workload parameters, defaults, and the generation loop shared by all
 * workloads: Poisson (or burst) arrivals, each arrival handed to the
 * workload's own emitter, until --requests or --duration is reached. */
#include "workload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arrivals.h"
#include "workload_gen.h"

static const struct generator *const generators[] = {
    &gen_shared_prefix, &gen_mixed, &gen_multi_turn,
    &gen_hot_spot, &gen_bursty, &gen_uniform,
};
#define N_GENERATORS (sizeof(generators) / sizeof(generators[0]))

static const struct generator *find(const char *name)
{
    for (size_t i = 0; name && i < N_GENERATORS; i++)
        if (strcmp(generators[i]->name, name) == 0)
            return generators[i];
    return NULL;
}

const char *workload_names(void)
{
    return "shared-prefix, mixed, multi-turn, hot-spot, bursty, uniform";
}

void workload_params_init(struct workload_params *p)
{
    memset(p, 0, sizeof(*p));
    p->seed = 1;
    p->requests = p->burst = p->bursts = -1;
    p->groups = p->users = p->system_tokens = p->question_tokens = -1;
    p->input_tokens = p->output_tokens = p->turns = -1;
    p->think_time = p->long_fraction = -1;
    p->long_steps = p->long_min_tokens = p->long_max_tokens = -1;
    p->long_output_tokens = p->tool_tokens = -1;
    p->short_max_tokens = p->short_max_output = -1;
}



int workload_params_finish(struct workload_params *p, char *err, size_t errlen)
{
    const struct generator *g = find(p->name);

    if (g == NULL) {
        snprintf(err, errlen, "--workload: expected one of %s, got '%s'",
                 workload_names(), p->name ? p->name : "");
        return -1;
    }
    g->defaults(p);
    if (p->burst > 0) {
        DEFAULT(bursts, 1);
        if (p->requests < 0)
            p->requests = p->burst * p->bursts;
    } else if (p->rate <= 0) {
        snprintf(err, errlen, "--rate is required for workload %s "
                 "(or --concurrency-burst N)", p->name);
        return -1;
    }
    if (p->requests < 0 && p->duration <= 0)
        p->requests = 1000;
    return g->check ? g->check(p, err, errlen) : 0;
}

struct bench_request *workload_add(struct workload *wl, double t)
{
    if (wl->n == wl->cap) {
        wl->cap = wl->cap ? wl->cap * 2 : 1024;
        wl->reqs = realloc(wl->reqs, wl->cap * sizeof(*wl->reqs));
        if (wl->reqs == NULL)
            abort();
    }
    struct bench_request *r = &wl->reqs[wl->n++];

    memset(r, 0, sizeof(*r));
    r->t = t;
    r->after = -1;
    r->prev = r->next = -1;
    r->group = r->session = -1;
    return r;
}

void workload_chain(struct workload *wl, size_t prev, size_t next, double after)
{
    wl->reqs[prev].next = (int) next;
    wl->reqs[next].prev = (int) prev;
    wl->reqs[next].after = after;
    wl->chained = 1;
}

void request_add_msg(struct workload *wl, struct bench_request *r,
                     const char *role, const char *text, size_t len)
{
    if (wl->n_msgs == wl->msgs_cap) {
        wl->msgs_cap = wl->msgs_cap ? wl->msgs_cap * 2 : 2048;
        wl->msgs = realloc(wl->msgs, wl->msgs_cap * sizeof(*wl->msgs));
        if (wl->msgs == NULL)
            abort();
    }
    if (r->n_msgs == 0)
        r->msg_first = wl->n_msgs;
    wl->msgs[wl->n_msgs++] = (struct bench_msg) { role, text, len };
    r->n_msgs++;
}

size_t content_len_for(enum bench_api api, const char *role, long tokens)
{
    long overhead = api == API_CHAT ? (long) strlen(role) + 2 : 0;

    return tokens > overhead ? (size_t) (tokens - overhead) : 1;
}

long rendered_tokens(enum bench_api api, const char *role, size_t content_len)
{
    return (long) content_len + (api == API_CHAT ? (long) strlen(role) + 2 : 0);
}

int workload_generate(const struct workload_params *p, struct workload *wl)
{
    const struct generator *g = find(p->name);
    struct gen_ctx ctx;
    struct arrivals a;

    memset(wl, 0, sizeof(*wl));
    memset(&ctx, 0, sizeof(ctx));
    ctx.p = p;
    ctx.wl = wl;
    ctx.limit = p->requests > 0 ? (size_t) p->requests : SIZE_MAX;
    rng_seed(&ctx.text, p->seed, STREAM_TEXT);
    rng_seed(&ctx.pick, p->seed, STREAM_PICK);
    if (g->prepare && g->prepare(&ctx) != 0)
        return -1;
    /* sessions and agent jobs send several requests per arrival; scale
     * the arrival rate so that --rate stays the request rate */
    arrivals_init(&a, p->seed, p->burst > 0 ? 0 : p->rate / g->requests_per_arrival(p));
    while (wl->n < ctx.limit) {
        double t = arrivals_next(&a);

        if (p->duration > 0 && t >= p->duration)
            break;
        g->emit(&ctx, t);
        ctx.arrivals++;
    }
    if (g->release)
        g->release(&ctx);
    else
        free(ctx.state);
    return 0;
}

void workload_free(struct workload *wl)
{
    free(wl->reqs);
    free(wl->msgs);
    text_arena_free(&wl->arena);
    memset(wl, 0, sizeof(*wl));
}
