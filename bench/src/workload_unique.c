/*
 * Workloads without reuse: every prompt is a single user message of
 * --input-tokens that opens with its own request number, so no two
 * prompts share even their first block.
 *
 * uniform: Poisson arrivals; the case where prefix-aware routing has
 * nothing to gain and must not lose to least_conn.
 * bursty:  --concurrency-burst requests at once (default 800), the next
 * burst when all of them finished, --bursts times; group = burst number.
 */
#include <stdio.h>

#include "workload_gen.h"

double one_request_per_arrival(const struct workload_params *p)
{
    (void) p;
    return 1.0;
}

static void uniform_defaults(struct workload_params *p)
{
    DEFAULT(input_tokens, 1024);
    DEFAULT(output_tokens, 256);
}

static void bursty_defaults(struct workload_params *p)
{
    DEFAULT(input_tokens, 1024);
    DEFAULT(output_tokens, 1024);
    DEFAULT(burst, 800);
    DEFAULT(bursts, 3);
}

static int unique_check(const struct workload_params *p, char *err, size_t errlen)
{
    if (p->input_tokens < 16 || p->output_tokens < 1) {
        snprintf(err, errlen, "%s: --input-tokens >= 16 and --output-tokens >= 1",
                 p->name);
        return -1;
    }
    return 0;
}

static void unique_emit(struct gen_ctx *g, double t)
{
    const struct workload_params *p = g->p;
    struct bench_request *r = workload_add(g->wl, t);
    size_t id = g->wl->n - 1;
    size_t len = content_len_for(p->api, "user", p->input_tokens);
    char tag[48];

    snprintf(tag, sizeof(tag), "request %zu: ", id);
    r->session = (int) id;
    r->group = p->burst > 0 ? (int) (id / (size_t) p->burst) : -1;
    r->max_tokens = (int) p->output_tokens;
    request_add_msg(g->wl, r, "user", text_words(&g->wl->arena, &g->text, len, tag), len);
}

const struct generator gen_uniform = {
    .name = "uniform",
    .defaults = uniform_defaults,
    .check = unique_check,
    .emit = unique_emit,
    .requests_per_arrival = one_request_per_arrival,
};

const struct generator gen_bursty = {
    .name = "bursty",
    .defaults = bursty_defaults,
    .check = unique_check,
    .emit = unique_emit,
    .requests_per_arrival = one_request_per_arrival,
};
