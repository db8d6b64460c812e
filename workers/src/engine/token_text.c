#include "token_text.h"

#include <stdlib.h>

const char *model_token_text(const struct vocab *v, const struct worker_request *r,
    char *byte, int *len)
{
    int32_t tok = r->tokens[r->n_tokens - 1];
    int32_t prev = r->n_tokens >= 2 ? r->tokens[r->n_tokens - 2] : -1;

    if (v == NULL) {
        *byte = (char) (tok & 0xff);
        *len = 1;
        return byte;
    }
    return vocab_token_text(v, prev, tok, len);
}

bool model_token_ends(const struct vocab *v, int eos_token, int32_t tok)
{
    return tok == eos_token || (v != NULL && vocab_is_end(v, tok));
}

bool model_text_reserve(struct worker_request *r, int more)
{
    int cap = r->text_cap;
    char *p;

    if (r->text_len + more <= cap)
        return true;
    while (cap < r->text_len + more)
        cap = cap * 2 + 64;
    if ((p = realloc(r->text, (size_t) cap)) == NULL)
        return false;
    r->text = p;
    r->text_cap = cap;
    return true;
}

int utf8_whole_prefix(const char *text, int len, int from)
{
    /* look back at most 3 bytes for the lead byte of the last character */
    for (int i = len - 1; i >= 0 && i >= len - 4 && i >= from; i--) {
        unsigned char c = (unsigned char) text[i];
        int need;

        if ((c & 0xc0) == 0x80)
            continue;                   /* continuation byte */
        need = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
               : (c & 0xf8) == 0xf0 ? 4 : 1;
        return len - i >= need ? len : i;
    }
    return len;
}
