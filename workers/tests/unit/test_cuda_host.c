/* The cuda backend's host side, without a GPU: weight conversion to bf16,
 * the step plan the kernels read (rows, slots, block tables, attention
 * queries, prefill tiles, sampling), split-K sizing and the arithmetic of
 * the split-K merge, the decode-graph cache, and the one-line refusal when
 * no device is visible.  The kernels themselves run in tests/gpu. */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "suites.h"

#ifdef LLMD_HAVE_CUDA

#include "backends/cpu_kernels.h"
#include "backends/cpu_sample.h"
#include "backends/cuda.h"
#include "base/config.h"
#include "sched/request.h"

/* ------------------------------------------------------------------------ */
/* weights */

START_TEST(weights_to_bf16)
{
    /* round to nearest even at the halfway points, NaN stays NaN */
    float f32[] = { 1.0f, 1.00390625f /* 1 + 2^-8: tie, even */,
                    1.01171875f /* 1 + 3 * 2^-8: tie, odd -> up */, -2.5f,
                    1e-40f, NAN, 65504.0f, 3.14159265f };
    uint16_t want[] = { 0x3f80, 0x3f80, 0x3f82, 0xc020 };
    uint16_t out[8];
    struct weight w = { f32, GGML_F32, 2, 4 };

    cuda_rows_to_bf16(&w, 0, 2, out);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(out[i], want[i]);
    for (int i = 4; i < 8; i++)
        ck_assert_uint_eq(out[i], f32_to_bf16(f32[i]));
    ck_assert(isnan(bf16_to_f32(out[5])));
    /* the second row alone */
    cuda_rows_to_bf16(&w, 1, 1, out);
    ck_assert_uint_eq(out[0], f32_to_bf16(1e-40f));

    {
        /* f16: 1 + 2^-10 has no bf16 neighbour but 1; 0x7bff = 65504 */
        uint16_t f16[] = { 0x3c01, 0x7bff, 0xc000, 0x0001 };
        struct weight h = { f16, GGML_F16, 1, 4 };

        cuda_rows_to_bf16(&h, 0, 1, out);
        ck_assert_uint_eq(out[0], 0x3f80);
        ck_assert_uint_eq(out[1], f32_to_bf16(65504.0f));
        ck_assert_uint_eq(out[2], 0xc000);
        ck_assert_uint_eq(out[3], f32_to_bf16(f16_to_f32(0x0001)));
    }
    {
        uint16_t b16[] = { 0x1234, 0xffff, 0x3f80, 0x8000 };
        struct weight b = { b16, GGML_BF16, 2, 2 };

        cuda_rows_to_bf16(&b, 1, 1, out);
        ck_assert_uint_eq(out[0], 0x3f80);
        ck_assert_uint_eq(out[1], 0x8000);
    }
}
END_TEST

START_TEST(q8_0_dequantised_then_rounded)
{
    /* two rows of one block each: scale (f16), then 32 int8 */
    uint8_t q8[2 * Q8_0_BLOCK_BYTES];
    uint16_t scale[2] = { 0x3800 /* 0.5 */, 0x2e66 /* ~0.1 */ }, out[32];
    struct weight w = { q8, GGML_Q8_0, 2, Q8_0_BLOCK };

    for (int r = 0; r < 2; r++) {
        memcpy(q8 + r * Q8_0_BLOCK_BYTES, &scale[r], 2);
        for (int j = 0; j < Q8_0_BLOCK; j++)
            q8[r * Q8_0_BLOCK_BYTES + 2 + j] = (uint8_t) (int8_t) (j * 8 - 127);
    }
    cuda_rows_to_bf16(&w, 1, 1, out);
    for (int j = 0; j < Q8_0_BLOCK; j++) {
        float want = f16_to_f32(scale[1]) * (float) (j * 8 - 127);
        ck_assert_uint_eq(out[j], f32_to_bf16(want));
    }
    cuda_rows_to_bf16(&w, 0, 1, out);
    ck_assert_uint_eq(out[0], f32_to_bf16(-63.5f));
}
END_TEST

/* ------------------------------------------------------------------------ */
/* the step plan */

#define BT 4

