/*
 * The generator's vocabularies: a few hundred pieces built from common
 * English words, in the formats of the three tokenizer families.
 */

#include "model_gen_vocab.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const words[] = {
    "the", "a", "and", "to", "was", "he", "she", "it", "of", "in", "his",
    "her", "they", "said", "day", "one", "with", "you", "that", "on", "for",
    "big", "little", "girl", "boy", "time", "once", "upon", "there", "named",
    "Lily", "Tom", "Ben", "play", "park", "ball", "happy", "sad", "friend",
    "mom", "dad", "saw", "went", "wanted", "loved", "very", "cat", "dog",
    "tree", "sun", "red", "blue", "good", "help", "find", "look", "house",
    "is", "are", "be", "have", "had", "not", "what", "do", "can", "go", "see",
    "hello", "world", "how", "who", "why", "yes", "no", "I", "we", "me",
    "Once", "The", "She", "He", "They", "One", "It",
};

struct list {
    char  **s;
    int     n, cap;
};

static int list_find(const struct list *l, const char *s)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->s[i], s) == 0)
            return i;
    return -1;
}

static int list_add(struct list *l, const char *s)
{
    if (list_find(l, s) >= 0)
        return 0;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        char **p = realloc(l->s, sizeof(char *) * (size_t) cap);
        if (p == NULL)
            return -1;
        l->s = p;
        l->cap = cap;
    }
    if ((l->s[l->n] = strdup(s)) == NULL)
        return -1;
    l->n++;
    return 0;
}

void gen_vocab_free(struct gen_vocab *v)
{
    for (int i = 0; i < v->n; i++)
        free(v->tokens[i]);
    for (int i = 0; i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tokens);
    free(v->merges);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof(*v));
}

static int finish(struct gen_vocab *v, struct list *tokens)
{
    v->tokens = tokens->s;
    v->n = tokens->n;
    v->scores = calloc((size_t) v->n, sizeof(float));
    v->types = calloc((size_t) v->n, sizeof(int32_t));
    return v->scores && v->types ? 0 : -1;
}

/* ------------------------------------------------------------------------ */

static int build_spm(struct gen_vocab *v)
{
    struct list t = { 0 };
    char buf[64];
    int rc = 0, first_piece;
    static const char chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;";

    rc |= list_add(&t, "<unk>");
    rc |= list_add(&t, "<s>");
    rc |= list_add(&t, "</s>");
    for (int b = 0; b < 256; b++) {
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        rc |= list_add(&t, buf);
    }
    first_piece = t.n;
    rc |= list_add(&t, "\xe2\x96\x81");
    for (const char *c = chars; *c; c++) {
        char s[2] = { *c, 0 };
        rc |= list_add(&t, s);
    }
    /* every prefix of "▁word", so merges can grow each word left to right */
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        size_t len = strlen(words[w]);
        for (size_t k = 1; k <= len; k++) {
            snprintf(buf, sizeof(buf), "\xe2\x96\x81%.*s", (int) k, words[w]);
            rc |= list_add(&t, buf);
        }
    }
    if (rc || finish(v, &t))
        return -1;
    v->types[0] = 2;
    v->types[1] = v->types[2] = 3;
    for (int i = 3; i < first_piece; i++)
        v->types[i] = 6;
    for (int i = first_piece; i < v->n; i++) {
        v->types[i] = 1;
        v->scores[i] = (float) -(i - first_piece);
    }
    v->bos = 1;
    v->eos = 2;
    return 0;
}

/* GPT-2 byte alphabet (as in tokenizer_bpe.c) */
static int byte_cp(int b)
{
    int n = 0;

    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return b;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174))
            n++;
    return 256 + n;
}

static int utf8(char *out, int cp)
{
    if (cp < 0x80) {
        out[0] = (char) cp;
        return 1;
    }
    out[0] = (char) (0xc0 | (cp >> 6));
    out[1] = (char) (0x80 | (cp & 0x3f));
    return 2;
}

static int build_bpe(struct gen_vocab *v, bool llama3)
{
    struct list t = { 0 }, m = { 0 };
    char buf[128], merge[256];
    int rc = 0, n_normal;

    for (int b = 0; b < 256; b++) {
        int n = utf8(buf, byte_cp(b));
        buf[n] = '\0';
        rc |= list_add(&t, buf);
    }
    /* merges that build " word" and "word" one character at a time */
    for (int sp = 0; sp < 2; sp++) {
        for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
            char mapped[128];
            int ends[64], n_chars = 0, len = 0;
            const char *word = words[w];

            if (sp)
                ends[n_chars++] = len += utf8(mapped + len, byte_cp(' '));
            for (size_t k = 0; word[k]; k++)
                ends[n_chars++] = len += utf8(mapped + len, byte_cp((unsigned char) word[k]));
            for (int k = 1; k < n_chars; k++) {
                /* left = the first k characters, right = character k */
                snprintf(merge, sizeof(merge), "%.*s %.*s", ends[k - 1], mapped,
                         ends[k] - ends[k - 1], mapped + ends[k - 1]);
                snprintf(buf, sizeof(buf), "%.*s", ends[k], mapped);
                if (list_find(&t, buf) < 0) {
                    rc |= list_add(&m, merge);
                    rc |= list_add(&t, buf);
                }
            }
        }
    }
    n_normal = t.n;
    if (llama3) {
        rc |= list_add(&t, "<|begin_of_text|>");
        rc |= list_add(&t, "<|end_of_text|>");
        rc |= list_add(&t, "<|start_header_id|>");
        rc |= list_add(&t, "<|end_header_id|>");
        rc |= list_add(&t, "<|eot_id|>");
    } else {
        rc |= list_add(&t, "<|endoftext|>");
        rc |= list_add(&t, "<|im_start|>");
        rc |= list_add(&t, "<|im_end|>");
    }
    if (rc || finish(v, &t)) {
        for (int i = 0; i < m.n; i++)
            free(m.s[i]);
        free(m.s);
        return -1;
    }
    v->merges = m.s;
    v->n_merges = m.n;
    for (int i = 0; i < v->n; i++)
        v->types[i] = i < n_normal ? 1 : 3;
    v->bos = llama3 ? n_normal : -1;
    v->eos = n_normal + (llama3 ? 1 : 0);
    return 0;
}

int gen_vocab_build(struct gen_vocab *v, const char *kind)
{
    memset(v, 0, sizeof(*v));
    if (strcmp(kind, "spm") == 0)
        return build_spm(v);
    if (strcmp(kind, "qwen2") == 0 || strcmp(kind, "llama3") == 0)
        return build_bpe(v, strcmp(kind, "llama3") == 0);
    return -1;
}
