/*
 * Tiny-model generator: deterministic random Llama-family weights plus a
 * small real vocabulary, written as GGUF.
 */

#include "model_gen.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "backends/cpu_kernels.h"
#include "gguf_write.h"
#include "model_gen_vocab.h"

void model_gen_defaults(struct model_gen_params *p)
{
    memset(p, 0, sizeof(*p));
    strcpy(p->arch, "llama");
    strcpy(p->vocab, "spm");
    p->dim = 64;
    p->hidden_dim = 160;
    p->n_layers = 2;
    p->n_heads = 4;
    p->n_kv_heads = 2;
    p->context_length = 512;
    p->type = GGML_F32;
    p->seed = 1;
}

/* ------------------------------------------------------------------------ */
/* weights: each tensor's values depend only on the seed and its name */

static void fill_uniform(float *x, size_t n, uint64_t seed, const char *name,
    float offset, float scale)
{
    uint64_t s = XXH3_64bits_withSeed(name, strlen(name), seed);

    for (size_t i = 0; i < n; i++) {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        x[i] = offset + scale * (float) ((double) (z >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

/* f32 values to `type`, into a new buffer of *bytes */
static void *encode(const float *x, size_t n, enum ggml_type type, size_t *bytes)
{
    uint8_t *out = malloc(ggml_row_bytes(type, (int64_t) n) + 1);

    if (out == NULL)
        return NULL;
    *bytes = ggml_row_bytes(type, (int64_t) n);
    for (size_t i = 0; type != GGML_Q8_0 && i < n; i++) {
        uint16_t h = type == GGML_F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        if (type == GGML_F32)
            memcpy(out + 4 * i, &x[i], 4);
        else
            memcpy(out + 2 * i, &h, 2);
    }
    for (size_t b = 0; type == GGML_Q8_0 && b < n / Q8_0_BLOCK; b++) {
        const float *v = x + b * Q8_0_BLOCK;
        uint8_t *blk = out + b * Q8_0_BLOCK_BYTES;
        float amax = 0, d, id;
        uint16_t d16;

        for (int j = 0; j < Q8_0_BLOCK; j++)
            amax = fmaxf(amax, fabsf(v[j]));
        d = amax / 127.0f;
        id = d > 0 ? 1.0f / d : 0;
        d16 = f32_to_f16(d);
        memcpy(blk, &d16, 2);
        for (int j = 0; j < Q8_0_BLOCK; j++)
            blk[2 + j] = (uint8_t) (int8_t) lrintf(v[j] * id);
    }
    return out;
}

static int add(struct gguf_writer *w, const struct model_gen_params *p,
    const char *name, int64_t ne0, int64_t ne1, enum ggml_type type,
    float offset, float scale)
{
    size_t n = (size_t) ne0 * (size_t) ne1, bytes = 0;
    float *x = malloc(sizeof(float) * n);
    void *enc;

    if (x == NULL)
        return -1;
    fill_uniform(x, n, p->seed, name, offset, scale);
    enc = encode(x, n, type, &bytes);
    free(x);
    if (enc == NULL)
        return -1;
    gw_tensor(w, name, type, ne0, ne1, enc, bytes);
    free(enc);
    return 0;
}

static int add_weights(struct gguf_writer *w, const struct model_gen_params *p,
    int vocab)
{
    int hd = p->dim / p->n_heads, q = p->n_heads * hd, kv = p->n_kv_heads * hd;
    bool bias = strcmp(p->arch, "qwen2") == 0;
    char name[64];
    int rc = 0;
    /* uniform(-a, a) has variance a^2 / 3: unit-variance outputs */
    float in_dim = sqrtf(3.0f / (float) p->dim), in_q = sqrtf(3.0f / (float) q),
          in_ffn = sqrtf(3.0f / (float) p->hidden_dim);

    rc |= add(w, p, "token_embd.weight", p->dim, vocab, p->type, 0, 1);
    rc |= add(w, p, "output_norm.weight", p->dim, 1, GGML_F32, 1, 0.2f);
    if (!p->tied)
        rc |= add(w, p, "output.weight", p->dim, vocab, p->type, 0, in_dim);
    for (int l = 0; l < p->n_layers && rc == 0; l++) {
#define T(s) (snprintf(name, sizeof(name), "blk.%d." s, l), name)
        rc |= add(w, p, T("attn_norm.weight"), p->dim, 1, GGML_F32, 1, 0.2f);
        rc |= add(w, p, T("attn_q.weight"), p->dim, q, p->type, 0, in_dim);
        rc |= add(w, p, T("attn_k.weight"), p->dim, kv, p->type, 0, in_dim);
        rc |= add(w, p, T("attn_v.weight"), p->dim, kv, p->type, 0, in_dim);
        rc |= add(w, p, T("attn_output.weight"), q, p->dim, p->type, 0, in_q);
        rc |= add(w, p, T("ffn_norm.weight"), p->dim, 1, GGML_F32, 1, 0.2f);
        rc |= add(w, p, T("ffn_gate.weight"), p->dim, p->hidden_dim, p->type, 0, in_dim);
        rc |= add(w, p, T("ffn_up.weight"), p->dim, p->hidden_dim, p->type, 0, in_dim);
        rc |= add(w, p, T("ffn_down.weight"), p->hidden_dim, p->dim, p->type, 0, in_ffn);
        if (bias) {
            rc |= add(w, p, T("attn_q.bias"), q, 1, GGML_F32, 0, 0.2f);
            rc |= add(w, p, T("attn_k.bias"), kv, 1, GGML_F32, 0, 0.2f);
            rc |= add(w, p, T("attn_v.bias"), kv, 1, GGML_F32, 0, 0.2f);
        }
#undef T
    }
    return rc;
}

static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char llama3_template[] =
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\\n\\n' }}{% endif %}";

static void add_metadata(struct gguf_writer *w, const struct model_gen_params *p,
    const struct gen_vocab *v)
{
    const char *a = p->arch;
    char key[96];
    bool spm = strcmp(p->vocab, "spm") == 0;

#define K(s) (snprintf(key, sizeof(key), "%s." s, a), key)
    gw_str(w, "general.architecture", a);
    gw_str(w, "general.name", "llmd-tiny");
    gw_u32(w, "general.alignment", 32);
    gw_u32(w, K("context_length"), (uint32_t) p->context_length);
    gw_u32(w, K("embedding_length"), (uint32_t) p->dim);
    gw_u32(w, K("feed_forward_length"), (uint32_t) p->hidden_dim);
    gw_u32(w, K("block_count"), (uint32_t) p->n_layers);
    gw_u32(w, K("attention.head_count"), (uint32_t) p->n_heads);
    gw_u32(w, K("attention.head_count_kv"), (uint32_t) p->n_kv_heads);
    gw_u32(w, K("rope.dimension_count"), (uint32_t) (p->dim / p->n_heads));
    gw_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-5f);
    gw_f32(w, K("rope.freq_base"), strcmp(a, "qwen2") == 0 ? 1000000.0f : 10000.0f);
#undef K
    gw_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    if (!spm)
        gw_str(w, "tokenizer.ggml.pre", strcmp(p->vocab, "llama3") == 0 ? "llama-bpe" : "qwen2");
    gw_str_array(w, "tokenizer.ggml.tokens", (const char *const *) v->tokens, v->n);
    if (spm)
        gw_f32_array(w, "tokenizer.ggml.scores", v->scores, v->n);
    gw_i32_array(w, "tokenizer.ggml.token_type", v->types, v->n);
    if (!spm)
        gw_str_array(w, "tokenizer.ggml.merges", (const char *const *) v->merges, v->n_merges);
    if (v->bos >= 0)
        gw_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t) v->bos);
    gw_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t) v->eos);
    gw_bool(w, "tokenizer.ggml.add_bos_token", v->bos >= 0);
    if (strcmp(p->vocab, "qwen2") == 0)
        gw_str(w, "tokenizer.chat_template", chatml_template);
    else if (strcmp(p->vocab, "llama3") == 0)
        gw_str(w, "tokenizer.chat_template", llama3_template);
}