static struct worker_request *seq(int n_tokens, int first_block, double temp,
    double top_p)
{
    struct gen_params gp = { .max_tokens = 8, .temperature = temp, .top_p = top_p,
                             .seed = 7 };
    int32_t *ids = malloc(sizeof(int32_t) * (size_t) n_tokens);
    struct worker_request *r;

    for (int i = 0; i < n_tokens; i++)
        ids[i] = 1000 + i;
    r = request_new(ids, n_tokens, &gp, BT);
    free(ids);
    ck_assert_ptr_nonnull(r);
    for (int i = 0; i < (n_tokens + BT - 1) / BT; i++)
        r->blocks[r->n_blocks++] = first_block + 3 * i;     /* scattered */
    return r;
}

static const int32_t *arr(const struct cuda_plan *p, int word)
{
    ck_assert_int_ge(p->words[word], PLAN_HEADER_WORDS);
    ck_assert_int_le(p->words[word], (int) p->n_words);
    return p->words + p->words[word];
}

static float par(const struct cuda_plan *p, int sample, int k)
{
    float f;

    memcpy(&f, arr(p, PLAN_SAMPLE_PAR) + PLAN_PAR_WORDS * sample + k, 4);
    return f;
}

START_TEST(plan_mixed_batch)
{
    /* item 0: a prompt of 78 tokens whose first 8 are a cached prefix, 70
     * computed now (two tiles); item 1: a decode at position 10 sampling
     * at T = 0.7; item 2: a chunk that does not reach the prompt's end */
    struct worker_request *a = seq(78, 100, 0, 1), *b = seq(11, 5, 0.7, 0.9),
                          *c = seq(40, 2, 0, 1);
    struct batch_item items[] = { { a, 8, 70, true }, { b, 10, 1, true },
                                  { c, 0, 20, false } };
    struct batch batch = { .items = items, .n = 3, .n_tokens = 91 };
    struct cuda_plan_params pp = { BT, 8, 132, true };
    struct cuda_plan p = { 0 };
    uint64_t rng = b->rng;
    const int32_t *w, *att, *tile, *table;

    ck_assert_int_eq(cuda_plan_build(&p, &batch, &pp), 0);
    w = p.words;
    ck_assert_int_eq(w[PLAN_N_ROWS], 91);
    ck_assert_int_eq(w[PLAN_N_ITEMS], 3);
    ck_assert_int_eq(w[PLAN_N_SAMPLE], 2);
    ck_assert_int_eq(w[PLAN_N_ATT], 1);
    ck_assert_int_eq(w[PLAN_N_TILES], 1 + 1 + 1);      /* 64 + 6, then 20 */
    ck_assert(!p.pure_decode);
    ck_assert_int_eq(w[PLAN_TABLE_STRIDE], 78 / BT + 1);

    /* rows: item order, then token order */
    ck_assert_int_eq(arr(&p, PLAN_ROW_TOKEN)[0], 1008);
    ck_assert_int_eq(arr(&p, PLAN_ROW_POS)[69], 77);
    ck_assert_int_eq(arr(&p, PLAN_ROW_POS)[70], 10);
    ck_assert_int_eq(arr(&p, PLAN_ROW_TOKEN)[70], 1010);
    /* slot = block * BT + pos % BT through the block table */
    ck_assert_int_eq(arr(&p, PLAN_ROW_SLOT)[0], a->blocks[2] * BT + 0);
    ck_assert_int_eq(arr(&p, PLAN_ROW_SLOT)[69], a->blocks[19] * BT + 1);
    ck_assert_int_eq(arr(&p, PLAN_ROW_SLOT)[70], b->blocks[2] * BT + 2);
    ck_assert_int_eq(arr(&p, PLAN_ROW_SLOT)[90], c->blocks[4] * BT + 3);

    att = arr(&p, PLAN_ATT);
    ck_assert_int_eq(att[0], 70);           /* row */
    ck_assert_int_eq(att[1], 1);            /* item */
    ck_assert_int_eq(att[2], 11);           /* keys: positions 0..10 */
    tile = arr(&p, PLAN_TILE);
    ck_assert_int_eq(tile[0], 0);
    ck_assert_int_eq(tile[1], 0);
    ck_assert_int_eq(tile[2], 8);
    ck_assert_int_eq(tile[3], 64);
    ck_assert_int_eq(tile[4 + 1], 64);
    ck_assert_int_eq(tile[4 + 2], 72);
    ck_assert_int_eq(tile[4 + 3], 6);
    ck_assert_int_eq(tile[8 + 0], 2);
    ck_assert_int_eq(tile[8 + 1], 71);
    ck_assert_int_eq(tile[8 + 2], 0);
    ck_assert_int_eq(tile[8 + 3], 20);

    /* the sampled rows are the items' last rows; c does not sample */
    ck_assert_int_eq(arr(&p, PLAN_SAMPLE_ROW)[0], 69);
    ck_assert_int_eq(arr(&p, PLAN_SAMPLE_ROW)[1], 70);
    ck_assert_int_eq(p.item_sample[0], 0);
    ck_assert_int_eq(p.item_sample[1], 1);
    ck_assert_int_eq(p.item_sample[2], -1);
    ck_assert(par(&p, 0, 0) == 0.0f && par(&p, 0, 2) == 0.0f);  /* greedy: no draw */
    ck_assert(par(&p, 1, 0) == 0.7f);
    ck_assert(par(&p, 1, 1) == 0.9f);
    ck_assert(par(&p, 1, 2) == (float) sample_uniform(&rng));  /* one draw */
    ck_assert(b->rng == rng);

    /* block tables padded to the stride */
    table = arr(&p, PLAN_TABLE);
    ck_assert_int_eq(table[0], a->blocks[0]);
    ck_assert_int_eq(table[19], a->blocks[19]);
    ck_assert_int_eq(table[p.table_stride + 2], b->blocks[2]);
    ck_assert_int_eq(table[p.table_stride + 3], 0);
    ck_assert_int_eq(table[2 * p.table_stride + 4], c->blocks[4]);
    ck_assert_int_eq((int) p.n_words, w[PLAN_TABLE] + 3 * p.table_stride);

    /* without the tiled kernel every prompt row is a query of its own */
    pp.tiles = false;
    ck_assert_int_eq(cuda_plan_build(&p, &batch, &pp), 0);
    ck_assert_int_eq(p.n_tiles, 0);
    ck_assert_int_eq(p.n_att, 91);
    att = arr(&p, PLAN_ATT);
    ck_assert_int_eq(att[3 * 5 + 0], 5);
    ck_assert_int_eq(att[3 * 5 + 2], 8 + 5 + 1);
    ck_assert_int_eq(att[3 * 90 + 1], 2);
    ck_assert_int_eq(att[3 * 90 + 2], 20);
    ck_assert_int_ge(p.split_tokens * p.max_splits, 78);

    cuda_plan_free(&p);
    request_free(a);
    request_free(b);
    request_free(c);
}
END_TEST

