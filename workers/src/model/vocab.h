/*
 * A model's vocabulary as a table: its pieces, their texts, scores and
 * types, the piece -> id index and the special ids.  The loader
 * (tokenizer_vocab.c) fills it; the encoders (tokenizer_spm.c,
 * tokenizer_bpe.c) only read it, through here.
 */

#ifndef LLMD_VOCAB_H
#define LLMD_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"

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

/* The id of a piece, or -1. */
int32_t vocab_find(const struct vocab *v, const char *piece, size_t len);

/* Builds the piece -> id index over piece[0..n); -1 when out of memory. */
int vocab_build_index(struct vocab *v);

#endif
