/*
 * Byte-level BPE (GGUF tokenizer "gpt2": GPT-2, Llama-3, Qwen2).
 *
 * The text is first cut into words by the model's pre-tokenizer regex
 * (tokenizer.ggml.pre; PCRE2 supplies the Unicode classes), each word's
 * bytes are mapped to GPT-2's printable "byte alphabet", and adjacent
 * symbols are merged by merge rank, lowest first, as in llama.cpp.
 */

#include "tokenizer_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the pre-tokenizers of llama.cpp's llama-vocab.cpp */
static const char regex_llama3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char regex_qwen2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char regex_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

static const struct { const char *name; const char *regex; } pre_tokenizers[] = {
    { "llama-bpe", regex_llama3 }, { "llama3", regex_llama3 },
    { "llama-v3", regex_llama3 }, { "smaug-bpe", regex_llama3 },
    { "qwen2", regex_qwen2 }, { "deepseek-r1-qwen", regex_qwen2 },
    { "default", regex_gpt2 }, { "gpt-2", regex_gpt2 }, { "gpt2", regex_gpt2 },
};

/* GPT-2's byte alphabet: printable bytes stand for themselves, the others
 * for code points 256, 257, ... in byte order. */
static int byte_code_point(int b)
{
    int n = 0;

    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return b;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174))
            n++;
    return 256 + n;
}

static int put_utf8(char *out, int cp)
{
    if (cp < 0x80) {
        out[0] = (char) cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char) (0xc0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char) (0xe0 | (cp >> 12));
    out[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char) (0x80 | (cp & 0x3f));
    return 3;
}

