/*
 * Vocabulary loading from GGUF, special-token splitting, and decoding; the
 * table itself is vocab.c, the encoders tokenizer_spm.c and tokenizer_bpe.c.
 */

#include "tokenizer_vocab.h"
#include "tokenizer_bpe.h"
#include "tokenizer_spm.h"

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


static int load_pieces(struct vocab *v, const struct gguf_file *f,
    char *err, int err_len)
{
    const struct gguf_kv *tokens = gguf_get_array(f, "tokenizer.ggml.tokens", GGUF_STRING);
    const struct gguf_kv *scores = gguf_get_array(f, "tokenizer.ggml.scores", GGUF_F32);
    const struct gguf_kv *types = gguf_get_array(f, "tokenizer.ggml.token_type", GGUF_I32);
    const uint8_t *cur;
    size_t total = 0;
    char *a;

    if (tokens == NULL || tokens->count == 0 || tokens->count > (1u << 24))
        return fail(err, err_len, "model has no tokenizer.ggml.tokens");
    v->n = (int) tokens->count;
    if ((scores && scores->count != tokens->count) || (types && types->count != tokens->count))
        return fail(err, err_len, "tokenizer scores or token types do not "
                    "match the %d tokens", v->n);
    cur = tokens->data;
    for (int i = 0; i < v->n; i++)
        total += gguf_next_str(&cur).len + 1;

    v->piece = calloc((size_t) v->n, sizeof(*v->piece));
    v->text = calloc((size_t) v->n, sizeof(*v->text));
    v->piece_len = calloc((size_t) v->n, sizeof(int));
    v->text_len = calloc((size_t) v->n, sizeof(int));
    v->scores = calloc((size_t) v->n, sizeof(float));
    v->types = calloc((size_t) v->n, 1);
    v->arena = a = malloc(total * 2 + 1);
    if (!v->piece || !v->text || !v->piece_len || !v->text_len || !v->scores
        || !v->types || !a)
        return fail(err, err_len, "out of memory loading the vocabulary");
    cur = tokens->data;
    for (int i = 0; i < v->n; i++) {
        struct gguf_str s = gguf_next_str(&cur);
        int32_t type = TOKEN_NORMAL;

        if (s.len > 1 << 16)
            return fail(err, err_len, "token %d is %llu bytes long", i,
                        (unsigned long long) s.len);
        memcpy(a, s.p, s.len);
        a[s.len] = '\0';
        v->piece[i] = a;
        v->piece_len[i] = (int) s.len;
        a += s.len + 1;
        if (scores)
            memcpy(&v->scores[i], scores->data + 4 * (size_t) i, 4);
        if (types)
            memcpy(&type, types->data + 4 * (size_t) i, 4);
        v->types[i] = type >= 1 && type <= 6 ? (uint8_t) type : TOKEN_NORMAL;
    }
    return 0;
}

static int compute_texts(struct vocab *v)
{
    char *a = (char *) v->piece[v->n - 1] + v->piece_len[v->n - 1] + 1;

    for (int i = 0; i < v->n; i++) {
        int n = v->kind == VOCAB_SPM ? spm_piece_text(v, i, a) : bpe_piece_text(v, i, a);
        a[n] = '\0';
        v->text[i] = a;
        v->text_len[i] = n;
        a += n + 1;
    }
    return 0;
}

static int cmp_longer_first(const void *x, const void *y, void *arg)
{
    const struct vocab *v = arg;
    return v->piece_len[*(const int32_t *) y] - v->piece_len[*(const int32_t *) x];
}

static int token_id(const struct gguf_file *f, const char *key, int n, int32_t dflt)
{
    int64_t id;
    return gguf_get_int(f, key, &id) && id >= 0 && id < n ? (int32_t) id : dflt;
}

