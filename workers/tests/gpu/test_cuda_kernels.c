/*
 * The cuda kernels against host references, one kernel at a time, on
 * plans packed by cuda_plan.c from real requests: embedding, RMSNorm, the
 * QKV epilogue (bias, RoPE, KV page store), SwiGLU, split-K paged
 * attention (many lengths and split counts, head sizes 16 to 256), tiled
 * chunked-prefill attention over a cached prefix, and sampling.  Run under
 * compute-sanitizer by `make gpu-test` where the toolkit has it.
 *
 *   build/test-cuda-kernels            (SKIP and exit 0 without a device)
 */

#include <math.h>

#include "backends/cpu_kernels.h"
#include "backends/cpu_sample.h"
#include "backends/cuda_api.h"
#include "backends/cuda_plan.h"
#include "gpu_test.h"
#include "sched/request.h"

#define BT      16
#define BLOCKS  512

static cudaStream_t stream;
static int n_sms;
static uint64_t rng = 12345;

static float uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float) sample_uniform(&rng);
}

static float bf(float x)
{
    return bf16_to_f32(f32_to_bf16(x));
}

static void *dev_copy(const void *host, size_t bytes)
{
    void *d;

    GPU_OK(cudaMalloc(&d, bytes));
    GPU_OK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

static void host_copy(void *host, const void *dev, size_t bytes)
{
    GPU_OK(cudaStreamSynchronize(stream));
    GPU_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

/* A request of `len` tokens whose blocks are scattered over the pool. */
static struct worker_request *sequence(int len, int vocab, double temp, double top_p)
{
    struct gen_params gp = { .max_tokens = 4, .temperature = temp, .top_p = top_p, .seed = 3 };
    int32_t *ids = calloc((size_t) len, sizeof(int32_t));
    struct worker_request *r;
    static int next_block = 1;

    if (ids == NULL)
        exit(1);
    for (int i = 0; i < len; i++)
        ids[i] = (i * 7 + len) % vocab;
    r = request_new(ids, len, &gp, BT);
    free(ids);
    for (int i = 0; i < (len + BT - 1) / BT; i++) {
        r->blocks[r->n_blocks++] = next_block;
        next_block = (next_block + 97) % BLOCKS;        /* coprime: all distinct */
    }
    return r;
}

static int32_t *upload_plan(struct cuda_plan *p, const struct batch *b, bool tiles,
    int n_heads, int sms)
{
    struct cuda_plan_params pp = { BT, n_heads, sms, tiles };

    if (cuda_plan_build(p, b, &pp) != 0)
        exit(1);
    return dev_copy(p->words, p->n_words * sizeof(int32_t));
}

static struct cuda_dims dims_of(int dim, int heads, int kv_heads, int hd, int layers)
{
    struct cuda_dims d = { 0 };

    d.dim = dim;
    d.hidden = 3 * dim;
    d.n_heads = heads;
    d.n_kv_heads = kv_heads;
    d.head_dim = hd;
    d.n_rot = hd;
    d.vocab = 300;
    d.eps = 1e-5f;
    d.rope_scale = 1;
    d.block_tokens = BT;
    d.num_layers = layers;
    d.layer_elems = 2LL * BT * kv_heads * hd;
    d.block_elems = d.layer_elems * layers;
    return d;
}

/* ------------------------------------------------------------------------ */

static void test_embed_norm_swiglu(void)
{
    struct cuda_dims d = dims_of(96, 4, 2, 24, 1);
    struct worker_request *r[2] = { sequence(5, d.vocab, 0, 1), sequence(9, d.vocab, 0, 1) };
    struct batch_item items[2] = { { r[0], 0, 5, true }, { r[1], 8, 1, true } };
    struct batch b = { .items = items, .n = 2, .n_tokens = 6 };
    struct cuda_plan p = { 0 };
    int32_t *plan = upload_plan(&p, &b, true, d.n_heads, n_sms);
    int rows = p.n_rows;
    uint16_t *table = malloc(sizeof(uint16_t) * (size_t) d.vocab * d.dim);
    float w[96], *x = malloc(sizeof(float) * (size_t) rows * d.dim);
    float *gu = malloc(sizeof(float) * (size_t) rows * 2 * d.hidden);
    uint16_t *xb = malloc(sizeof(uint16_t) * (size_t) rows * d.dim);
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t) rows * d.hidden);
    void *table_d, *w_d, *x_d, *xb_d, *gu_d, *h_d;
    float max_err = 0;

    for (int i = 0; i < d.vocab * d.dim; i++)
        table[i] = f32_to_bf16(uniform(-2, 2));
    for (int i = 0; i < d.dim; i++)
        w[i] = uniform(0.5f, 1.5f);
    for (int i = 0; i < rows * 2 * d.hidden; i++)
        gu[i] = uniform(-4, 4);
    table_d = dev_copy(table, sizeof(uint16_t) * (size_t) d.vocab * d.dim);
    w_d = dev_copy(w, sizeof(w));
    gu_d = dev_copy(gu, sizeof(float) * (size_t) rows * 2 * d.hidden);
    GPU_OK(cudaMalloc(&x_d, sizeof(float) * (size_t) rows * d.dim));
    GPU_OK(cudaMalloc(&xb_d, sizeof(uint16_t) * (size_t) rows * d.dim));
    GPU_OK(cudaMalloc(&h_d, sizeof(uint16_t) * (size_t) rows * d.hidden));

    cuda_embed(stream, plan, table_d, d, x_d, rows);
    host_copy(x, x_d, sizeof(float) * (size_t) rows * d.dim);
    for (int row = 0; row < rows; row++) {
        int tok = row < 5 ? r[0]->tokens[row] : r[1]->tokens[8];
        for (int i = 0; i < d.dim; i++)
            gpu_check(x[row * d.dim + i] == bf16_to_f32(table[tok * d.dim + i]),
                      "embed row %d col %d", row, i);
    }

    cuda_rmsnorm(stream, plan, 0, x_d, w_d, d, xb_d, rows);
    host_copy(xb, xb_d, sizeof(uint16_t) * (size_t) rows * d.dim);
    for (int row = 0; row < rows; row++) {
        float want[96];
        rmsnorm(want, x + row * d.dim, w, d.dim, d.eps);
        for (int i = 0; i < d.dim; i++) {
            float got = bf16_to_f32(xb[row * d.dim + i]);
            max_err = fmaxf(max_err, fabsf(got - want[i]) / (fabsf(want[i]) + 1e-3f));
        }
    }
    gpu_check(max_err < 1e-2f, "rmsnorm relative error %g", max_err);

    /* the head's input: only the sampled rows (4 and 5) */
    cuda_rmsnorm(stream, plan, 1, x_d, w_d, d, xb_d, 2);
    host_copy(xb, xb_d, sizeof(uint16_t) * 2 * d.dim);
    for (int k = 0; k < 2; k++) {
        float want[96];
        rmsnorm(want, x + (4 + k) * d.dim, w, d.dim, d.eps);
        gpu_check(fabsf(bf16_to_f32(xb[k * d.dim + 7]) - want[7]) < 1e-2f * fabsf(want[7]) + 1e-4f,
                  "sampled rmsnorm row %d", k);
    }

    cuda_swiglu(stream, plan, gu_d, d, h_d, rows);
    host_copy(h, h_d, sizeof(uint16_t) * (size_t) rows * d.hidden);
    max_err = 0;
    for (int row = 0; row < rows; row++)
        for (int j = 0; j < d.hidden; j++) {
            float g = gu[row * 2 * d.hidden + j], u = gu[row * 2 * d.hidden + d.hidden + j];
            float want = g / (1 + expf(-g)) * u;
            max_err = fmaxf(max_err, fabsf(bf16_to_f32(h[row * d.hidden + j]) - want)
                                     / (fabsf(want) + 1e-3f));
        }
    gpu_check(max_err < 1e-2f, "swiglu relative error %g", max_err);
    printf("embedding, rmsnorm, swiglu: %d rows\n", rows);

    cudaFree(table_d); cudaFree(w_d); cudaFree(x_d); cudaFree(xb_d); cudaFree(gu_d);
    cudaFree(h_d); cudaFree(plan);
    free(table); free(x); free(gu); free(xb); free(h);
    cuda_plan_free(&p);
    request_free(r[0]);
    request_free(r[1]);
}

