#include "model_bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backends/cpu.h"
#include "sched/kv_blocks.h"
#include "sched/request.h"
#ifdef LLMD_HAVE_CUDA
#include "backends/cuda.h"
#endif

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* a request with blocks for `len` tokens, its prompt made of `len` ids */
static struct worker_request *sequence(struct kv_manager *kv, int len, int vocab, int seed)
{
    struct gen_params gp = { .max_tokens = 1 };
    int32_t *ids = malloc(sizeof(int32_t) * (size_t) len);
    struct worker_request *r;
    int bt = kv->geo.block_tokens;

    for (int i = 0; i < len; i++)
        ids[i] = 3 + (i * 31 + seed * 17) % (vocab - 3);
    r = request_new(ids, len, &gp, bt);
    free(ids);
    for (int i = 0; i < (len + bt - 1) / bt; i++)
        r->blocks[r->n_blocks++] = kv_alloc(kv);
    return r;
}

static int open_backend(struct backend *b, const char *name, const char *model,
    int threads, int device, char *err, int err_len)
{
    if (strcmp(name, "cpu") == 0) {
        b->ops = &cpu_backend_ops;
        return cpu_backend_open(b, model, threads, err, err_len);
    }
#ifdef LLMD_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) {
        b->ops = &cuda_backend_ops;
        return cuda_backend_open(b, model, device, err, err_len);
    }
#endif
    (void) device;
    snprintf(err, (size_t) err_len, "--backend %s is not available in this build "
             "(cpu%s)", name,
#ifdef LLMD_HAVE_CUDA
             ", cuda"
#else
             "; cuda needs nvcc at build time"
#endif
             );
    return -1;
}

/* What the backend is running on, as JSON fields (no leading comma). */
static void print_platform(const struct backend *b, const char *name, int device)
{
    if (strcmp(name, "cpu") == 0) {
        printf("\"threads\":%d", ((const struct cpu_state *) b->state)->pool.n_threads);
        return;
    }
#ifdef LLMD_HAVE_CUDA
    {
        const struct cuda_state *st = b->state;
        const struct model *m = &st->model;
        /* bf16 on the device: every layer matrix and the head per step */
        uint64_t head = (uint64_t) m->output.rows * (uint64_t) m->output.cols;
        uint64_t params = model_param_count(m);
        uint64_t embd = m->output.data == m->token_embd.data ? 0 : head;

        printf("\"device\":\"%s\",\"copy_gb_s\":%.1f,\"gemm_tflops\":%.1f,"
               "\"params\":%llu,\"decode_weight_bytes\":%llu", st->device_name,
               cuda_copy_gbs(device, (size_t) 1 << 30), cuda_gemm_tflops(device, 8192),
               (unsigned long long) params,
               (unsigned long long) (2 * (params - embd)));
    }
#else
    (void) b;
    (void) device;
#endif
}

