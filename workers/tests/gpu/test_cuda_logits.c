/*
 * The cuda backend against the cpu backend on generated random models, and
 * against itself across batching, prefix hits and graph replay.
 *
 *   logits     a 150-token prompt prefilled in chunks of 64, then 16 decode
 *              steps fed the cpu's greedy tokens; at every step: max |diff|
 *              of the logits relative to their largest magnitude, and
 *              whether the top-1 token agrees (a disagreement must be a
 *              near-tie on the cpu: a gap under twice the max |diff|)
 *   prefix     a prompt run twice on one KV cache (the second run a prefix
 *              hit) gives the same tokens and, within rounding, logits
 *   batch      four requests together give each one's tokens alone
 *   graphs     decode replayed from CUDA graphs = decode launched eagerly
 *
 * Models: llama F32 (head 64, tiled prefill), llama BF16 with a tied head
 * (head 128, GQA 2:1), qwen2 F16 (head 16, per-row attention, biases,
 * NEOX RoPE), llama Q8_0 (head 32).
 *
 *   build/test-cuda-logits             (SKIP and exit 0 without a device)
 */

#include <math.h>
#include <unistd.h>

#include "backends/cpu.h"
#include "backends/cpu_sample.h"
#include "backends/cuda.h"
#include "gpu_test.h"
#include "model_tool/model_gen.h"
#include "sched/scheduler.h"

#define BT          16
#define PROMPT      150
#define CHUNK       64
#define STEPS       16
#define N_REQ       4
#define MAX_NEW     12
/* bf16 weights, activations and KV against f32 throughout */
#define LOGIT_TOL   0.05
/* the same backend over differently shaped GEMMs */
#define SELF_TOL    0.01

struct model_case {
    const char     *name, *arch, *vocab;
    enum ggml_type  type;
    int             dim, hidden, layers, heads, kv_heads;
    bool            tied;
};

static const struct model_case cases[] = {
    { "llama f32, head 64", "llama", "spm", GGML_F32, 256, 512, 2, 4, 2, false },
    { "llama bf16, head 128, tied", "llama", "llama3", GGML_BF16, 256, 384, 2, 2, 1, true },
    { "qwen2 f16, head 16", "qwen2", "qwen2", GGML_F16, 64, 160, 2, 4, 2, false },
    { "llama q8_0, head 32", "llama", "spm", GGML_Q8_0, 128, 256, 3, 4, 4, false },
};

static int32_t token_of(int i, int vocab)
{
    return (int32_t) (3 + (i * 37 + i / 7) % (vocab - 3));
}