/* ------------------------------------------------------------------------ */

static void test_qkv_store(int neox, int with_bias)
{
    struct cuda_dims d = dims_of(64, 4, 2, 16, 2);
    int q_dim = 64, kv_dim = 32, width = q_dim + 2 * kv_dim, layer = 1;
    struct worker_request *r = sequence(40, d.vocab, 0, 1);
    struct batch_item it = { r, 30, 10, true };
    struct batch b = { .items = &it, .n = 1, .n_tokens = 10 };
    struct cuda_plan p = { 0 };
    int32_t *plan;
    float inv_freq[6], *qkv = malloc(sizeof(float) * 10 * (size_t) width), bias[128];
    float *q = malloc(sizeof(float) * 10 * (size_t) q_dim);
    size_t pool_elems = (size_t) BLOCKS * d.block_elems;
    uint16_t *pool = calloc(pool_elems, sizeof(uint16_t));
    void *inv_d, *qkv_d, *bias_d, *rope_d, *pool_d, *q_d;

    d.n_rot = 12;                   /* partial rotation: dims 12..15 untouched */
    d.neox = neox;
    d.rope_scale = 2;               /* linear scaling */
    plan = upload_plan(&p, &b, true, d.n_heads, n_sms);
    for (int i = 0; i < 6; i++)
        inv_freq[i] = (float) pow(10000.0, -2.0 * i / 12);
    for (int i = 0; i < 10 * width; i++)
        qkv[i] = uniform(-1, 1);
    for (int i = 0; i < width; i++)
        bias[i] = uniform(-0.5f, 0.5f);
    inv_d = dev_copy(inv_freq, sizeof(inv_freq));
    qkv_d = dev_copy(qkv, sizeof(float) * 10 * (size_t) width);
    bias_d = dev_copy(bias, sizeof(float) * (size_t) width);
    pool_d = dev_copy(pool, pool_elems * 2);
    GPU_OK(cudaMalloc(&rope_d, sizeof(float) * 10 * 6 * 2));
    GPU_OK(cudaMalloc(&q_d, sizeof(float) * 10 * (size_t) q_dim));

    cuda_rope_table(stream, plan, inv_d, d, rope_d, 10);
    cuda_qkv_store(stream, plan, qkv_d, with_bias ? bias_d : NULL, rope_d, d, layer,
                   pool_d, q_d, 10);
    host_copy(q, q_d, sizeof(float) * 10 * (size_t) q_dim);
    host_copy(pool, pool_d, pool_elems * 2);
    for (int row = 0; row < 10; row++) {
        float want[128];
        int pos = 30 + row, block = r->blocks[pos / BT];

        for (int i = 0; i < width; i++)
            want[i] = qkv[row * width + i] + (with_bias ? bias[i] : 0);
        rope(want, 4, 16, 12, inv_freq, pos / 2.0, neox);
        rope(want + q_dim, 2, 16, 12, inv_freq, pos / 2.0, neox);
        for (int i = 0; i < q_dim; i++)
            gpu_check(fabsf(q[row * q_dim + i] - want[i]) < 1e-5f,
                      "q row %d dim %d: %g vs %g (neox %d)", row, i, q[row * q_dim + i],
                      want[i], neox);
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 16; i++) {
                int64_t ko = plan_kv_offset(block, layer, 0, pos % BT, h, BT, 2, 16, 2);
                int64_t vo = plan_kv_offset(block, layer, 1, pos % BT, h, BT, 2, 16, 2);
                gpu_check(fabsf(bf16_to_f32(pool[ko + i]) - bf(want[q_dim + h * 16 + i])) < 1e-2f,
                          "k row %d head %d dim %d", row, h, i);
                gpu_check(pool[vo + i] == f32_to_bf16(want[q_dim + kv_dim + h * 16 + i]),
                          "v row %d head %d dim %d", row, h, i);
            }
    }
    /* nothing else was written: layer 0 of the blocks is still zero */
    gpu_check(pool[plan_kv_offset(r->blocks[2], 0, 0, 0, 0, BT, 2, 16, 2)] == 0,
              "layer 0 untouched");
    printf("qkv epilogue: neox %d, bias %d\n", neox, with_bias);

    cudaFree(inv_d); cudaFree(qkv_d); cudaFree(bias_d); cudaFree(pool_d); cudaFree(rope_d);
    cudaFree(q_d); cudaFree(plan);
    free(qkv); free(q); free(pool);
    cuda_plan_free(&p);
    request_free(r);
}