/* the code point at p (up to n bytes); *len gets its length */
static int get_utf8(const unsigned char *p, int n, int *len)
{
    if (p[0] < 0x80 || n < 2) {
        *len = 1;
        return p[0];
    }
    if ((p[0] & 0xe0) == 0xc0) {
        *len = 2;
        return ((p[0] & 0x1f) << 6) | (p[1] & 0x3f);
    }
    if ((p[0] & 0xf0) == 0xe0 && n >= 3) {
        *len = 3;
        return ((p[0] & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    }
    *len = 1;
    return -1;
}

int bpe_piece_text(const struct vocab *v, int id, char *out)
{
    static int byte_of[324];
    const unsigned char *p = (const unsigned char *) v->piece[id];
    int len = v->piece_len[id], n = 0;

    if (v->types[id] == TOKEN_CONTROL || v->types[id] == TOKEN_UNUSED)
        return 0;
    if (v->types[id] == TOKEN_USER_DEFINED) {
        memcpy(out, p, (size_t) len);
        return len;
    }
    if (byte_of[0] == 0)
        for (int b = 255; b >= 0; b--)
            byte_of[byte_code_point(b)] = b + 1;    /* 0 = not a byte */
    for (int i = 0; i < len; ) {
        int l, cp = get_utf8(p + i, len - i, &l);
        if (cp >= 0 && cp < 324 && byte_of[cp]) {
            out[n++] = (char) (byte_of[cp] - 1);
        } else {
            memcpy(out + n, p + i, (size_t) l);
            n += l;
        }
        i += l;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* merges: (left id, right id) -> rank and result, open addressing */

static uint32_t pair_hash(uint64_t key, uint32_t mask)
{
    return (uint32_t) ((key * 0x9e3779b97f4a7c15ULL) >> 32) & mask;
}

static const struct merge_slot *merge_find(const struct vocab *v, int32_t l, int32_t r)
{
    uint64_t key = ((uint64_t) (uint32_t) l << 32 | (uint32_t) r) + 1;

    for (uint32_t i = pair_hash(key, v->merge_mask);; i = (i + 1) & v->merge_mask) {
        if (v->merges[i].pair == key)
            return &v->merges[i];
        if (v->merges[i].pair == 0)
            return NULL;
    }
}

static int load_merges(struct vocab *v, const struct gguf_file *f)
{
    const struct gguf_kv *m = gguf_get_array(f, "tokenizer.ggml.merges", GGUF_STRING);
    const uint8_t *cur;
    uint32_t size = 16;
    char buf[512];

    while (m && size < m->count * 2)
        size *= 2;
    v->merges = calloc(size, sizeof(*v->merges));
    if (v->merges == NULL)
        return -1;
    v->merge_mask = size - 1;
    if (m == NULL)
        return 0;
    cur = m->data;
    for (uint64_t rank = 0; rank < m->count; rank++) {
        struct gguf_str s = gguf_next_str(&cur);
        const char *space = s.len > 1 ? memchr(s.p + 1, ' ', s.len - 1) : NULL;
        size_t ll, rl;
        int32_t l, r, res;
        uint64_t key;
        uint32_t i;

        if (space == NULL || s.len >= sizeof(buf))
            continue;
        ll = (size_t) (space - s.p);
        rl = s.len - ll - 1;
        memcpy(buf, s.p, ll);
        memcpy(buf + ll, space + 1, rl);
        l = vocab_find(v, s.p, ll);
        r = vocab_find(v, space + 1, rl);
        res = vocab_find(v, buf, ll + rl);
        if (l < 0 || r < 0 || res < 0 || merge_find(v, l, r))
            continue;
        key = ((uint64_t) (uint32_t) l << 32 | (uint32_t) r) + 1;
        for (i = pair_hash(key, v->merge_mask); v->merges[i].pair; i = (i + 1) & v->merge_mask)
            ;
        v->merges[i] = (struct merge_slot) { key, (int32_t) rank, res };
    }
    return 0;
}

int bpe_setup(struct vocab *v, const struct gguf_file *f, char *err, int err_len)
{
    struct gguf_str pre = { "default", 7 };
    const char *regex = NULL;
    int code;
    PCRE2_SIZE where;

    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    for (size_t i = 0; i < sizeof(pre_tokenizers) / sizeof(pre_tokenizers[0]); i++)
        if (gguf_str_eq(pre, pre_tokenizers[i].name))
            regex = pre_tokenizers[i].regex;
    if (regex == NULL) {
        snprintf(err, (size_t) err_len, "unsupported pre-tokenizer '%.*s' "
                 "(supported: llama-bpe, qwen2, gpt-2)",
                 (int) (pre.len > 32 ? 32 : pre.len), pre.p);
        return -1;
    }
    snprintf(v->pre_name, sizeof(v->pre_name), "%.*s", (int) pre.len, pre.p);
    v->pre_regex = pcre2_compile((PCRE2_SPTR) regex, PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF,
                                 &code, &where, NULL);
    if (v->pre_regex == NULL) {
        snprintf(err, (size_t) err_len, "pre-tokenizer regex does not compile "
                 "(PCRE2 error %d at %zu)", code, (size_t) where);
        return -1;
    }
    pcre2_jit_compile(v->pre_regex, PCRE2_JIT_COMPLETE);   /* faster if available */
    for (int b = 0; b < 256; b++) {
        char s[4];
        int n = put_utf8(s, byte_code_point(b));
        v->byte_token[b] = vocab_find(v, s, (size_t) n);
    }
    if (load_merges(v, f) != 0) {
        snprintf(err, (size_t) err_len, "out of memory loading merges");
        return -1;
    }
    return 0;
}

void bpe_teardown(struct vocab *v)
{
    pcre2_code_free(v->pre_regex);
    v->pre_regex = NULL;
}

/* ------------------------------------------------------------------------ */

static int encode_word(const struct vocab *v, const unsigned char *p, int n,
    int32_t *out)
{
    char mapped[1024];
    int32_t *sym = out;     /* symbols are merged in place in out */
    int n_sym = 0, m = 0;

    if (n > 0 && n <= (int) sizeof(mapped) / 2) {
        for (int i = 0; i < n; i++)
            m += put_utf8(mapped + m, byte_code_point(p[i]));
        int32_t whole = vocab_find(v, mapped, (size_t) m);
        if (whole >= 0) {
            out[0] = whole;
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        int32_t id = v->byte_token[p[i]];
        if (id >= 0)
            sym[n_sym++] = id;
        else if (v->unk >= 0)
            sym[n_sym++] = v->unk;
    }
    for (;;) {
        const struct merge_slot *best = NULL;
        int at = -1;

        for (int i = 0; i + 1 < n_sym; i++) {
            const struct merge_slot *s = merge_find(v, sym[i], sym[i + 1]);
            if (s && (best == NULL || s->rank < best->rank)) {
                best = s;
                at = i;
            }
        }
        if (best == NULL)
            break;
        sym[at] = best->result;
        memmove(sym + at + 1, sym + at + 2, sizeof(int32_t) * (size_t) (n_sym - at - 2));
        n_sym--;
    }
    return n_sym;
}

int bpe_encode_fragment(const struct vocab *v, const char *text, size_t len,
    int32_t *out)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    const unsigned char *t = (const unsigned char *) text;
    size_t pos = 0;
    int n = 0;

    if (md == NULL)
        return -1;
    while (pos < len) {
        int rc = pcre2_match(v->pre_regex, t, len, pos, 0, md, NULL);
        PCRE2_SIZE *ov;
        size_t start, end;

        if (rc < 0) {
            /* no further match (invalid UTF-8 tail): one word of the rest */
            n += encode_word(v, t + pos, (int) (len - pos), out + n);
            break;
        }
        ov = pcre2_get_ovector_pointer(md);
        start = ov[0];
        end = ov[1];
        if (start > pos)            /* bytes no alternative matched */
            n += encode_word(v, t + pos, (int) (start - pos), out + n);
        if (end == start)
            end = start + 1;
        n += encode_word(v, t + start, (int) (end - start), out + n);
        pos = end;
    }
    pcre2_match_data_free(md);
    return n;
}
