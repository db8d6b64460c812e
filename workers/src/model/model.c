/*
 * Llama-family model description from GGUF metadata and tensors.
 */

#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, int err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, int err_len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, (size_t) err_len, fmt, ap);
    va_end(ap);
    return -1;
}

/* "<arch>.<suffix>" as an integer in [lo, hi] */
static int arch_int(const struct gguf_file *f, const char *arch,
    const char *suffix, bool required, int dflt, int lo, int hi, int *out,
    char *err, int err_len)
{
    char key[128];
    int64_t v;

    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    if (!gguf_get_int(f, key, &v)) {
        if (required)
            return fail(err, err_len, "model metadata lacks %s", key);
        *out = dflt;
        return 0;
    }
    if (v < lo || v > hi)
        return fail(err, err_len, "model metadata %s = %lld is out of range "
                    "[%d, %d]", key, (long long) v, lo, hi);
    *out = (int) v;
    return 0;
}

static float arch_float(const struct gguf_file *f, const char *arch,
    const char *suffix, float dflt)
{
    char key[128];
    double v;

    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    return gguf_get_float(f, key, &v) ? (float) v : dflt;
}

static int read_config(struct model_config *c, const struct gguf_file *f,
    char *err, int err_len)
{
    struct gguf_str arch, scaling;
    const char *a;
    const int big = 1 << 20;

    if (!gguf_get_str(f, "general.architecture", &arch))
        return fail(err, err_len, "model metadata lacks general.architecture");
    if (!gguf_str_eq(arch, "llama") && !gguf_str_eq(arch, "qwen2")
        && !gguf_str_eq(arch, "mistral"))
        return fail(err, err_len, "unsupported model architecture '%.*s' "
                    "(supported: llama, mistral, qwen2)",
                    (int) (arch.len > 32 ? 32 : arch.len), arch.p);
    memcpy(c->arch, arch.p, arch.len);
    c->arch[arch.len] = '\0';
    a = c->arch;
    if (arch_int(f, a, "embedding_length", true, 0, 1, big, &c->dim, err, err_len)
        || arch_int(f, a, "feed_forward_length", true, 0, 1, 4 * big, &c->hidden_dim, err, err_len)
        || arch_int(f, a, "block_count", true, 0, 1, 1024, &c->n_layers, err, err_len)
        || arch_int(f, a, "attention.head_count", true, 0, 1, 4096, &c->n_heads, err, err_len)
        || arch_int(f, a, "attention.head_count_kv", false, c->n_heads, 1,
                    c->n_heads, &c->n_kv_heads, err, err_len)
        || arch_int(f, a, "context_length", true, 0, 1, 1 << 24, &c->context_length, err, err_len))
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return fail(err, err_len, "%d attention heads are not a multiple of %d "
                    "KV heads", c->n_heads, c->n_kv_heads);
    if (arch_int(f, a, "attention.key_length", false, c->dim / c->n_heads, 1,
                 4096, &c->head_dim, err, err_len))
        return -1;
    if (c->head_dim % 2 != 0)
        return fail(err, err_len, "head dimension %d is odd", c->head_dim);
    if (arch_int(f, a, "rope.dimension_count", false, c->head_dim, 2,
                 c->head_dim, &c->n_rot, err, err_len))
        return -1;
    if (c->n_rot % 2 != 0)
        return fail(err, err_len, "rope.dimension_count %d is odd", c->n_rot);
    c->norm_eps = arch_float(f, a, "attention.layer_norm_rms_epsilon", 1e-5f);
    c->rope_theta = arch_float(f, a, "rope.freq_base", 10000.0f);
    c->rope_linear_scale = 1.0f;
    {
        char key[128];
        snprintf(key, sizeof(key), "%s.rope.scaling.type", a);
        if (gguf_get_str(f, key, &scaling) && gguf_str_eq(scaling, "linear"))
            c->rope_linear_scale = arch_float(f, a, "rope.scaling.factor", 1.0f);
        else if (gguf_get_str(f, key, &scaling) && !gguf_str_eq(scaling, "none"))
            return fail(err, err_len, "unsupported rope scaling '%.*s'",
                        (int) (scaling.len > 32 ? 32 : scaling.len), scaling.p);
    }
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0) || !(c->rope_linear_scale > 0))
        return fail(err, err_len, "bad norm epsilon, rope base or rope scale");
    c->rope_style = strcmp(a, "qwen2") == 0 ? ROPE_NEOX : ROPE_ADJACENT;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* tensors */

static const struct gguf_tensor *find(const struct gguf_file *f, int layer,
    const char *name)
{
    char full[96];

    if (layer >= 0)
        snprintf(full, sizeof(full), "blk.%d.%s", layer, name);
    else
        snprintf(full, sizeof(full), "%s", name);
    return gguf_tensor(f, full);
}

