/*
 * SentencePiece-style BPE (GGUF tokenizer "llama"): spaces become U+2581,
 * the text is split into code points, and the adjacent pair whose
 * concatenation is a token with the highest score is merged until none is
 * left (leftmost first on ties).  A symbol that is not a token falls back to
 * its <0xXX> byte tokens.  Same result as llama.cpp's llm_tokenizer_spm.
 */

#include "tokenizer_spm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct symbol {
    int     start;      /* byte range in the normalized text */
    int     len;
    int     next;       /* -1 at the end */
    int32_t pair;       /* token of this symbol + the next one, or -1 */
};

static int utf8_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) return 2;
    if ((c & 0xf0) == 0xe0) return 3;
    if ((c & 0xf8) == 0xf0) return 4;
    return 1;       /* a stray continuation byte stands alone */
}

static void update_pair(const struct vocab *v, const char *buf,
    struct symbol *s, int i)
{
    int j = s[i].next;

    s[i].pair = j < 0 ? -1
                : vocab_find(v, buf + s[i].start, (size_t) (s[i].len + s[j].len));
}

static int emit(const struct vocab *v, const char *p, int len, int32_t *out)
{
    int32_t id = vocab_find(v, p, (size_t) len);
    int n = 0;

    if (id >= 0) {
        out[0] = id;
        return 1;
    }
    for (int i = 0; i < len; i++) {
        int32_t b = v->byte_token[(unsigned char) p[i]];
        if (b >= 0)
            out[n++] = b;
        else if (v->unk >= 0)
            out[n++] = v->unk;
    }
    return n;
}

int spm_encode_fragment(const struct vocab *v, const char *text, size_t len,
    bool space_prefix, int32_t *out)
{
    char *buf = malloc(len * 3 + 4);
    struct symbol *s = malloc(sizeof(*s) * (len + 1));
    int n_buf = 0, n_sym = 0, n_out = 0;

    if (buf == NULL || s == NULL) {
        free(buf);
        free(s);
        return -1;
    }
    if (space_prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        n_buf = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n_buf, "\xe2\x96\x81", 3);
            n_buf += 3;
        } else {
            buf[n_buf++] = text[i];
        }
    }
    for (int i = 0; i < n_buf; ) {
        int n = utf8_len((unsigned char) buf[i]);
        if (n > n_buf - i)
            n = n_buf - i;
        s[n_sym] = (struct symbol) { i, n, n_sym + 1, -1 };
        n_sym++;
        i += n;
    }
    if (n_sym > 0)
        s[n_sym - 1].next = -1;
    for (int i = 0; i < n_sym; i++)
        update_pair(v, buf, s, i);

    for (;;) {
        int best = -1;
        float best_score = 0;

        for (int i = 0; i >= 0 && i < n_sym; i = s[i].next)
            if (s[i].pair >= 0 && (best < 0 || v->scores[s[i].pair] > best_score)) {
                best = i;
                best_score = v->scores[s[i].pair];
            }
        if (best < 0)
            break;
        {
            int j = s[best].next, prev = -1;
            s[best].len += s[j].len;
            s[best].next = s[j].next;
            update_pair(v, buf, s, best);
            /* the symbol before `best` now pairs with a longer one */
            for (int i = 0; i >= 0 && i != best; i = s[i].next)
                prev = i;
            if (prev >= 0)
                update_pair(v, buf, s, prev);
        }
    }
    for (int i = 0; n_sym > 0 && i >= 0; i = s[i].next)
        n_out += emit(v, buf + s[i].start, s[i].len, out + n_out);
    free(buf);
    free(s);
    return n_out;
}

/* "<0xAB>" -> 0xAB, or -1 */
int spm_byte_piece(const char *p, int len)
{
    unsigned x;

    if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>'
        || sscanf(p + 3, "%2x", &x) != 1)
        return -1;
    return (int) x;
}

/* SentencePiece text of a piece: U+2581 -> ' ', byte pieces -> the byte */
int spm_piece_text(const struct vocab *v, int id, char *out)
{
    const char *p = v->piece[id];
    int len = v->piece_len[id], n = 0;

    if (v->types[id] == TOKEN_CONTROL || v->types[id] == TOKEN_UNUSED)
        return 0;
    if (v->types[id] == TOKEN_BYTE) {
        int b = spm_byte_piece(p, len);
        if (b >= 0) {
            out[0] = (char) b;
            return 1;
        }
    }
    for (int i = 0; i < len; i++) {
        if (i + 2 < len && (unsigned char) p[i] == 0xe2
            && (unsigned char) p[i + 1] == 0x96 && (unsigned char) p[i + 2] == 0x81) {
            out[n++] = ' ';
            i += 2;
        } else {
            out[n++] = p[i];
        }
    }
    return n;
}
