/*
 * Prefix-reuse workloads.
 *
 * shared-prefix: inference-perf's shared_prefix data set as used by llm-d's
 * published benchmark.  --groups groups each own a system prompt of
 * --system-tokens; each group has --users users, each with a fixed question
 * of --question-tokens.  Every arrival picks a (group, user) uniformly, so
 * the distinct prompt tokens (the cache demand) are
 * groups * (system + users * question), and each prompt recurs.
 *
 * hot-spot: every request shares one --system-tokens prefix, followed by a
 * unique --question-tokens question; a router that follows the prefix alone
 * sends everything to one worker.
 */
#include <stdio.h>
#include <stdlib.h>

#include "workload_gen.h"

struct prefix_texts {
    const char    **system;     /* per group */
    const char    **question;   /* per group * users */
    size_t          system_len, question_len;
};

static void shared_prefix_defaults(struct workload_params *p)
{
    DEFAULT(groups, 150);
    DEFAULT(users, 5);
    DEFAULT(system_tokens, 6000);
    DEFAULT(question_tokens, 1200);
    DEFAULT(output_tokens, 1000);
}

static int check_lengths(const struct workload_params *p, char *err, size_t errlen)
{
    if (p->groups < 1 || p->users < 1 || p->system_tokens < 16
        || p->question_tokens < 16 || p->output_tokens < 1) {
        snprintf(err, errlen, "%s: --groups/--users >= 1, --system-tokens/"
                 "--question-tokens >= 16, --output-tokens >= 1", p->name);
        return -1;
    }
    return 0;
}

static int shared_prefix_prepare(struct gen_ctx *g)
{
    const struct workload_params *p = g->p;
    struct prefix_texts *s = calloc(1, sizeof(*s));
    char tag[48];

    s->system = calloc((size_t) p->groups, sizeof(char *));
    s->question = calloc((size_t) (p->groups * p->users), sizeof(char *));
    s->system_len = content_len_for(p->api, "system", p->system_tokens);
    s->question_len = content_len_for(p->api, "user", p->question_tokens);
    for (long i = 0; i < p->groups; i++) {
        snprintf(tag, sizeof(tag), "group %ld: ", i);
        s->system[i] = text_words(&g->wl->arena, &g->text, s->system_len, tag);
    }
    for (long i = 0; i < p->groups * p->users; i++) {
        snprintf(tag, sizeof(tag), "user %ld asks: ", i);
        s->question[i] = text_words(&g->wl->arena, &g->text, s->question_len, tag);
    }
    g->state = s;
    return 0;
}

static void shared_prefix_emit(struct gen_ctx *g, double t)
{
    const struct workload_params *p = g->p;
    struct prefix_texts *s = g->state;
    struct bench_request *r = workload_add(g->wl, t);
    long group = rng_range(&g->pick, 0, p->groups - 1);
    long user = rng_range(&g->pick, 0, p->users - 1);
    long session = group * p->users + user;

    r->group = (int) group;
    r->session = (int) session;
    r->max_tokens = (int) p->output_tokens;
    request_add_msg(g->wl, r, "system", s->system[group], s->system_len);
    request_add_msg(g->wl, r, "user", s->question[session], s->question_len);
}

static void shared_prefix_release(struct gen_ctx *g)
{
    struct prefix_texts *s = g->state;

    /* the texts themselves live in the arena */
    free(s->system);
    free(s->question);
    free(s);
}

const struct generator gen_shared_prefix = {
    .name = "shared-prefix",
    .defaults = shared_prefix_defaults,
    .check = check_lengths,
    .prepare = shared_prefix_prepare,
    .emit = shared_prefix_emit,
    .release = shared_prefix_release,
    .requests_per_arrival = one_request_per_arrival,
};

static void hot_spot_defaults(struct workload_params *p)
{
    DEFAULT(system_tokens, 2048);
    DEFAULT(question_tokens, 64);
    DEFAULT(output_tokens, 128);
    DEFAULT(requests, 4096);
    p->groups = 1;
    p->users = 1;
}

static int hot_spot_prepare(struct gen_ctx *g)
{
    const char **prefix = malloc(sizeof(*prefix));
    size_t len = content_len_for(g->p->api, "system", g->p->system_tokens);

    *prefix = text_words(&g->wl->arena, &g->text, len, "shared: ");
    g->state = prefix;
    return 0;
}

static void hot_spot_emit(struct gen_ctx *g, double t)
{
    const struct workload_params *p = g->p;
    const char **prefix = g->state;
    struct bench_request *r = workload_add(g->wl, t);
    size_t qlen = content_len_for(p->api, "user", p->question_tokens);
    char tag[48];

    snprintf(tag, sizeof(tag), "request %zu: ", g->wl->n - 1);
    r->group = 0;
    r->session = (int) g->wl->n - 1;
    r->max_tokens = (int) p->output_tokens;
    request_add_msg(g->wl, r, "system", *prefix,
                    content_len_for(p->api, "system", p->system_tokens));
    request_add_msg(g->wl, r, "user", text_words(&g->wl->arena, &g->text, qlen, tag), qlen);
}

const struct generator gen_hot_spot = {
    .name = "hot-spot",
    .defaults = hot_spot_defaults,
    .check = check_lengths,
    .prepare = hot_spot_prepare,
    .emit = hot_spot_emit,
    .requests_per_arrival = one_request_per_arrival,
};
