/* Flags, stop strings, latency profiles, the sim text and metrics. */

#include <stdlib.h>
#include <string.h>

#include "backends/sim.h"
#include "base/config.h"
#include "base/metrics.h"
#include "sched/request.h"
#include "backends/sim_profile.h"
#include "engine/stop_strings.h"
#include "suites.h"

static enum config_result parse_args(struct worker_config *cfg, char *err,
    const char *a1, const char *a2, const char *a3)
{
    char *argv[] = { "llmd-worker", (char *) a1, (char *) a2, (char *) a3, NULL };
    int argc = 1 + (a1 != NULL) + (a2 != NULL) + (a3 != NULL);

    return config_parse(cfg, argc, argv, err, 256);
}

START_TEST(flags)
{
    struct worker_config cfg;
    char err[256];

    ck_assert_int_eq(parse_args(&cfg, err, "--listen", "0.0.0.0:9001",
                                "--speed=0.5"), CONFIG_OK);
    ck_assert_str_eq(cfg.listen_host, "0.0.0.0");
    ck_assert_int_eq(cfg.listen_port, 9001);
    ck_assert(cfg.speed == 0.5);
    ck_assert_int_eq(cfg.block_tokens, 16);
    ck_assert_int_eq(parse_args(&cfg, err, "--help", NULL, NULL), CONFIG_HELP);

    ck_assert_int_eq(parse_args(&cfg, err, "--kv-blocks", "0", NULL), CONFIG_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "--kv-blocks"));
    ck_assert_int_eq(parse_args(&cfg, err, "--speed", "-1", NULL), CONFIG_ERROR);
    ck_assert_int_eq(parse_args(&cfg, err, "--listen", "nohost", NULL), CONFIG_ERROR);
    ck_assert_int_eq(parse_args(&cfg, err, "--role", "boss", NULL), CONFIG_ERROR);
    ck_assert_int_eq(parse_args(&cfg, err, "--nope", NULL, NULL), CONFIG_ERROR);
    ck_assert_int_eq(parse_args(&cfg, err, "--max-batch", "64",
                                "--max-batch-tokens=32"), CONFIG_ERROR);
#ifdef LLMD_HAVE_CUDA
    /* built with nvcc: the flag is fine; a missing device fails at init
     * (tests/unit/test_cuda_host.c) */
    ck_assert_int_eq(parse_args(&cfg, err, "--backend", "cuda", NULL), CONFIG_OK);
#else
    ck_assert_int_eq(parse_args(&cfg, err, "--backend", "cuda", NULL), CONFIG_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "not available"));
    ck_assert_ptr_null(strchr(err, '\n'));
#endif
}
END_TEST

static struct worker_request *text_request(const char *stop1, const char *stop2)
{
    struct gen_params p = { .max_tokens = 64 };
    int32_t t = 'a';

    if (stop1)
        strcpy(p.stop[p.n_stop++], stop1);
    if (stop2)
        strcpy(p.stop[p.n_stop++], stop2);
    return request_new(&t, 1, &p, 16);
}

START_TEST(stop_strings_hold_back_and_cut)
{
    struct worker_request *r = text_request("lo w", "zz");
    const char *text = "hello world";
    bool stopped = false;
    int i;

    for (i = 0; text[i] && !stopped; i++) {
        stopped = stop_append(r, &text[i], 1);
        if (!stopped)
            r->text_sent = stop_sendable(r);
        if (i == 3)     /* "hell": "l" could start "lo w" */
            ck_assert_int_eq(r->text_sent, 3);
    }
    ck_assert(stopped);
    ck_assert_int_eq(i, 7);                 /* stopped at the 'w' */
    ck_assert_int_eq(r->text_len, 3);       /* "hel": the stop string is cut */
    ck_assert(memcmp(r->text, "hel", 3) == 0);
    request_free(r);

    r = text_request(NULL, NULL);
    for (i = 0; text[i]; i++)
        ck_assert(!stop_append(r, &text[i], 1));
    ck_assert_int_eq(stop_sendable(r), 11);
    request_free(r);
}
END_TEST

