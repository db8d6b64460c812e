/*
 * A model's own tokenizer, read from GGUF metadata (tokenizer.ggml.*):
 *   "llama": SentencePiece-style BPE over code points, merged by score,
 *            with <0xXX> byte fallback (tokenizer_spm.c);
 *   "gpt2":  byte-level BPE merged by rank after a pre-tokenizer regex
 *            (Llama-3, Qwen2, GPT-2; tokenizer_bpe.c).
 * Control and user-defined tokens written in the text (chat markers) are
 * split out first and become their own ids.
 */

#ifndef LLMD_TOKENIZER_VOCAB_H
#define LLMD_TOKENIZER_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "gguf.h"

enum vocab_kind { VOCAB_SPM, VOCAB_BPE };

enum token_type {
    TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6
};

struct merge_slot {
    uint64_t    pair;       /* left id << 32 | right id; 0 = empty */
    int32_t     rank;
    int32_t     result;
};

struct vocab {
    enum vocab_kind kind;
    int             n;
    const char    **piece;      /* the token as stored (NUL-terminated) */
    int            *piece_len;
    const char    **text;       /* the bytes it decodes to */
    int            *text_len;
    float          *scores;
    uint8_t        *types;
    char           *arena;      /* storage behind piece[] and text[] */

    int32_t        *slots;      /* piece -> id, open addressing */
    uint32_t        slot_mask;
    struct merge_slot *merges;  /* BPE: (left, right) -> rank, result */
    uint32_t        merge_mask;

    int32_t         byte_token[256];    /* id that stands for a raw byte */
    int32_t        *specials;   /* control/user tokens, longest first */
    int             n_specials;

    int32_t         bos, eos, eot, unk;
    bool            add_bos;
    bool            add_space_prefix;
    void           *pre_regex;  /* pcre2_code *, BPE only */
    enum chat_family chat;      /* from tokenizer.chat_template */
    char            pre_name[32];
};

int vocab_load(struct vocab *v, const struct gguf_file *f, char *err, int err_len);
void vocab_free(struct vocab *v);

/* The id of a piece, or -1. */
int32_t vocab_find(const struct vocab *v, const char *piece, size_t len);

/* Encode text.  out must have room for 3 * len + 3 ids.  add_bos prepends BOS
 * when the model wants one; parse_special turns control-token text into
 * those tokens.  Returns the count, or -1 (invalid regex match, OOM). */
int vocab_encode(const struct vocab *v, const char *text, size_t len,
    bool add_bos, bool parse_special, int32_t *out);

/* The bytes a token decodes to, given the token before it (SentencePiece
 * drops the leading space of the first piece after BOS).  Control tokens
 * decode to nothing. */
const char *vocab_token_text(const struct vocab *v, int32_t prev, int32_t tok,
    int *len);

/* Whether generation ends at this token (EOS, end-of-turn markers). */
bool vocab_is_end(const struct vocab *v, int32_t tok);

/* internal: the two encoders on a fragment without specials */
int spm_encode_fragment(const struct vocab *v, const char *text, size_t len,
    bool space_prefix, int32_t *out);
int bpe_encode_fragment(const struct vocab *v, const char *text, size_t len,
    int32_t *out);
int bpe_setup(struct vocab *v, const struct gguf_file *f, char *err, int err_len);
void bpe_teardown(struct vocab *v);

#endif