int vocab_load(struct vocab *v, const struct gguf_file *f, char *err, int err_len)
{
    struct gguf_str model;
    bool b;

    memset(v, 0, sizeof(*v));
    v->bos = v->eos = v->eot = v->unk = -1;
    if (!gguf_get_str(f, "tokenizer.ggml.model", &model))
        return fail(err, err_len, "model has no tokenizer (tokenizer.ggml.model)");
    if (gguf_str_eq(model, "llama"))
        v->kind = VOCAB_SPM;
    else if (gguf_str_eq(model, "gpt2"))
        v->kind = VOCAB_BPE;
    else
        return fail(err, err_len, "unsupported tokenizer '%.*s' (supported: "
                    "llama, gpt2)", (int) (model.len > 32 ? 32 : model.len), model.p);
    if (load_pieces(v, f, err, err_len) != 0 || vocab_build_index(v) != 0) {
        vocab_free(v);
        return err[0] ? -1 : fail(err, err_len, "out of memory");
    }

    v->bos = token_id(f, "tokenizer.ggml.bos_token_id", v->n, v->kind == VOCAB_SPM ? 1 : -1);
    v->eos = token_id(f, "tokenizer.ggml.eos_token_id", v->n, v->kind == VOCAB_SPM ? 2 : -1);
    v->eot = token_id(f, "tokenizer.ggml.eot_token_id", v->n, -1);
    v->unk = token_id(f, "tokenizer.ggml.unknown_token_id", v->n, v->kind == VOCAB_SPM ? 0 : -1);
    v->add_bos = v->kind == VOCAB_SPM;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b))
        v->add_bos = b;
    v->add_space_prefix = v->kind == VOCAB_SPM;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b))
        v->add_space_prefix = b;

    for (int i = 0; i < 256; i++)
        v->byte_token[i] = -1;
    if (v->kind == VOCAB_SPM) {
        for (int i = 0; i < v->n; i++) {
            int byte = spm_byte_piece(v->piece[i], v->piece_len[i]);
            if (byte >= 0 && v->byte_token[byte] < 0)
                v->byte_token[byte] = i;
        }
    } else if (bpe_setup(v, f, err, err_len) != 0) {
        vocab_free(v);
        return -1;
    }
    compute_texts(v);
    {
        struct gguf_str tmpl;
        if (gguf_get_str(f, "tokenizer.chat_template", &tmpl))
            v->chat = chat_template_detect(tmpl.p, (size_t) tmpl.len);
    }

    v->specials = malloc(sizeof(int32_t) * (size_t) v->n);
    if (v->specials == NULL) {
        vocab_free(v);
        return fail(err, err_len, "out of memory");
    }
    for (int i = 0; i < v->n; i++)
        if ((v->types[i] == TOKEN_CONTROL || v->types[i] == TOKEN_USER_DEFINED)
            && v->piece_len[i] > 0)
            v->specials[v->n_specials++] = i;
    qsort_r(v->specials, (size_t) v->n_specials, sizeof(int32_t), cmp_longer_first, v);
    return 0;
}

void vocab_free(struct vocab *v)
{
    if (v->kind == VOCAB_BPE)
        bpe_teardown(v);
    free(v->piece);
    free(v->text);
    free(v->piece_len);
    free(v->text_len);
    free(v->scores);
    free(v->types);
    free(v->arena);
    free(v->slots);
    free(v->merges);
    free(v->specials);
    memset(v, 0, sizeof(*v));
}

/* ------------------------------------------------------------------------ */

static int encode_fragment(const struct vocab *v, const char *text, size_t len,
    bool at_start, int32_t *out)
{
    if (len == 0)
        return 0;
    if (v->kind == VOCAB_SPM)
        return spm_encode_fragment(v, text, len, at_start && v->add_space_prefix, out);
    return bpe_encode_fragment(v, text, len, out);
}

/* The special token that starts at text[0], longest first, or -1. */
static int32_t special_at(const struct vocab *v, const char *text, size_t left)
{
    for (int i = 0; i < v->n_specials; i++) {
        int32_t id = v->specials[i];
        size_t n = (size_t) v->piece_len[id];
        if (n <= left && memcmp(text, v->piece[id], n) == 0)
            return id;
    }
    return -1;
}

int vocab_encode(const struct vocab *v, const char *text, size_t len,
    bool add_bos, bool parse_special, int32_t *out)
{
    int n = 0, k;
    size_t start = 0;

    if (add_bos && v->add_bos && v->bos >= 0)
        out[n++] = v->bos;
    if (parse_special && v->n_specials > 0) {
        for (size_t i = 0; i < len; i++) {
            int32_t id = special_at(v, text + i, len - i);
            if (id < 0)
                continue;
            if ((k = encode_fragment(v, text + start, i - start, start == 0, out + n)) < 0)
                return -1;
            n += k;
            out[n++] = id;
            i += (size_t) v->piece_len[id] - 1;
            start = i + 1;
        }
    }
    if ((k = encode_fragment(v, text + start, len - start, start == 0, out + n)) < 0)
        return -1;
    return n + k;
}

const char *vocab_token_text(const struct vocab *v, int32_t prev, int32_t tok,
    int *len)
{
    const char *t;

    if (tok < 0 || tok >= v->n) {
        *len = 0;
        return "";
    }
    t = v->text[tok];
    *len = v->text_len[tok];
    if (v->kind == VOCAB_SPM && prev == v->bos && v->add_space_prefix
        && *len > 0 && t[0] == ' ') {
        t++;
        (*len)--;
    }
    return t;
}

bool vocab_is_end(const struct vocab *v, int32_t tok)
{
    if (tok < 0 || tok >= v->n)
        return false;
    if (tok == v->eos || tok == v->eot)
        return true;
    /* end-of-turn markers of the common chat formats */
    if (v->types[tok] == TOKEN_CONTROL) {
        static const char *const ends[] = {
            "<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end|>",
            "<end_of_turn>", "<|eom_id|>",
        };
        for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
            if (strcmp(v->piece[tok], ends[i]) == 0)
                return true;
    }
    return false;
}