int model_gen_write(const struct model_gen_params *p, const char *path,
    char *err, int err_len)
{
    struct gguf_writer w = { 0 };
    struct gen_vocab v;
    int rc;

    if (p->dim % p->n_heads || p->n_heads % p->n_kv_heads || (p->dim / p->n_heads) % 2
        || (p->type == GGML_Q8_0 && (p->dim % 32 || p->hidden_dim % 32))) {
        snprintf(err, (size_t) err_len, "bad shape: dim must divide into heads "
                 "of even size, heads into kv heads, and Q8_0 needs multiples of 32");
        return -1;
    }
    if (strcmp(p->arch, "llama") != 0 && strcmp(p->arch, "qwen2") != 0) {
        snprintf(err, (size_t) err_len, "arch must be llama or qwen2");
        return -1;
    }
    if (gen_vocab_build(&v, p->vocab) != 0) {
        snprintf(err, (size_t) err_len, "vocab must be spm, qwen2 or llama3");
        return -1;
    }
    add_metadata(&w, p, &v);
    rc = add_weights(&w, p, p->vocab_size > v.n ? p->vocab_size : v.n);
    rc = rc == 0 ? gw_write_file(&w, path, err, err_len)
                 : (snprintf(err, (size_t) err_len, "out of memory"), -1);
    gw_free(&w);
    gen_vocab_free(&v);
    return rc;
}

