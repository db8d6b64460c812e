/*
 * Workloads whose requests depend on earlier answers.
 *
 * multi-turn: chat sessions of --turns turns.  Every session opens with
 * the same --system-tokens system prompt; each turn adds a user message of
 * --question-tokens, and from the second turn on the request carries the
 * whole history, including the answers the server returned.  The next turn
 * is sent an exponentially distributed think time (mean --think-time)
 * after the previous answer ended.  Sessions start as a Poisson process at
 * --rate / --turns, so requests arrive at about --rate.
 *
 * mixed: short RAG-style lookups (a unique passage plus question of
 * short-max/4 .. --short-max-tokens, answers of short-max-output/4 ..
 * --short-max-output tokens) interleaved with long agent jobs (fraction
 * --long-fraction of arrivals): --long-steps steps, the first with a prompt
 * drawn so that every step stays within --long-min-tokens ..
 * --long-max-tokens, each later step adding the previous answer
 * (--long-output-tokens) and a tool result of --tool-tokens.
 */
#include <stdio.h>
#include <stdlib.h>

#include "workload_gen.h"

static void multi_turn_defaults(struct workload_params *p)
{
    DEFAULT(system_tokens, 512);
    DEFAULT(question_tokens, 128);
    DEFAULT(output_tokens, 256);
    DEFAULT(turns, 5);
    DEFAULT(think_time, 2.0);
}

static int multi_turn_check(const struct workload_params *p, char *err, size_t errlen)
{
    if (p->burst > 0) {
        snprintf(err, errlen, "%s: --concurrency-burst needs independent requests", p->name);
        return -1;
    }
    if (p->turns < 1 || p->system_tokens < 16 || p->question_tokens < 16
        || p->output_tokens < 1) {
        snprintf(err, errlen, "%s: --turns >= 1, --system-tokens/--question-tokens"
                 " >= 16, --output-tokens >= 1", p->name);
        return -1;
    }
    return 0;
}

static double multi_turn_rpa(const struct workload_params *p)
{
    return (double) p->turns;
}

static int multi_turn_prepare(struct gen_ctx *g)
{
    const char **system = malloc(sizeof(*system));
    size_t len = content_len_for(g->p->api, "system", g->p->system_tokens);

    *system = text_words(&g->wl->arena, &g->text, len, "assistant rules: ");
    g->state = system;
    return 0;
}

static void multi_turn_emit(struct gen_ctx *g, double t)
{
    const struct workload_params *p = g->p;
    const char **system = g->state;
    size_t qlen = content_len_for(p->api, "user", p->question_tokens);
    size_t prev = 0;
    char tag[64];

    for (long turn = 0; turn < p->turns && g->wl->n < g->limit; turn++) {
        struct bench_request *r = workload_add(g->wl, t);
        size_t at = g->wl->n - 1;

        r->session = (int) g->arrivals;
        r->turn = (int) turn;
        r->max_tokens = (int) p->output_tokens;
        if (turn == 0)
            request_add_msg(g->wl, r, "system", *system,
                            content_len_for(p->api, "system", p->system_tokens));
        snprintf(tag, sizeof(tag), "session %ld turn %ld: ", g->arrivals, turn);
        request_add_msg(g->wl, r, "user", text_words(&g->wl->arena, &g->text, qlen, tag), qlen);
        if (turn > 0)
            workload_chain(g->wl, prev, at, rng_exp(&g->pick, p->think_time));
        prev = at;
    }
}

const struct generator gen_multi_turn = {
    .name = "multi-turn",
    .defaults = multi_turn_defaults,
    .check = multi_turn_check,
    .prepare = multi_turn_prepare,
    .emit = multi_turn_emit,
    .requests_per_arrival = multi_turn_rpa,
};

static void mixed_defaults(struct workload_params *p)
{
    DEFAULT(long_fraction, 0.1);
    DEFAULT(long_steps, 4);
    DEFAULT(long_min_tokens, 8192);
    DEFAULT(long_max_tokens, 32768);
    DEFAULT(long_output_tokens, 512);
    DEFAULT(tool_tokens, 1024);
    DEFAULT(short_max_tokens, 512);
    DEFAULT(short_max_output, 64);
    DEFAULT(think_time, 0.5);
}