START_TEST(plan_pure_decode)
{
    struct worker_request *r[3] = { seq(9, 0, 0, 1), seq(30, 1, 1.0, 1), seq(5, 2, 0, 1) };
    struct batch_item items[3];
    struct batch batch = { .items = items, .n = 3, .n_tokens = 3 };
    struct cuda_plan_params pp = { BT, 32, 132, true };
    struct cuda_plan p = { 0 };

    for (int i = 0; i < 3; i++)
        items[i] = (struct batch_item) { r[i], r[i]->n_tokens - 1, 1, true };
    ck_assert_int_eq(cuda_plan_build(&p, &batch, &pp), 0);
    ck_assert(p.pure_decode);
    ck_assert_int_eq(p.n_att, 3);
    ck_assert_int_eq(p.n_tiles, 0);
    /* 3 x 32 blocks < 2 x 132 multiprocessors: split the 30 keys? no,
     * fewer than PLAN_SPLIT_MIN keys stay whole */
    ck_assert_int_eq(p.max_splits, 1);
    ck_assert_int_ge(p.split_tokens, 30);
    items[1].sample = false;
    ck_assert_int_eq(cuda_plan_build(&p, &batch, &pp), 0);
    ck_assert(!p.pure_decode);
    cuda_plan_free(&p);
    for (int i = 0; i < 3; i++)
        request_free(r[i]);
}
END_TEST

START_TEST(split_k_sizing)
{
    int lens[] = { 1, 15, 63, 64, 65, 500, 4096, 100000, 131072 };
    int queries[] = { 1, 2, 8, 64, 256 };

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        for (size_t j = 0; j < sizeof(queries) / sizeof(queries[0]); j++) {
            int n = queries[j], heads = 32, sms = 132, tokens, splits;

            cuda_split_plan(lens[i], n, heads, sms, &tokens, &splits);
            ck_assert_int_eq(tokens % PLAN_SPLIT_ALIGN, 0);
            ck_assert_int_ge(splits, 1);
            ck_assert_int_le(splits, PLAN_MAX_SPLIT);
            ck_assert_int_ge((long) tokens * splits, lens[i]);     /* covered */
            ck_assert_int_lt((long) tokens * (splits - 1), lens[i]); /* none empty */
            ck_assert_int_eq(plan_splits_of(lens[i], tokens), splits);
            if (n * heads >= 2 * sms || lens[i] <= PLAN_SPLIT_MIN)
                ck_assert_int_eq(splits, 1);
            /* the partials buffer is large enough */
            ck_assert_uint_le((size_t) n * heads * splits,
                              cuda_split_partials(n, heads, sms));
        }
    /* batch 1, 32 heads, long context: about 2 x 132 / 32 = 9 splits */
    {
        int tokens, splits;
        cuda_split_plan(8192, 1, 32, 132, &tokens, &splits);
        ck_assert_int_eq(splits, 9);
    }
}
END_TEST