static int get_matrix(struct weight *w, const struct gguf_file *f, int layer,
    const char *name, int rows, int cols, char *err, int err_len)
{
    const struct gguf_tensor *t = find(f, layer, name);

    if (t == NULL)
        return fail(err, err_len, "model lacks tensor %s (layer %d)", name, layer);
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return fail(err, err_len, "tensor %.*s has shape [%lld, %lld]; "
                    "expected [%d, %d]", (int) t->name.len, t->name.p,
                    (long long) t->ne[0], (long long) t->ne[1], cols, rows);
    w->data = t->data;
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    return 0;
}

/* A vector of n floats; absent is fine when !required (NULL then). */
static int get_vector(const float **out, const struct gguf_file *f, int layer,
    const char *name, int n, bool required, char *err, int err_len)
{
    const struct gguf_tensor *t = find(f, layer, name);

    *out = NULL;
    if (t == NULL)
        return required ? fail(err, err_len, "model lacks tensor %s (layer %d)",
                               name, layer) : 0;
    if (t->type != GGML_F32 || t->ne[0] != n || t->ne[1] * t->ne[2] * t->ne[3] != 1)
        return fail(err, err_len, "tensor %.*s must be %d F32 values",
                    (int) t->name.len, t->name.p, n);
    *out = t->data;
    return 0;
}

int model_load(struct model *m, const struct gguf_file *f, char *err, int err_len)
{
    struct model_config *c = &m->cfg;
    const struct gguf_tensor *embd;
    int q_dim, kv_dim;

    memset(m, 0, sizeof(*m));
    if (read_config(c, f, err, err_len) != 0)
        return -1;
    embd = gguf_tensor(f, "token_embd.weight");
    if (embd == NULL || embd->n_dims != 2 || embd->ne[0] != c->dim)
        return fail(err, err_len, "model lacks a token_embd.weight of %d columns",
                    c->dim);
    c->vocab_size = (int) embd->ne[1];
    q_dim = c->n_heads * c->head_dim;
    kv_dim = c->n_kv_heads * c->head_dim;

    if (get_matrix(&m->token_embd, f, -1, "token_embd.weight", c->vocab_size,
                   c->dim, err, err_len)
        || get_vector(&m->output_norm, f, -1, "output_norm.weight", c->dim, true,
                      err, err_len))
        return -1;
    if (find(f, -1, "output.weight")) {
        if (get_matrix(&m->output, f, -1, "output.weight", c->vocab_size, c->dim,
                       err, err_len))
            return -1;
    } else {
        m->output = m->token_embd;      /* tied embeddings */
    }
    if (get_vector(&m->rope_freq_factors, f, -1, "rope_freqs.weight",
                   c->n_rot / 2, false, err, err_len))
        return -1;

    m->layers = calloc((size_t) c->n_layers, sizeof(*m->layers));
    if (m->layers == NULL)
        return fail(err, err_len, "out of memory");
    for (int l = 0; l < c->n_layers; l++) {
        struct layer_weights *w = &m->layers[l];
        bool bias = strcmp(c->arch, "qwen2") == 0;

        if (get_vector(&w->attn_norm, f, l, "attn_norm.weight", c->dim, true, err, err_len)
            || get_vector(&w->ffn_norm, f, l, "ffn_norm.weight", c->dim, true, err, err_len)
            || get_matrix(&w->wq, f, l, "attn_q.weight", q_dim, c->dim, err, err_len)
            || get_matrix(&w->wk, f, l, "attn_k.weight", kv_dim, c->dim, err, err_len)
            || get_matrix(&w->wv, f, l, "attn_v.weight", kv_dim, c->dim, err, err_len)
            || get_matrix(&w->wo, f, l, "attn_output.weight", c->dim, q_dim, err, err_len)
            || get_matrix(&w->w_gate, f, l, "ffn_gate.weight", c->hidden_dim, c->dim, err, err_len)
            || get_matrix(&w->w_up, f, l, "ffn_up.weight", c->hidden_dim, c->dim, err, err_len)
            || get_matrix(&w->w_down, f, l, "ffn_down.weight", c->dim, c->hidden_dim, err, err_len)
            || get_vector(&w->bq, f, l, "attn_q.bias", q_dim, bias, err, err_len)
            || get_vector(&w->bk, f, l, "attn_k.bias", kv_dim, bias, err, err_len)
            || get_vector(&w->bv, f, l, "attn_v.bias", kv_dim, bias, err, err_len)) {
            model_free(m);
            return -1;
        }
    }
    return 0;
}

void model_free(struct model *m)
{
    free(m->layers);
    m->layers = NULL;
}

static uint64_t weight_params(const struct weight *w)
{
    return (uint64_t) w->rows * (uint64_t) w->cols;
}

uint64_t model_param_count(const struct model *m)
{
    uint64_t n = weight_params(&m->token_embd);

    if (m->output.data != m->token_embd.data)
        n += weight_params(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const struct layer_weights *w = &m->layers[l];
        n += weight_params(&w->wq) + weight_params(&w->wk) + weight_params(&w->wv)
             + weight_params(&w->wo) + weight_params(&w->w_gate)
             + weight_params(&w->w_up) + weight_params(&w->w_down);
    }
    return n;
}