/* ------------------------------------------------------------------------ */

/* softmax(q k / sqrt(hd)) v over keys [0, keys) of one head, from the
 * bf16 pool, in double */
static void reference_attention(const uint16_t *pool, const struct worker_request *r,
    const float *q, int keys, int layer, int head, struct cuda_dims d, float *out)
{
    int hd = d.head_dim, kvh = head / (d.n_heads / d.n_kv_heads);
    double *s = malloc(sizeof(double) * (size_t) keys), mx = -INFINITY, sum = 0;

    for (int t = 0; t < keys; t++) {
        int64_t o = plan_kv_offset(r->blocks[t / BT], layer, 0, t % BT, kvh, BT,
                                   d.n_kv_heads, hd, d.num_layers);
        s[t] = 0;
        for (int i = 0; i < hd; i++)
            s[t] += (double) q[i] * bf16_to_f32(pool[o + i]);
        s[t] /= sqrt((double) hd);
        mx = fmax(mx, s[t]);
    }
    for (int i = 0; i < hd; i++)
        out[i] = 0;
    for (int t = 0; t < keys; t++) {
        int64_t o = plan_kv_offset(r->blocks[t / BT], layer, 1, t % BT, kvh, BT,
                                   d.n_kv_heads, hd, d.num_layers);
        double p = exp(s[t] - mx);
        sum += p;
        for (int i = 0; i < hd; i++)
            out[i] += (float) (p * bf16_to_f32(pool[o + i]));
    }
    for (int i = 0; i < hd; i++)
        out[i] = (float) (out[i] / sum);
    free(s);
}