/* The split-K kernel's arithmetic, replayed on the host: keys cut into
 * splits, each split's keys dealt to `groups` interleaved online softmaxes
 * in log2 units, groups merged, then splits merged, against a direct
 * softmax in double. */
START_TEST(split_k_merge_matches_softmax)
{
    enum { HD = 16, KEYS = 300, GROUPS = 8 };
    static float k[KEYS][HD], v[KEYS][HD];
    float q[HD];
    const float log2e = 1.4426950408889634f, scale = 1.0f / 4.0f;
    uint64_t rng = 1;

    for (int i = 0; i < HD; i++)
        q[i] = (float) (sample_uniform(&rng) * 4 - 2);
    for (int t = 0; t < KEYS; t++)
        for (int i = 0; i < HD; i++) {
            k[t][i] = (float) (sample_uniform(&rng) * 4 - 2);
            v[t][i] = (float) (sample_uniform(&rng) * 2 - 1);
        }
    for (int split_tokens = 16; split_tokens <= 320; split_tokens += 48) {
        int splits = plan_splits_of(KEYS, split_tokens);
        float pm[64], pl[64], pacc[64][HD], M = -INFINITY, L = 0, out[HD];
        double ref[HD] = { 0 }, mx = -INFINITY, sum = 0, sc[KEYS];

        for (int s = 0; s < splits; s++) {
            int t0 = s * split_tokens, t1 = t0 + split_tokens < KEYS ? t0 + split_tokens : KEYS;
            float gm[GROUPS], gl[GROUPS], gacc[GROUPS][HD];

            for (int g = 0; g < GROUPS; g++) {
                gm[g] = -INFINITY;
                gl[g] = 0;
                memset(gacc[g], 0, sizeof(gacc[g]));
                for (int t = t0 + g; t < t1; t += GROUPS) {
                    float x = 0, m_new, corr, p;
                    for (int i = 0; i < HD; i++)
                        x += q[i] * scale * log2e * k[t][i];
                    m_new = fmaxf(gm[g], x);
                    corr = exp2f(gm[g] - m_new);
                    p = exp2f(x - m_new);
                    gl[g] = gl[g] * corr + p;
                    for (int i = 0; i < HD; i++)
                        gacc[g][i] = gacc[g][i] * corr + p * v[t][i];
                    gm[g] = m_new;
                }
            }
            pm[s] = -INFINITY;
            for (int g = 0; g < GROUPS; g++)
                pm[s] = fmaxf(pm[s], gm[g]);
            pl[s] = 0;
            for (int i = 0; i < HD; i++)
                pacc[s][i] = 0;
            for (int g = 0; g < GROUPS; g++) {
                float wgt = plan_merge_weight(gm[g], pm[s]);
                pl[s] += gl[g] * wgt;
                for (int i = 0; i < HD; i++)
                    pacc[s][i] += gacc[g][i] * wgt;
            }
        }
        for (int s = 0; s < splits; s++)
            M = fmaxf(M, pm[s]);
        for (int s = 0; s < splits; s++)
            L += pl[s] * plan_merge_weight(pm[s], M);
        for (int i = 0; i < HD; i++) {
            out[i] = 0;
            for (int s = 0; s < splits; s++)
                out[i] += pacc[s][i] * plan_merge_weight(pm[s], M);
            out[i] /= L;
        }

        for (int t = 0; t < KEYS; t++) {
            sc[t] = 0;
            for (int i = 0; i < HD; i++)
                sc[t] += (double) q[i] * k[t][i] * scale;
            mx = sc[t] > mx ? sc[t] : mx;
        }
        for (int t = 0; t < KEYS; t++) {
            double p = exp(sc[t] - mx);
            sum += p;
            for (int i = 0; i < HD; i++)
                ref[i] += p * v[t][i];
        }
        for (int i = 0; i < HD; i++)
            ck_assert_double_eq_tol(out[i], ref[i] / sum, 1e-5);
    }
}
END_TEST

