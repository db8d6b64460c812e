/* Scheduler: chunked prefill next to decodes, priorities, aging,
 * preemption, prefix reuse, and real KV pages through the sim backend. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/sim.h"
#include "base/config.h"
#include "sched/scheduler.h"
#include "suites.h"

static struct kv_manager kv;
static struct scheduler s;
static struct worker_request *reqs[64];
static int n_reqs;

static void setup(int blocks, int bt, int max_batch, int max_tokens, double aging)
{
    struct kv_geometry geo = { blocks, bt, 1, 1, 2, 1 };
    struct sched_config sc = { max_batch, max_tokens, aging };

    ck_assert_int_eq(kv_init(&kv, &geo), 0);
    ck_assert_int_eq(sched_init(&s, &sc, &kv), 0);
    n_reqs = 0;
}

static void teardown(void)
{
    for (int i = 0; i < n_reqs; i++)
        request_free(reqs[i]);
    sched_destroy(&s);
    kv_free(&kv);
}

static struct worker_request *add(int n_prompt, int max_tokens, int priority,
    double arrival, int fill)
{
    struct gen_params p = { .max_tokens = max_tokens, .priority = priority };
    int32_t tokens[1024];
    struct worker_request *r;

    for (int i = 0; i < n_prompt; i++)
        tokens[i] = (fill + i * 7) & 0xff;
    r = request_new(tokens, n_prompt, &p, kv.geo.block_tokens);
    ck_assert_ptr_nonnull(r);
    r->id = (uint64_t) n_reqs + 1;
    r->arrival = arrival;
    reqs[n_reqs++] = r;
    ck_assert_int_eq(sched_add(&s, r), 0);
    return r;
}

/* One step with a stand-in model that always answers 'x'. */
static void step(struct batch *b)
{
    sched_plan(&s, b);
    ck_assert_int_le(b->n_tokens, s.cfg.max_batch_tokens);
    ck_assert_int_le(s.n_running, s.cfg.max_batch);
    sched_commit(&s, b);
    for (int i = 0; i < b->n; i++) {
        struct worker_request *r = b->items[i].req;
        if (!b->items[i].sample)
            continue;
        r->tokens[r->n_tokens++] = 'x';
        if (++r->n_generated >= r->params.max_tokens)
            sched_finish(&s, r, FINISH_LENGTH);
    }
}

static const struct batch_item *item_of(const struct batch *b,
    const struct worker_request *r)
{
    for (int i = 0; i < b->n; i++)
        if (b->items[i].req == r)
            return &b->items[i];
    return NULL;
}

START_TEST(chunked_prefill_interleaves_with_decode)
{
    struct batch b;
    struct worker_request *a, *big;
    int prefill_steps = 0;

    setup(256, 16, 8, 64, 1.0);
    a = add(8, 100, 0, 0.0, 1);
    step(&b);
    step(&b);
    ck_assert_int_eq(a->n_generated, 2);

    /* more urgent than the decode, so only the decode-first rule keeps
     * the decode going */
    big = add(300, 5, 5, 1.0, 2);
    while (big->num_computed < 300) {
        int before = a->n_generated;
        const struct batch_item *ia, *ib;

        step(&b);
        ia = item_of(&b, a);
        ib = item_of(&b, big);
        /* the decode is never stalled by the long prompt ... */
        ck_assert_ptr_nonnull(ia);
        ck_assert_int_eq(ia->n_tokens, 1);
        ck_assert_int_eq(a->n_generated, before + 1);
        /* ... which gets what is left of the budget */
        ck_assert_ptr_nonnull(ib);
        ck_assert_int_le(ib->n_tokens, 63);
        ck_assert_int_eq(b.n_tokens, 1 + ib->n_tokens);
        prefill_steps++;
    }
    ck_assert_int_eq(prefill_steps, (300 + 62) / 63);
    ck_assert_int_eq(big->n_generated, 1);  /* sampled at the end of prefill */
    teardown();
}
END_TEST

START_TEST(higher_priority_is_admitted_first)
{
    struct batch b;
    struct worker_request *first, *low, *high;

    setup(256, 16, 1, 64, 1.0);
    first = add(4, 3, 0, 0.0, 1);
    step(&b);
    low = add(4, 2, 0, 1.0, 2);
    high = add(4, 2, 5, 2.0, 3);     /* arrives later, but more urgent */
    while (first->state != REQ_FINISHED)
        step(&b);
    step(&b);
    ck_assert_int_eq(high->state, REQ_RUNNING);
    ck_assert_int_eq(low->state, REQ_WAITING);
    teardown();
}
END_TEST

/* Steps until `low` is scheduled while a more urgent request arrives every
 * half second; returns the step number. */
static int steps_until_served(double aging)
{
    struct batch b;
    struct worker_request *low;
    int k;

    setup(256, 16, 1, 64, aging);
    low = add(4, 1, 0, 0.0, 1);
    for (k = 1; k <= 30; k++) {
        add(4, 1, 3, 0.5 * k, 10 + k);
        step(&b);
        if (low->state == REQ_FINISHED)
            break;
    }
    teardown();
    return k;
}

START_TEST(aging_prevents_starvation)
{
    /* priority 3 at one level per second: low is ahead of any request that
     * arrives 3 s after it (the 6th), and never served before */
    ck_assert_int_eq(steps_until_served(1.0), 6);
    /* with (almost) no aging the flood starves it */
    ck_assert_int_gt(steps_until_served(1e6), 30);
}
END_TEST