/* items[] computed in one step; rows checked against the reference */
static void check_attention(const char *what, struct batch *b, bool tiles, int sms,
    struct cuda_dims d, const uint16_t *pool, void *pool_d, int layer)
{
    struct cuda_plan p = { 0 };
    int32_t *plan = upload_plan(&p, b, tiles, d.n_heads, sms);
    int q_dim = d.n_heads * d.head_dim, rows = p.n_rows;
    float *q = malloc(sizeof(float) * (size_t) rows * q_dim), want[256], max_err = 0;
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t) rows * q_dim);
    size_t partials = cuda_split_partials(p.n_att, d.n_heads, sms) * (size_t) (d.head_dim + 2);
    void *q_d, *out_d, *part_d;
    int row = 0;

    for (int i = 0; i < rows * q_dim; i++)
        q[i] = uniform(-2, 2);
    q_d = dev_copy(q, sizeof(float) * (size_t) rows * q_dim);
    GPU_OK(cudaMalloc(&out_d, sizeof(uint16_t) * (size_t) rows * q_dim));
    GPU_OK(cudaMalloc(&part_d, partials * sizeof(float) + 1));
    cuda_attention_rows(stream, plan, q_d, pool_d, d, layer, part_d, out_d, p.n_att,
                        p.max_splits);
    cuda_attention_tiles(stream, plan, q_d, pool_d, d, layer, out_d, p.n_tiles);
    GPU_OK(cudaGetLastError());
    host_copy(out, out_d, sizeof(uint16_t) * (size_t) rows * q_dim);

    for (int i = 0; i < b->n; i++)
        for (int k = 0; k < b->items[i].n_tokens; k++, row++)
            for (int h = 0; h < d.n_heads; h++) {
                int keys = b->items[i].start + k + 1;
                reference_attention(pool, b->items[i].req, q + (size_t) row * q_dim + h * d.head_dim,
                                    keys, layer, h, d, want);
                for (int c = 0; c < d.head_dim; c++)
                    max_err = fmaxf(max_err, fabsf(bf16_to_f32(out[(size_t) row * q_dim
                                                                   + h * d.head_dim + c]) - want[c]));
            }
    /* bf16 output (2^-9 relative) plus bf16 q and p in the tiled kernel */
    gpu_check(max_err < (tiles && p.n_tiles ? 3e-2f : 1e-2f),
              "%s: max abs error %g", what, max_err);
    printf("%s: %d rows, %d queries x %d splits of %d keys, %d tiles, max abs error %.2e\n",
           what, rows, p.n_att, p.max_splits, p.split_tokens, p.n_tiles, max_err);
    cudaFree(q_d); cudaFree(out_d); cudaFree(part_d); cudaFree(plan);
    free(q); free(out);
    cuda_plan_free(&p);
}