START_TEST(kv_offsets_match_the_block_layout)
{
    struct kv_geometry geo = { 6, BT, 3, 2, 8, 2 };
    struct kv_manager kv;

    ck_assert_int_eq(kv_init(&kv, &geo), 0);
    for (int b = 0; b < 6; b += 5)
        for (int l = 0; l < 3; l++)
            for (int kv_ = 0; kv_ < 2; kv_++)
                for (int s = 0; s < BT; s += 3)
                    for (int h = 0; h < 2; h++)
                        ck_assert_ptr_eq(kv.pool + 2 * plan_kv_offset(b, l, kv_, s, h,
                                                                      BT, 2, 8, 3),
                                         kv_slot(&kv, b, l, kv_, s) + 2 * 8 * h);
    kv_free(&kv);
}
END_TEST

/* ------------------------------------------------------------------------ */

static int destroyed;

static void fake_destroy(void *exec)
{
    (void) exec;
    destroyed++;
}

START_TEST(graph_cache_policy)
{
    static struct graph_cache c;
    struct graph_entry *e;
    int token;

    memset(&c, 0, sizeof(c));
    c.destroy = fake_destroy;
    destroyed = 0;
    e = graph_cache_get(&c, 8, 2);
    ck_assert(!graph_should_capture(e));        /* first sighting: eager */
    e = graph_cache_get(&c, 8, 2);
    ck_assert(graph_should_capture(e));         /* second: capture */
    e->exec = &token;
    e = graph_cache_get(&c, 8, 2);
    ck_assert_ptr_eq(e->exec, &token);          /* then replay */
    ck_assert(!graph_should_capture(e));
    ck_assert_ptr_null(graph_cache_get(&c, 8, 3)->exec);    /* other splits */

    /* 63 more shapes fill the table; the next evicts the least recent,
     * which is (8, 2) once (8, 3) and the others were used after it */
    for (int n = 1; n <= 62; n++)
        graph_cache_get(&c, 100 + n, 1);
    ck_assert_int_eq(destroyed, 0);
    graph_cache_get(&c, 999, 1);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_ptr_null(graph_cache_get(&c, 8, 2)->exec);
    graph_cache_get(&c, 8, 2)->exec = &token;
    graph_cache_clear(&c);
    ck_assert_int_eq(destroyed, 2);
}
END_TEST

/* ------------------------------------------------------------------------ */

static int device_visible(void)
{
    int n = 0;

    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

START_TEST(no_device_is_one_line)
{
    struct worker_config cfg;
    struct backend b = { 0 };
    char err[256] = "", *argv[] = { "llmd-worker", "--backend", "cuda", NULL };

    ck_assert_ptr_eq(backend_find("cuda"), &cuda_backend_ops);
    ck_assert_int_eq(config_parse(&cfg, 3, argv, err, sizeof(err)), CONFIG_OK);
    if (device_visible()) {
        ck_assert_int_eq(cuda_device_probe(1000, err, sizeof(err)), -1);
        ck_assert_ptr_nonnull(strstr(err, "--device 1000"));
        return;
    }
    ck_assert_int_eq(cuda_device_probe(0, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "no CUDA device visible ("));
    err[0] = '\0';
    b.ops = &cuda_backend_ops;
    ck_assert_int_eq(b.ops->init(&b, &cfg, err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "no CUDA device visible (", 24) == 0, "%s", err);
    ck_assert_ptr_null(strchr(err, '\n'));
    ck_assert_ptr_null(b.state);
}
END_TEST

Suite *cuda_host_suite(void)
{
    Suite *s = suite_create("cuda_host");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, weights_to_bf16);
    tcase_add_test(tc, q8_0_dequantised_then_rounded);
    tcase_add_test(tc, plan_mixed_batch);
    tcase_add_test(tc, plan_pure_decode);
    tcase_add_test(tc, split_k_sizing);
    tcase_add_test(tc, split_k_merge_matches_softmax);
    tcase_add_test(tc, kv_offsets_match_the_block_layout);
    tcase_add_test(tc, graph_cache_policy);
    tcase_add_test(tc, no_device_is_one_line);
    suite_add_tcase(s, tc);
    return s;
}

#else   /* built without nvcc */

START_TEST(not_built)
{
    ck_assert_ptr_null(backend_find("cuda"));
}
END_TEST

Suite *cuda_host_suite(void)
{
    Suite *s = suite_create("cuda_host");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, not_built);
    suite_add_tcase(s, tc);
    return s;
}

#endif
