#include "model_logits.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu.h"
#include "backends/cpu_sample.h"
#include "sched/kv_blocks.h"
#include "sched/request.h"

static const char usage[] =
"usage: llmd-worker logits --model FILE.gguf --ids 1,2,3 [--steps N]\n"
"                          [--chunk N] [--threads N] [--block-tokens N]\n";

static int parse_ids(const char *s, int32_t **ids)
{
    int n = 1, k = 0;

    for (const char *p = s; *p; p++)
        n += *p == ',';
    *ids = malloc(sizeof(int32_t) * (size_t) n);
    for (char *end; *ids && *s; s = *end ? end + 1 : end) {
        (*ids)[k++] = (int32_t) strtol(s, &end, 10);
        if (end == s)
            return -1;
    }
    return *ids ? k : -1;
}

static void print_row(const float *logits, int n, int pos)
{
    printf("{\"pos\":%d,\"next\":%d,\"logits\":[", pos, argmax(logits, n));
    for (int i = 0; i < n; i++)
        printf(i ? ",%.9g" : "%.9g", logits[i]);
    printf("]}\n");
}

static int step(struct backend *b, struct worker_request *r, int start, int n,
    bool sample)
{
    struct batch_item it = { .req = r, .start = start, .n_tokens = n, .sample = sample };
    struct batch batch = { .items = &it, .n = 1, .n_tokens = n };
    int32_t next;

    return b->ops->forward(b, &batch, &next);
}

int model_logits_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", 1, NULL, 'm' }, { "ids", 1, NULL, 'i' }, { "steps", 1, NULL, 's' },
        { "chunk", 1, NULL, 'c' }, { "threads", 1, NULL, 't' },
        { "block-tokens", 1, NULL, 'b' }, { NULL, 0, NULL, 0 }
    };
    const char *model = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, steps = 0, chunk = 1 << 30, threads = 1, bt = 16, o, vocab;
    struct backend b = { .ops = &cpu_backend_ops };
    struct kv_manager kv;
    struct kv_geometry geo;
    struct gen_params gp = { .temperature = 0 };
    struct worker_request *r;
    char err[512];

    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (o == 'm')
            model = optarg;
        else if (o == 'i')
            n_ids = parse_ids(optarg, &ids);
        else if (o == 's' || o == 'c' || o == 't' || o == 'b')
            *(o == 's' ? &steps : o == 'c' ? &chunk : o == 't' ? &threads : &bt) = atoi(optarg);
        else
            goto bad;
    }
    if (model == NULL || n_ids < 1 || steps < 0 || chunk < 1 || bt < 1)
        goto bad;
    if (cpu_backend_open(&b, model, threads, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmd-worker logits: %s\n", err);
        free(ids);
        return 1;
    }
    vocab = b.info.vocab_size;
    geo = (struct kv_geometry) { (n_ids + steps) / bt + 2, bt, b.info.num_layers,
                                 b.info.kv_heads, b.info.head_dim, b.info.dtype_bytes };
    gp.max_tokens = steps + 1;
    r = request_new(ids, n_ids, &gp, bt);
    if (r == NULL || kv_init(&kv, &geo) != 0) {
        fprintf(stderr, "llmd-worker logits: out of memory\n");
        return 1;
    }
    b.ops->attach_kv(&b, &kv);
    for (int i = 0; i < geo.num_blocks - 1; i++)
        r->blocks[r->n_blocks++] = kv_alloc(&kv);

    for (int pos = 0; pos < n_ids; pos += chunk) {
        int n = n_ids - pos < chunk ? n_ids - pos : chunk;
        step(&b, r, pos, n, pos + n == n_ids);
    }
    for (int s = 0; s <= steps; s++) {
        const float *logits = cpu_backend_logits(&b, 0);
        print_row(logits, vocab, r->n_tokens - 1);
        if (s == steps)
            break;
        r->tokens[r->n_tokens++] = argmax(logits, vocab);
        step(&b, r, r->n_tokens - 1, 1, true);
    }
    request_free(r);
    kv_free(&kv);
    b.ops->free(&b);
    free(ids);
    return 0;
bad:
    fputs(usage, stderr);
    free(ids);
    return 2;
}