static void test_attention(int hd)
{
    struct cuda_dims d = dims_of(8 * hd, 8, 2, hd, 2);
    size_t pool_elems = (size_t) BLOCKS * d.block_elems;
    uint16_t *pool = malloc(pool_elems * sizeof(uint16_t));
    int lens[] = { 1, 33, 700, 2900 };
    struct worker_request *r[4];
    struct batch_item items[4];
    struct batch b = { .items = items, .n = 4 };
    void *pool_d;
    char what[96];

    for (size_t i = 0; i < pool_elems; i++)
        pool[i] = f32_to_bf16(uniform(-1, 1));
    pool_d = dev_copy(pool, pool_elems * sizeof(uint16_t));

    /* decode: one query per sequence, lengths 1 to 2900 */
    for (int i = 0; i < 4; i++) {
        r[i] = sequence(lens[i], d.vocab, 0, 1);
        items[i] = (struct batch_item) { r[i], lens[i] - 1, 1, true };
    }
    b.n_tokens = 4;
    /* one split per query, the machine's own sizing, and many splits */
    for (int k = 0; k < 3; k++) {
        int sms = k == 0 ? 1 : k == 1 ? n_sms : 1000;

        snprintf(what, sizeof(what), "decode attention hd %d, sized for %d SMs", hd, sms);
        check_attention(what, &b, true, sms, d, pool, pool_d, 1);
    }

    /* a prompt chunk after a cached prefix of 100, beside a decode */
    items[0] = (struct batch_item) { r[3], 100, 150, true };
    items[1] = (struct batch_item) { r[2], 699, 1, true };
    b.n = 2;
    b.n_tokens = 151;
    snprintf(what, sizeof(what), "prefill attention hd %d, per row", hd);
    check_attention(what, &b, false, n_sms, d, pool, pool_d, 0);
    if (cuda_attention_tiles_ok(hd)) {
        snprintf(what, sizeof(what), "prefill attention hd %d, tiled", hd);
        check_attention(what, &b, true, n_sms, d, pool, pool_d, 0);
        /* a whole prompt from position 0, not a multiple of the tile */
        items[0] = (struct batch_item) { r[2], 0, 130, false };
        b.n = 1;
        b.n_tokens = 130;
        check_attention(what, &b, true, n_sms, d, pool, pool_d, 1);
    }
    for (int i = 0; i < 4; i++)
        request_free(r[i]);
    cudaFree(pool_d);
    free(pool);
}

/* ------------------------------------------------------------------------ */

static void set_par(struct cuda_plan *p, int s, float temp, float top_p, float u)
{
    int32_t *par = p->words + p->words[PLAN_SAMPLE_PAR] + PLAN_PAR_WORDS * s;

    memcpy(&par[0], &temp, 4);
    memcpy(&par[1], &top_p, 4);
    memcpy(&par[2], &u, 4);
}

static const double *sort_probs;

static int by_prob_desc(const void *a, const void *b)
{
    double pa = sort_probs[*(const int32_t *) a], pb = sort_probs[*(const int32_t *) b];

    return pa < pb ? 1 : pa > pb ? -1 : 0;
}

