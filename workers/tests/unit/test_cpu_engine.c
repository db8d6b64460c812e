/* CPU backend on the engine's scheduler and paged KV cache: a batch of N
 * gives the tokens of N runs alone, chunked prefill equals unchunked, and a
 * prefix-cache hit equals a cold run. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/cpu.h"
#include "model_tool/model_gen.h"
#include "sched/scheduler.h"
#include "suites.h"

#define BT          4
#define MAX_NEW     12
#define N_REQ       4
#define PROMPT_LEN  21

static struct backend be;
static char model_path[64];

static void setup(void)
{
    struct model_gen_params p;
    char err[256];

    model_gen_defaults(&p);
    p.dim = 64;
    p.hidden_dim = 96;
    p.n_heads = 4;
    p.n_kv_heads = 2;
    snprintf(model_path, sizeof(model_path), "/tmp/llmd-engine-%d.gguf", (int) getpid());
    ck_assert_msg(model_gen_write(&p, model_path, err, sizeof(err)) == 0, "%s", err);
    memset(&be, 0, sizeof(be));
    be.ops = &cpu_backend_ops;
    ck_assert_msg(cpu_backend_open(&be, model_path, 2, err, sizeof(err)) == 0, "%s", err);
}

static void teardown(void)
{
    be.ops->free(&be);
    unlink(model_path);
}

struct run {
    struct kv_manager   kv;
    struct scheduler    s;
};

static void run_open(struct run *run, int max_batch_tokens)
{
    struct kv_geometry geo = { 64, BT, be.info.num_layers, be.info.kv_heads,
                               be.info.head_dim, be.info.dtype_bytes };
    struct sched_config sc = { N_REQ, max_batch_tokens, 1.0 };

    ck_assert_int_eq(kv_init(&run->kv, &geo), 0);
    ck_assert_int_eq(sched_init(&run->s, &sc, &run->kv), 0);
    be.ops->attach_kv(&be, &run->kv);
}

static void run_close(struct run *run)
{
    sched_destroy(&run->s);
    kv_free(&run->kv);
}

static void prompt_of(int which, int32_t *p)
{
    /* prompts share their first 9 tokens, then differ */
    for (int i = 0; i < PROMPT_LEN; i++)
        p[i] = 3 + (i < 9 ? i * 7 : i * 11 + which * 29) % 250;
}

/* Runs the requests `which[0..n)` together until each has MAX_NEW tokens;
 * out[k] gets request k's generated tokens. */
static void generate(struct run *run, const int *which, int n, int32_t out[][MAX_NEW])
{
    struct worker_request *r[N_REQ];
    int32_t next[16];
    int done = 0;

    for (int k = 0; k < n; k++) {
        int32_t prompt[PROMPT_LEN];
        /* odd requests sample at temperature 0.9 from their own seed */
        struct gen_params gp = { .max_tokens = MAX_NEW, .temperature = which[k] % 2 ? 0.9 : 0,
                                 .top_p = which[k] == 3 ? 0.8 : 1.0, .seed = 42 };

        prompt_of(which[k], prompt);
        r[k] = request_new(prompt, PROMPT_LEN, &gp, BT);
        r[k]->arrival = k;
        ck_assert_int_eq(sched_add(&run->s, r[k]), 0);
    }
    while (done < n) {
        struct batch b;

        sched_plan(&run->s, &b);
        ck_assert_int_gt(b.n, 0);
        ck_assert_int_eq(be.ops->forward(&be, &b, next), 0);
        sched_commit(&run->s, &b);
        for (int i = 0; i < b.n; i++) {
            struct worker_request *q = b.items[i].req;
            if (!b.items[i].sample)
                continue;
            q->tokens[q->n_tokens++] = next[i];
            if (++q->n_generated == MAX_NEW) {
                sched_finish(&run->s, q, FINISH_LENGTH);
                done++;
            }
        }
    }
    for (int k = 0; k < n; k++) {
        memcpy(out[k], r[k]->tokens + PROMPT_LEN, sizeof(int32_t) * MAX_NEW);
        request_free(r[k]);
    }
}

START_TEST(batch_equals_alone)
{
    int32_t together[N_REQ][MAX_NEW], alone[1][MAX_NEW];
    int all[N_REQ] = { 0, 1, 2, 3 };
    struct run run;

    run_open(&run, 64);
    generate(&run, all, N_REQ, together);
    run_close(&run);
    for (int k = 0; k < N_REQ; k++) {
        run_open(&run, 64);
        generate(&run, &all[k], 1, alone);
        run_close(&run);
        ck_assert_msg(memcmp(alone[0], together[k], sizeof(alone[0])) == 0,
                      "request %d differs in a batch", k);
    }
}
END_TEST

START_TEST(chunked_prefill_equals_whole)
{
    int32_t whole[N_REQ][MAX_NEW], chunked[N_REQ][MAX_NEW];
    int all[N_REQ] = { 0, 1, 2, 3 };
    struct run run;

    run_open(&run, 512);
    generate(&run, all, N_REQ, whole);
    run_close(&run);
    run_open(&run, 5);          /* 5 tokens a step: prompts in many chunks */
    generate(&run, all, N_REQ, chunked);
    run_close(&run);
    ck_assert(memcmp(whole, chunked, sizeof(whole)) == 0);
}
END_TEST

START_TEST(prefix_hit_equals_cold)
{
    int32_t cold[1][MAX_NEW], warm[1][MAX_NEW], other[1][MAX_NEW];
    int zero = 0, two = 2;
    struct run run;

    run_open(&run, 64);
    generate(&run, &zero, 1, cold);
    ck_assert_uint_eq(run.s.prefix_hits, 0);
    generate(&run, &zero, 1, warm);         /* the same prompt: cached blocks */
    ck_assert_uint_ge(run.s.prefix_hits, 16);
    ck_assert(memcmp(cold, warm, sizeof(cold)) == 0);
    generate(&run, &two, 1, other);         /* shares the first two blocks */
    run_close(&run);
    run_open(&run, 64);
    generate(&run, &two, 1, warm);
    run_close(&run);
    ck_assert(memcmp(other, warm, sizeof(other)) == 0);
}
END_TEST

Suite *cpu_engine_suite(void)
{
    Suite *s = suite_create("cpu_engine");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, batch_equals_alone);
    tcase_add_test(tc, chunked_prefill_equals_whole);
    tcase_add_test(tc, prefix_hit_equals_cold);
    suite_add_tcase(s, tc);
    return s;
}