START_TEST(preemption_when_blocks_run_out)
{
    struct batch b;
    struct worker_request *a, *c;
    int steps = 0;

    /* 8 blocks of 4 tokens; each request grows to 22 tokens = 6 blocks */
    setup(8, 4, 4, 64, 1.0);
    a = add(12, 10, 0, 0.0, 1);
    c = add(12, 10, 0, 1.0, 2);
    while ((a->state != REQ_FINISHED || c->state != REQ_FINISHED) && steps < 200) {
        step(&b);
        ck_assert_int_le(kv.n_used, 8);
        steps++;
    }
    ck_assert_int_eq(a->state, REQ_FINISHED);
    ck_assert_int_eq(c->state, REQ_FINISHED);
    ck_assert_uint_gt(s.preemptions, 0);
    ck_assert_int_eq(a->n_preemptions, 0);  /* the older one is kept */
    ck_assert_int_gt(c->n_preemptions, 0);
    ck_assert_int_eq(a->n_generated, 10);
    ck_assert_int_eq(c->n_generated, 10);
    /* preempted work is recomputed, generated tokens are kept */
    ck_assert_int_eq(c->n_tokens, 22);
    ck_assert_int_eq(kv.n_used, 0);
    teardown();
}
END_TEST

START_TEST(prefix_reuse_and_release)
{
    struct batch b;
    struct worker_request *a, *same, *tail;

    setup(64, 16, 4, 256, 1.0);
    a = add(40, 2, 0, 0.0, 5);
    while (a->state != REQ_FINISHED)
        step(&b);
    ck_assert_int_eq(kv.n_used, 0);
    ck_assert_int_eq(a->prefix_hit_tokens, 0);

    same = add(40, 1, 0, 1.0, 5);
    step(&b);
    /* 40 tokens: two full blocks can be reused, the rest is computed */
    ck_assert_int_eq(same->prefix_hit_tokens, 32);
    ck_assert_int_eq(item_of(&b, same)->start, 32);
    ck_assert_int_eq(item_of(&b, same)->n_tokens, 8);

    tail = add(40, 3, 0, 2.0, 5);
    tail->tokens[20] = 0xff;            /* diverges in the second block */
    step(&b);
    ck_assert_int_eq(tail->prefix_hit_tokens, 16);
    ck_assert_uint_eq(s.prefix_queries, 120);
    ck_assert_uint_eq(s.prefix_hits, 48);

    sched_finish(&s, tail, FINISH_ABORT);
    ck_assert_int_eq(kv.n_used, 0);
    teardown();
}
END_TEST

static void check_pages(const struct worker_request *r)
{
    int bt = kv.geo.block_tokens;
    size_t row = kv_row_bytes(&kv);

    for (int pos = 0; pos < r->num_computed; pos++)
        for (int layer = 0; layer < kv.geo.num_layers; layer++)
            for (int k = 0; k < 2; k++) {
                const uint8_t *p = kv_slot(&kv, r->blocks[pos / bt], layer, k,
                                           pos % bt);
                for (size_t j = 0; j < row; j++)
                    ck_assert_uint_eq(p[j], sim_kv_byte(r->tokens[pos], pos,
                                                        layer, k, (int) j));
            }
}

START_TEST(sim_writes_real_pages_and_shares_them)
{
    struct worker_config cfg;
    struct backend be = { .ops = &sim_backend_ops };
    struct kv_geometry geo;
    struct sched_config sc = { 4, 64, 1.0 };
    struct worker_request *a, *twin;
    int32_t next[4];
    struct batch b;
    char err[256];

    config_defaults(&cfg);
    strcpy(cfg.sim_profile, "tiny-fast");
    cfg.speed = 0;
    ck_assert_int_eq(be.ops->init(&be, &cfg, err, sizeof(err)), 0);
    geo = (struct kv_geometry) { 32, 16, be.info.num_layers, be.info.kv_heads,
                                 be.info.head_dim, be.info.dtype_bytes };
    ck_assert_int_eq(kv_init(&kv, &geo), 0);
    ck_assert_int_eq(sched_init(&s, &sc, &kv), 0);
    be.ops->attach_kv(&be, &kv);
    n_reqs = 0;

    a = add(40, 20, 0, 0.0, 3);
    for (int i = 0; i < 4; i++) {
        sched_plan(&s, &b);
        be.ops->forward(&be, &b, next);
        sched_commit(&s, &b);
        for (int j = 0; j < b.n; j++)
            if (b.items[j].sample)
                b.items[j].req->tokens[b.items[j].req->n_tokens++] = next[j];
    }
    check_pages(a);

    twin = add(40, 20, 0, 1.0, 3);
    sched_plan(&s, &b);
    be.ops->forward(&be, &b, next);
    sched_commit(&s, &b);
    ck_assert_int_eq(twin->blocks[0], a->blocks[0]);
    ck_assert_int_eq(twin->blocks[1], a->blocks[1]);
    ck_assert_int_ne(twin->blocks[2], a->blocks[2]);
    ck_assert_int_eq(kv.blocks[a->blocks[0]].ref, 2);
    check_pages(twin);
    check_pages(a);

    be.ops->free(&be);
    teardown();
}
END_TEST

Suite *scheduler_suite(void)
{
    Suite *su = suite_create("scheduler");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, chunked_prefill_interleaves_with_decode);
    tcase_add_test(tc, higher_priority_is_admitted_first);
    tcase_add_test(tc, aging_prevents_starvation);
    tcase_add_test(tc, preemption_when_blocks_run_out);
    tcase_add_test(tc, prefix_reuse_and_release);
    tcase_add_test(tc, sim_writes_real_pages_and_shares_them);
    suite_add_tcase(su, tc);
    return su;
}