/* prompt tokens one agent step adds to the next: the answer, as an
 * assistant message, and the tool result, as a user message */
static long step_growth(const struct workload_params *p)
{
    return rendered_tokens(p->api, "assistant", (size_t) p->long_output_tokens)
           + p->tool_tokens;
}

static int mixed_check(const struct workload_params *p, char *err, size_t errlen)
{
    if (p->burst > 0) {
        snprintf(err, errlen, "%s: --concurrency-burst needs independent requests", p->name);
        return -1;
    }
    if (p->long_fraction > 1 || p->long_steps < 1 || p->short_max_tokens < 64
        || p->short_max_output < 4 || p->long_output_tokens < 1 || p->tool_tokens < 16) {
        snprintf(err, errlen, "%s: --long-fraction <= 1, --long-steps >= 1, "
                 "--short-max-tokens >= 64, --short-max-output >= 4, "
                 "--tool-tokens >= 16", p->name);
        return -1;
    }
    if (p->long_min_tokens < 16 || p->long_min_tokens
        + (p->long_steps - 1) * step_growth(p) > p->long_max_tokens) {
        snprintf(err, errlen, "%s: --long-min-tokens + (steps-1) * (answer + tool) "
                 "= %ld exceeds --long-max-tokens %ld", p->name,
                 p->long_min_tokens + (p->long_steps - 1) * step_growth(p),
                 p->long_max_tokens);
        return -1;
    }
    return 0;
}

static double mixed_rpa(const struct workload_params *p)
{
    return 1.0 - p->long_fraction + p->long_fraction * (double) p->long_steps;
}

static void mixed_short(struct gen_ctx *g, double t)
{
    const struct workload_params *p = g->p;
    struct bench_request *r = workload_add(g->wl, t);
    long in = rng_range(&g->pick, p->short_max_tokens / 4, p->short_max_tokens);
    size_t len = content_len_for(p->api, "user", in);
    char tag[48];

    snprintf(tag, sizeof(tag), "lookup %ld: ", g->arrivals);
    r->session = (int) g->arrivals;
    r->tag = "short";
    r->max_tokens = (int) rng_range(&g->pick, p->short_max_output / 4, p->short_max_output);
    request_add_msg(g->wl, r, "user", text_words(&g->wl->arena, &g->text, len, tag), len);
}

static void mixed_long(struct gen_ctx *g, double t)
{
    const struct workload_params *p = g->p;
    long first_max = p->long_max_tokens - (p->long_steps - 1) * step_growth(p);
    long first = rng_range(&g->pick, p->long_min_tokens, first_max);
    size_t tool_len = content_len_for(p->api, "user", p->tool_tokens);
    size_t prev = 0;
    char tag[64];

    for (long step = 0; step < p->long_steps && g->wl->n < g->limit; step++) {
        struct bench_request *r = workload_add(g->wl, t);
        size_t at = g->wl->n - 1;
        size_t len = step == 0 ? content_len_for(p->api, "user", first) : tool_len;

        r->session = (int) g->arrivals;
        r->turn = (int) step;
        r->tag = "long";
        r->max_tokens = (int) p->long_output_tokens;
        snprintf(tag, sizeof(tag), step == 0 ? "job %ld: " : "job %ld tool result %ld: ",
                 g->arrivals, step);
        request_add_msg(g->wl, r, "user", text_words(&g->wl->arena, &g->text, len, tag), len);
        if (step > 0)
            workload_chain(g->wl, prev, at, rng_exp(&g->pick, p->think_time));
        prev = at;
    }
}

static void mixed_emit(struct gen_ctx *g, double t)
{
    if (rng_unit(&g->pick) < g->p->long_fraction)
        mixed_long(g, t);
    else
        mixed_short(g, t);
}

const struct generator gen_mixed = {
    .name = "mixed",
    .defaults = mixed_defaults,
    .check = mixed_check,
    .emit = mixed_emit,
    .requests_per_arrival = mixed_rpa,
};