static void test_sampling(void)
{
    enum { VOCAB = 5000, N = 512 };
    struct worker_request *r[N];
    struct batch_item items[N];
    struct batch b = { .items = items, .n = N, .n_tokens = N };
    struct cuda_plan p = { 0 };
    struct cuda_plan_params pp = { BT, 1, n_sms, true };
    float *logits = malloc(sizeof(float) * (size_t) N * VOCAB);
    double probs[VOCAB], sum = 0;
    int32_t tokens[N], counts[VOCAB] = { 0 };
    void *logits_d, *tokens_d;
    int32_t *plan_d;
    int bad = 0;

    for (int i = 0; i < N; i++) {
        r[i] = sequence(3, 300, 1.0, 1.0);
        items[i] = (struct batch_item) { r[i], 2, 1, true };
    }
    for (int v = 0; v < VOCAB; v++)
        logits[v] = uniform(-3, 3) + (v == 4321 ? 6 : 0);
    if (cuda_plan_build(&p, &b, &pp) != 0)
        exit(1);
    /* row 0 greedy; rows 1..N-1 evenly spaced draws at T = 0.8, so the
     * tokens walk the CDF in vocabulary order */
    for (int i = 0; i < N; i++) {
        memcpy(logits + (size_t) i * VOCAB, logits, sizeof(float) * VOCAB);
        set_par(&p, i, i == 0 ? 0 : 0.8f, 1.0f, (i - 0.5f) / (N - 1));
    }
    plan_d = dev_copy(p.words, p.n_words * 4);
    logits_d = dev_copy(logits, sizeof(float) * (size_t) N * VOCAB);
    GPU_OK(cudaMalloc(&tokens_d, sizeof(int32_t) * N));
    cuda_sample(stream, plan_d, logits_d, VOCAB, tokens_d, N);
    host_copy(tokens, tokens_d, sizeof(tokens));
    gpu_check(tokens[0] == argmax(logits, VOCAB), "greedy: %d, argmax %d", tokens[0],
              argmax(logits, VOCAB));
    for (int v = 0; v < VOCAB; v++)
        sum += probs[v] = exp((logits[v] - logits[4321]) / 0.8);
    for (int i = 1; i < N; i++) {
        bad += i > 1 && tokens[i] < tokens[i - 1];
        if (tokens[i] >= 0 && tokens[i] < VOCAB)
            counts[tokens[i]]++;
    }
    gpu_check(bad == 0, "draws not monotone in u: %d", bad);
    for (int v = 0; v < VOCAB; v++)
        if (fabs(counts[v] - probs[v] / sum * (N - 1)) > 1.5)
            bad++;
    gpu_check(bad == 0, "temperature draws off the distribution for %d tokens", bad);

    /* top-p 0.3: every draw inside the nucleus, the most likely tokens
     * until their mass passes 0.3 (the cpu backend's rule) */
    {
        int32_t order[VOCAB];
        char in_nucleus[VOCAB] = { 0 };
        double mass = 0;

        for (int v = 0; v < VOCAB; v++)
            order[v] = v;
        sort_probs = probs;
        qsort(order, VOCAB, sizeof(int32_t), by_prob_desc);
        for (int k = 0; k < VOCAB && mass <= 0.3 * sum; k++) {
            in_nucleus[order[k]] = 1;
            mass += probs[order[k]];
        }
        for (int i = 0; i < N; i++)
            set_par(&p, i, 0.8f, 0.3f, (i + 0.5f) / N);
        cudaFree(plan_d);
        plan_d = dev_copy(p.words, p.n_words * 4);
        cuda_sample(stream, plan_d, logits_d, VOCAB, tokens_d, N);
        host_copy(tokens, tokens_d, sizeof(tokens));
        bad = 0;
        for (int i = 0; i < N; i++)
            bad += tokens[i] < 0 || tokens[i] >= VOCAB || !in_nucleus[tokens[i]];
        gpu_check(bad == 0, "top-p draws outside the nucleus: %d", bad);
    }
    printf("sampling: greedy, temperature and top-p over %d tokens\n", VOCAB);

    cudaFree(plan_d); cudaFree(logits_d); cudaFree(tokens_d);
    free(logits);
    cuda_plan_free(&p);
    for (int i = 0; i < N; i++)
        request_free(r[i]);
}

int main(int argc, char **argv)
{
    struct cudaDeviceProp prop;

    gpu_require_device("cuda kernel tests", argc, argv);
    GPU_OK(cudaSetDevice(0));
    GPU_OK(cudaGetDeviceProperties(&prop, 0));
    GPU_OK(cudaStreamCreate(&stream));
    if (cuda_attention_setup() != 0) {
        printf("FAIL: attention setup\n");
        return 1;
    }
    n_sms = prop.multiProcessorCount;
    printf("device 0: %s, %d SMs\n", prop.name, n_sms);

    test_embed_norm_swiglu();
    test_qkv_store(0, 0);
    test_qkv_store(1, 1);
    test_attention(16);
    test_attention(64);
    test_attention(128);
    test_attention(256);
    test_sampling();
    GPU_OK(cudaDeviceSynchronize());
    cudaStreamDestroy(stream);
    return gpu_report("cuda kernels");
}
