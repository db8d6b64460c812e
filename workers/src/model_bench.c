#include "model_bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backends/cpu.h"
#include "kv_blocks.h"
#include "request.h"

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

int model_bench_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", 1, NULL, 'm' }, { "batch", 1, NULL, 'b' }, { "steps", 1, NULL, 's' },
        { "prompt", 1, NULL, 'p' }, { "threads", 1, NULL, 't' }, { NULL, 0, NULL, 0 }
    };
    const char *model = NULL;
    int batch = 1, steps = 32, prompt = 128, threads = 0, o, ctx;
    struct backend b = { .ops = &cpu_backend_ops };
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
        else if (o == 'b' || o == 's' || o == 'p' || o == 't')
            *(o == 'b' ? &batch : o == 's' ? &steps : o == 'p' ? &prompt : &threads) = atoi(optarg);
        else
            goto usage;
    }
    if (model == NULL || batch < 1 || steps < 1 || prompt < 1) {
usage:
        fputs("usage: llmd-worker bench --model FILE.gguf [--batch N] [--steps N] "
              "[--prompt N] [--threads N]\n", stderr);
        return 2;
    }
    if (cpu_backend_open(&b, model, threads, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmd-worker bench: %s\n", err);
        return 1;
    }
    ctx = prompt + steps + 1;
    geo = (struct kv_geometry) { (ctx / 16 + 2) * (batch + 1), 16, b.info.num_layers,
                                 b.info.kv_heads, b.info.head_dim, b.info.dtype_bytes };
    seqs = calloc((size_t) batch + 1, sizeof(*seqs));
    items = calloc((size_t) batch + 1, sizeof(*items));
    next = calloc((size_t) batch + 1, sizeof(*next));
    if (!seqs || !items || !next || kv_init(&kv, &geo) != 0) {
        fprintf(stderr, "llmd-worker bench: out of memory\n");
        return 1;
    }
    b.ops->attach_kv(&b, &kv);

    /* prefill: one prompt of `prompt` tokens in one step */
    seqs[batch] = sequence(&kv, ctx, b.info.vocab_size, batch);
    items[0] = (struct batch_item) { seqs[batch], 0, prompt, true };
    t0 = now();
    b.ops->forward(&b, &(struct batch) { .items = items, .n = 1, .n_tokens = prompt }, next);
    prefill_s = now() - t0;

    /* decode: `batch` sequences, each with a 16-token context to start */
    for (int i = 0; i < batch; i++) {
        seqs[i] = sequence(&kv, 16 + steps + 1, b.info.vocab_size, i);
        items[i] = (struct batch_item) { seqs[i], 0, 16, true };
    }
    b.ops->forward(&b, &(struct batch) { .items = items, .n = batch, .n_tokens = 16 * batch }, next);
    t0 = now();
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < batch; i++)
            items[i] = (struct batch_item) { seqs[i], 16 + s, 1, true };
        b.ops->forward(&b, &(struct batch) { .items = items, .n = batch, .n_tokens = batch }, next);
    }
    decode_s = now() - t0;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"threads\":%d,\"batch\":%d,\"prefill_tokens\":%d,\"prefill_tok_s\":%.1f,"
           "\"decode_steps\":%d,\"decode_tok_s\":%.2f,\"step_ms\":%.2f,"
           "\"peak_rss_mb\":%.1f}\n", ((struct cpu_state *) b.state)->pool.n_threads,
           batch, prompt, prompt / prefill_s, steps, steps * batch / decode_s,
           decode_s * 1e3 / steps, ru.ru_maxrss / 1024.0);
    for (int i = 0; i <= batch; i++)
        request_free(seqs[i]);
    free(seqs);
    free(items);
    free(next);
    kv_free(&kv);
    b.ops->free(&b);
    return 0;
}