int model_bench_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", 1, NULL, 'm' }, { "batch", 1, NULL, 'b' }, { "steps", 1, NULL, 's' },
        { "prompt", 1, NULL, 'p' }, { "threads", 1, NULL, 't' },
        { "backend", 1, NULL, 'B' }, { "device", 1, NULL, 'd' },
        { "context", 1, NULL, 'c' }, { NULL, 0, NULL, 0 }
    };
    const char *model = NULL, *backend = "cpu";
    int batch = 1, steps = 32, prompt = 128, threads = 0, device = 0, context = 16, o;
    int warm, blocks;
    struct backend b = { 0 };
    struct kv_manager kv;
    struct kv_geometry geo;
    struct worker_request **seqs;
    struct batch_item *items;
    int32_t *next;
    char err[512];
    double t0, prefill_s, decode_s;
    struct rusage ru;

    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'm')
            model = optarg;
        else if (o == 'B')
            backend = optarg;
        else if (o == 'b' || o == 's' || o == 'p' || o == 't' || o == 'd' || o == 'c')
            *(o == 'b' ? &batch : o == 's' ? &steps : o == 'p' ? &prompt
              : o == 't' ? &threads : o == 'd' ? &device : &context) = atoi(optarg);
        else
            goto usage;
    }
    if (model == NULL || batch < 1 || steps < 1 || prompt < 1 || context < 1) {
usage:
        fputs("usage: llmd-worker bench --model FILE.gguf [--batch N] [--steps N] "
              "[--prompt N] [--context N] [--threads N] [--backend cpu|cuda] "
              "[--device N]\n", stderr);
        return 2;
    }
    if (open_backend(&b, backend, model, threads, device, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmd-worker bench: %s\n", err);
        return 1;
    }
    /* a GPU's first steps allocate buffers, pick GEMM kernels and capture
     * decode graphs: run them before the clock starts */
    warm = strcmp(backend, "cpu") == 0 ? 0 : 3;
    blocks = 2 * ((prompt + 1) / 16 + 2) + batch * ((context + steps + warm + 1) / 16 + 2);
    geo = (struct kv_geometry) { blocks, 16, b.info.num_layers,
                                 b.info.kv_heads, b.info.head_dim, b.info.dtype_bytes };
    seqs = calloc((size_t) batch + 2, sizeof(*seqs));
    items = calloc((size_t) batch + 1, sizeof(*items));
    next = calloc((size_t) batch + 1, sizeof(*next));
    if (!seqs || !items || !next || kv_init(&kv, &geo) != 0) {
        fprintf(stderr, "llmd-worker bench: out of memory\n");
        return 1;
    }
    b.ops->attach_kv(&b, &kv);

    /* prefill: one prompt of `prompt` tokens in one step */
    seqs[batch] = sequence(&kv, prompt + 1, b.info.vocab_size, batch);
    if (warm) {
        seqs[batch + 1] = sequence(&kv, prompt + 1, b.info.vocab_size, batch + 1);
        items[0] = (struct batch_item) { seqs[batch + 1], 0, prompt, true };
        b.ops->forward(&b, &(struct batch) { .items = items, .n = 1, .n_tokens = prompt }, next);
    }
    items[0] = (struct batch_item) { seqs[batch], 0, prompt, true };
    t0 = now();
    b.ops->forward(&b, &(struct batch) { .items = items, .n = 1, .n_tokens = prompt }, next);
    prefill_s = now() - t0;

    /* decode: `batch` sequences, each with a `context`-token prompt */
    for (int i = 0; i < batch; i++) {
        seqs[i] = sequence(&kv, context + steps + warm + 1, b.info.vocab_size, i);
        items[i] = (struct batch_item) { seqs[i], 0, context, true };
    }
    b.ops->forward(&b, &(struct batch) { .items = items, .n = batch,
                                         .n_tokens = context * batch }, next);
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm)
            t0 = now();
        for (int i = 0; i < batch; i++)
            items[i] = (struct batch_item) { seqs[i], context + s, 1, true };
        b.ops->forward(&b, &(struct batch) { .items = items, .n = batch, .n_tokens = batch }, next);
    }
    decode_s = now() - t0;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"backend\":\"%s\",", backend);
    print_platform(&b, backend, device);
    printf(",\"batch\":%d,\"prefill_tokens\":%d,\"prefill_tok_s\":%.1f,"
           "\"decode_context\":%d,\"decode_steps\":%d,\"decode_tok_s\":%.2f,\"step_ms\":%.3f,"
           "\"peak_rss_mb\":%.1f}\n", batch, prompt, prompt / prefill_s, context, steps,
           steps * batch / decode_s, decode_s * 1e3 / steps, ru.ru_maxrss / 1024.0);
    for (int i = 0; i <= batch + 1; i++)
        request_free(seqs[i]);
    free(seqs);
    free(items);
    free(next);
    kv_free(&kv);
    b.ops->free(&b);
    return 0;
}