START_TEST(profiles)
{
    struct sim_profile p;
    char err[256];
    double t;

    ck_assert_int_eq(sim_profile_load(&p, "llama3-8b-h100", err, sizeof(err)), 0);
    ck_assert_int_eq(p.max_model_len, 8192);
    /* one decode step of 256 sequences at 500 tokens of context each is
     * what the profile was derived from: 20.5 ms */
    t = sim_profile_step_seconds(&p, 0, 0, 256, 256 * 500);
    ck_assert(t > 0.0200 && t < 0.0210);
    /* mixed steps pay the fixed cost once */
    ck_assert(sim_profile_step_seconds(&p, 100, 100 * 100, 1, 10)
              < sim_profile_step_seconds(&p, 100, 100 * 100, 0, 0)
                + sim_profile_step_seconds(&p, 0, 0, 1, 10));
    ck_assert(sim_profile_step_seconds(&p, 0, 0, 0, 0) == 0);

    ck_assert_int_eq(sim_profile_parse(&p, "decode_base_us 5\nbogus 1\n", err,
                                       sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "line 2"));
    ck_assert_int_eq(sim_profile_load(&p, "/nonexistent", err, sizeof(err)), -1);
}
END_TEST

static void generate(const char *prompt, uint64_t seed, double temp, char *out, int n)
{
    struct gen_params p = { .max_tokens = n, .seed = seed, .temperature = temp };
    int32_t toks[64];
    int len = (int) strlen(prompt);
    struct worker_request *r;

    for (int i = 0; i < len; i++)
        toks[i] = (unsigned char) prompt[i];
    r = request_new(toks, len, &p, 16);
    for (int i = 0; i < n; i++) {
        int32_t t = sim_next_token(r);
        ck_assert(t >= 32 && t < 127);
        r->tokens[r->n_tokens++] = t;
        out[i] = (char) t;
    }
    out[n] = '\0';
    request_free(r);
}

START_TEST(sim_text_is_deterministic)
{
    char a[61], b[61], c[61], d[61];

    generate("Tell me a story", 7, 1.0, a, 60);
    generate("Tell me a story", 7, 1.0, b, 60);
    ck_assert_str_eq(a, b);
    generate("Tell me a story", 8, 1.0, c, 60);
    ck_assert_str_ne(a, c);
    generate("Tell me a story!", 7, 1.0, c, 60);
    ck_assert_str_ne(a, c);
    /* greedy ignores the seed */
    generate("Tell me a story", 1, 0.0, c, 60);
    generate("Tell me a story", 2, 0.0, d, 60);
    ck_assert_str_eq(c, d);
    /* words, not noise */
    ck_assert_ptr_nonnull(strchr(a, ' '));
}
END_TEST

START_TEST(metrics_text)
{
    struct worker_metrics m;
    size_t len = 0;
    char *text;

    metrics_init(&m, 100, 16);
    atomic_store(&m.kv_used_blocks, 25);
    counter_add(&m.generation_tokens, 3);
    histogram_observe(&m.ttft, 0.003);
    histogram_observe(&m.ttft, 100);
    text = metrics_render(&m, "a\"b", &len);
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_ptr_nonnull(strstr(text, "vllm:kv_cache_usage_perc{model_name=\"a\\\"b\"} 0.25\n"));
    ck_assert_ptr_nonnull(strstr(text, "vllm:generation_tokens_total{model_name=\"a\\\"b\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(text, "vllm:time_to_first_token_seconds_bucket{model_name=\"a\\\"b\",le=\"0.001\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(text, "vllm:time_to_first_token_seconds_bucket{model_name=\"a\\\"b\",le=\"0.005\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "vllm:time_to_first_token_seconds_bucket{model_name=\"a\\\"b\",le=\"+Inf\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "vllm:time_to_first_token_seconds_count{model_name=\"a\\\"b\"} 2\n"));
    free(text);
}
END_TEST

Suite *misc_suite(void)
{
    Suite *s = suite_create("misc");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, flags);
    tcase_add_test(tc, stop_strings_hold_back_and_cut);
    tcase_add_test(tc, profiles);
    tcase_add_test(tc, sim_text_is_deterministic);
    tcase_add_test(tc, metrics_text);
    suite_add_tcase(s, tc);
    return s;
}