/* ------------------------------------------------------------------------ */

static const char usage[] =
"usage: llmd-worker mkmodel --out FILE.gguf [options]\n"
"  --arch llama|qwen2           graph (llama); qwen2 adds q/k/v biases\n"
"  --vocab spm|qwen2|llama3     tokenizer family (spm)\n"
"  --dim N --layers N --heads N --kv-heads N --ffn N   shape (64 2 4 2 160)\n"
"  --context N                  context length (512)\n"
"  --type f32|f16|bf16|q8_0     matrix type (f32)\n"
"  --tied                       share the embeddings with the output head\n"
"  --vocab-size N               embedding rows, padding the tokenizer's\n"
"  --seed N                     weights seed (1)\n";

int model_gen_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "out", 1, NULL, 'o' }, { "arch", 1, NULL, 'a' }, { "vocab", 1, NULL, 'v' },
        { "dim", 1, NULL, 'd' }, { "layers", 1, NULL, 'l' }, { "heads", 1, NULL, 'h' },
        { "kv-heads", 1, NULL, 'k' }, { "ffn", 1, NULL, 'f' }, { "context", 1, NULL, 'c' },
        { "type", 1, NULL, 't' }, { "tied", 0, NULL, 'T' }, { "seed", 1, NULL, 's' },
        { "vocab-size", 1, NULL, 'V' }, { "help", 0, NULL, 'H' }, { NULL, 0, NULL, 0 }
    };
    struct model_gen_params p;
    const char *out = NULL;
    char err[256];
    int o;

    model_gen_defaults(&p);
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int *num = o == 'd' ? &p.dim : o == 'l' ? &p.n_layers : o == 'h' ? &p.n_heads
                 : o == 'k' ? &p.n_kv_heads : o == 'f' ? &p.hidden_dim
                 : o == 'c' ? &p.context_length : o == 'V' ? &p.vocab_size : NULL;
        if (num) {
            *num = atoi(optarg);
            if (*num < 1 || *num > 1 << 20)
                goto bad;
        } else if (o == 'o') {
            out = optarg;
        } else if (o == 'a' && strlen(optarg) < sizeof(p.arch)) {
            strcpy(p.arch, optarg);
        } else if (o == 'v' && strlen(optarg) < sizeof(p.vocab)) {
            strcpy(p.vocab, optarg);
        } else if (o == 't') {
            p.type = strcmp(optarg, "f32") == 0 ? GGML_F32 : strcmp(optarg, "f16") == 0
                     ? GGML_F16 : strcmp(optarg, "bf16") == 0 ? GGML_BF16
                     : strcmp(optarg, "q8_0") == 0 ? GGML_Q8_0 : (enum ggml_type) -1;
            if ((int) p.type < 0)
                goto bad;
        } else if (o == 'T') {
            p.tied = true;
        } else if (o == 's') {
            p.seed = strtoull(optarg, NULL, 10);
        } else if (o == 'H') {
            fputs(usage, stdout);
            return 0;
        } else {
            goto bad;
        }
    }
    if (out == NULL || optind < argc)
        goto bad;
    if (model_gen_write(&p, out, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmd-worker mkmodel: %s\n", err);
        return 1;
    }
    return 0;
bad:
    fputs(usage, stderr);
    return 2;
}