static float max_abs(const float *x, int n)
{
    float m = 0;

    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

static float max_diff(const float *a, const float *b, int n)
{
    float m = 0;

    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

/* one backend, its own KV cache, one sequence stepped by hand */
struct solo {
    struct backend         *be;
    struct kv_manager       kv;
    struct worker_request  *r;
};

static void solo_open(struct solo *s, struct backend *be, const int32_t *prompt, int n)
{
    struct kv_geometry geo = { (n + STEPS) / BT + 2, BT, be->info.num_layers,
                               be->info.kv_heads, be->info.head_dim, be->info.dtype_bytes };
    struct gen_params gp = { .max_tokens = STEPS + 1 };

    s->be = be;
    if (kv_init(&s->kv, &geo) != 0 || (s->r = request_new(prompt, n, &gp, BT)) == NULL)
        exit(1);
    be->ops->attach_kv(be, &s->kv);
    for (int i = 0; i < geo.num_blocks; i++)
        s->r->blocks[s->r->n_blocks++] = kv_alloc(&s->kv);
}

static void solo_step(struct solo *s, int start, int n, bool sample)
{
    struct batch_item it = { s->r, start, n, sample };
    struct batch b = { .items = &it, .n = 1, .n_tokens = n };
    int32_t next;

    gpu_check(s->be->ops->forward(s->be, &b, &next) == 0, "forward failed");
}

static void solo_close(struct solo *s)
{
    request_free(s->r);
    kv_free(&s->kv);
}

static void prefill(struct solo *s)
{
    for (int pos = 0; pos < PROMPT; pos += CHUNK) {
        int n = PROMPT - pos < CHUNK ? PROMPT - pos : CHUNK;
        solo_step(s, pos, n, pos + n == PROMPT);
    }
}

/* cuda and cpu side by side, the cpu choosing every next token */
static void compare_logits(struct backend *cpu, struct backend *gpu, const char *name)
{
    int vocab = cpu->info.vocab_size, agree = 0, near_ties = 0;
    int32_t prompt[PROMPT];
    struct solo a, b;
    float worst = 0;

    for (int i = 0; i < PROMPT; i++)
        prompt[i] = token_of(i, vocab);
    solo_open(&a, cpu, prompt, PROMPT);
    solo_open(&b, gpu, prompt, PROMPT);
    prefill(&a);
    prefill(&b);
    for (int s = 0; s <= STEPS; s++) {
        const float *lc = cpu_backend_logits(cpu, 0), *lg = cuda_backend_logits(gpu, 0);
        float diff, scale;
        int32_t tc, tg;

        if (lc == NULL || lg == NULL) {
            gpu_check(0, "%s: no logits at step %d", name, s);
            break;
        }
        tc = argmax(lc, vocab);
        tg = argmax(lg, vocab);
        diff = max_diff(lc, lg, vocab);
        scale = max_abs(lc, vocab);
        worst = fmaxf(worst, diff / scale);
        agree += tc == tg;
        if (tc != tg) {
            near_ties++;
            gpu_check(lc[tc] - lc[tg] < 2 * diff, "%s step %d: top-1 %d vs %d, "
                      "gap %g beyond 2 x max diff %g", name, s, tc, tg, lc[tc] - lc[tg], diff);
        }
        if (s == STEPS)
            break;
        /* both take the cpu's token */
        a.r->tokens[a.r->n_tokens++] = tc;
        b.r->tokens[b.r->n_tokens++] = tc;
        solo_step(&a, a.r->n_tokens - 1, 1, true);
        solo_step(&b, b.r->n_tokens - 1, 1, true);
    }
    printf("%s: logits vs cpu over %d positions: max |diff| / max |logit| = %.4f, "
           "top-1 agreement %d/%d (%d near ties)\n", name, STEPS + 1, worst, agree,
           STEPS + 1, near_ties);
    gpu_check(worst < LOGIT_TOL, "%s: logits differ by %.4f of their scale", name, worst);
    solo_close(&a);
    solo_close(&b);
}

/* ------------------------------------------------------------------------ */
/* on the engine's scheduler: batches, prefix hits, graphs */

struct run {
    struct kv_manager   kv;
    struct scheduler    s;
};

static void run_open(struct run *run, struct backend *be)
{
    struct kv_geometry geo = { 128, BT, be->info.num_layers, be->info.kv_heads,
                               be->info.head_dim, be->info.dtype_bytes };
    struct sched_config sc = { N_REQ, 256, 1.0 };

    if (kv_init(&run->kv, &geo) != 0 || sched_init(&run->s, &sc, &run->kv) != 0)
        exit(1);
    be->ops->attach_kv(be, &run->kv);
}

static void run_close(struct run *run)
{
    sched_destroy(&run->s);
    kv_free(&run->kv);
}

static void prompt_of(int which, int vocab, int32_t *p, int len)
{
    /* prompts share their first 40 tokens, then differ */
    for (int i = 0; i < len; i++)
        p[i] = token_of(i < 40 ? i : i * 11 + which * 29, vocab);
}

/* Greedy generation of requests which[0..n) together; tokens and the
 * logits of each first generated token come back. */
static void generate(struct backend *be, struct run *run, const int *which, int n,
    int32_t tokens[][MAX_NEW], float **first)
{
    struct worker_request *r[N_REQ];
    int32_t next[N_REQ];
    int done = 0, vocab = be->info.vocab_size;

    for (int k = 0; k < n; k++) {
        int32_t prompt[100];
        struct gen_params gp = { .max_tokens = MAX_NEW };

        prompt_of(which[k], vocab, prompt, 60 + 10 * which[k]);
        r[k] = request_new(prompt, 60 + 10 * which[k], &gp, BT);
        r[k]->arrival = k;
        if (sched_add(&run->s, r[k]) != 0)
            exit(1);
    }
    while (done < n) {
        struct batch b;

        sched_plan(&run->s, &b);
        if (b.n == 0 || be->ops->forward(be, &b, next) != 0) {
            gpu_check(0, "generation stalled");
            break;
        }
        sched_commit(&run->s, &b);
        for (int i = 0; i < b.n; i++) {
            struct worker_request *q = b.items[i].req;
            if (!b.items[i].sample)
                continue;
            if (q->n_generated == 0)
                for (int k = 0; k < n; k++)
                    if (r[k] == q)
                        memcpy(first[k], cuda_backend_logits(be, i),
                               sizeof(float) * (size_t) vocab);
            q->tokens[q->n_tokens++] = next[i];
            if (++q->n_generated == MAX_NEW) {
                sched_finish(&run->s, q, FINISH_LENGTH);
                done++;
            }
        }
    }
    for (int k = 0; k < n; k++) {
        memcpy(tokens[k], r[k]->tokens + r[k]->n_prompt, sizeof(int32_t) * MAX_NEW);
        request_free(r[k]);
    }
}

static float rel_diff(const float *a, const float *b, int n)
{
    return max_diff(a, b, n) / max_abs(a, n);
}

static void compare_self(struct backend *be, const char *name)
{
    struct cuda_state *st = be->state;
    int vocab = be->info.vocab_size, all[N_REQ] = { 0, 1, 2, 3 };
    int32_t together[N_REQ][MAX_NEW], alone[1][MAX_NEW], cold[1][MAX_NEW], warm[1][MAX_NEW];
    float *lt[N_REQ], *la[1], *lc[1], *lw[1], worst = 0;
    struct run run;

    for (int k = 0; k < N_REQ; k++)
        lt[k] = malloc(sizeof(float) * (size_t) vocab);
    la[0] = malloc(sizeof(float) * (size_t) vocab);
    lc[0] = malloc(sizeof(float) * (size_t) vocab);
    lw[0] = malloc(sizeof(float) * (size_t) vocab);

    /* batch = singles */
    run_open(&run, be);
    generate(be, &run, all, N_REQ, together, lt);
    run_close(&run);
    for (int k = 0; k < N_REQ; k++) {
        run_open(&run, be);
        generate(be, &run, &all[k], 1, alone, la);
        run_close(&run);
        gpu_check(memcmp(alone[0], together[k], sizeof(alone[0])) == 0,
                  "%s: request %d differs in a batch", name, k);
        worst = fmaxf(worst, rel_diff(la[0], lt[k], vocab));
    }
    printf("%s: batch of %d vs alone: max logit diff %.2e of scale\n", name, N_REQ,
           worst);
    gpu_check(worst < SELF_TOL, "%s: batch logits differ by %g", name, worst);

    /* prefix hit = cold */
    run_open(&run, be);
    generate(be, &run, &all[2], 1, cold, lc);
    generate(be, &run, &all[2], 1, warm, lw);
    gpu_check(run.s.prefix_hits >= 64, "%s: no prefix hit (%llu tokens)", name,
              (unsigned long long) run.s.prefix_hits);
    run_close(&run);
    gpu_check(memcmp(cold, warm, sizeof(cold)) == 0, "%s: prefix hit changes tokens", name);
    printf("%s: prefix hit vs cold: max logit diff %.2e of scale\n", name,
           rel_diff(lc[0], lw[0], vocab));
    gpu_check(rel_diff(lc[0], lw[0], vocab) < SELF_TOL, "%s: prefix hit logits", name);

    /* graphs = eager: every decode step of four requests has the same
     * shape, captured on its second sighting and replayed after */
    {
        int32_t eager[N_REQ][MAX_NEW], replayed[N_REQ][MAX_NEW];

        st->use_graphs = false;
        run_open(&run, be);
        generate(be, &run, all, N_REQ, eager, lt);
        run_close(&run);
        st->use_graphs = true;
        run_open(&run, be);
        generate(be, &run, all, N_REQ, replayed, lt);
        run_close(&run);
        gpu_check(memcmp(eager, replayed, sizeof(eager)) == 0,
                  "%s: graph replay changes tokens", name);
        printf("%s: decode from graphs vs eager: %s tokens\n", name,
               memcmp(eager, replayed, sizeof(eager)) == 0 ? "same" : "different");
    }

    for (int k = 0; k < N_REQ; k++)
        free(lt[k]);
    free(la[0]);
    free(lc[0]);
    free(lw[0]);
}

int main(int argc, char **argv)
{
    char path[64], err[512];

    gpu_require_device("cuda logits tests", argc, argv);
    snprintf(path, sizeof(path), "/tmp/llmd-gpu-test-%d.gguf", (int) getpid());
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const struct model_case *mc = &cases[c];
        struct model_gen_params p;
        struct backend cpu = { .ops = &cpu_backend_ops }, gpu = { .ops = &cuda_backend_ops };

        model_gen_defaults(&p);
        snprintf(p.arch, sizeof(p.arch), "%s", mc->arch);
        snprintf(p.vocab, sizeof(p.vocab), "%s", mc->vocab);
        p.type = mc->type;
        p.dim = mc->dim;
        p.hidden_dim = mc->hidden;
        p.n_layers = mc->layers;
        p.n_heads = mc->heads;
        p.n_kv_heads = mc->kv_heads;
        p.tied = mc->tied;
        p.context_length = 1024;
        if (model_gen_write(&p, path, err, sizeof(err)) != 0
            || cpu_backend_open(&cpu, path, 0, err, sizeof(err)) != 0
            || cuda_backend_open(&gpu, path, 0, err, sizeof(err)) != 0) {
            printf("FAIL: %s: %s\n", mc->name, err);
            unlink(path);
            return 1;
        }
        if (c == 0)
            printf("device 0: %s\n", ((struct cuda_state *) gpu.state)->device_name);
        compare_logits(&cpu, &gpu, mc->name);
        compare_self(&gpu, mc->name);
        cpu.ops->free(&cpu);
        gpu.ops->free(&gpu);
        unlink(path);
    }
    return gpu_report("cuda logits");
}
