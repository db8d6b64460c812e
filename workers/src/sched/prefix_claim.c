/*
 * Prefix claims: see prefix_claim.h.
 */

#include "prefix_claim.h"

#include <stdlib.h>

#include "kv_blocks.h"
#include "llmd_prefix.h"

void prefix_claim_free(struct prefix_claim *c)
{
    if (c == NULL)
        return;
    free(c->keys);
    free(c->cover);
    free(c->blocks);
    free(c);
}

struct prefix_claim *prefix_claim_new(const void *canon, size_t len,
    const int32_t *prompt, int n_prompt, size_t prefix_block,
    int block_tokens, size_t max_keys)
{
    struct prefix_claim *c;
    uint64_t total = len, parent = KV_HASH_SEED;
    size_t nkeys;

    if (n_prompt < block_tokens || block_tokens < 1 || max_keys == 0)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->keys = malloc(sizeof(uint64_t) * max_keys)) == NULL)
        goto fail;
    nkeys = llmd_prefix_keys(canon, len, prefix_block, c->keys, max_keys);
    if (nkeys == 0 || total == 0)
        goto fail;

    /* claims live as long as their request, and most bodies have a few
     * keys, not max_keys */
    if (nkeys < max_keys) {
        uint64_t *k = realloc(c->keys, sizeof(uint64_t) * nkeys);
        if (k)
            c->keys = k;
    }
    c->nkeys = (uint32_t) nkeys;
    c->bytes_per_token = (double) total / n_prompt;
    c->nblocks = (uint32_t) (n_prompt / block_tokens);
    c->cover = malloc(sizeof(uint32_t) * nkeys);
    c->blocks = malloc(sizeof(uint64_t) * c->nblocks);
    if (c->cover == NULL || c->blocks == NULL)
        goto fail;
    for (uint32_t i = 0; i < c->nblocks; i++) {
        c->blocks[i] = kv_block_hash(parent, prompt + (size_t) i * block_tokens,
                                     block_tokens);
        parent = c->blocks[i];
    }
    for (size_t i = 0; i < nkeys; i++) {
        uint64_t bytes = (uint64_t) (i + 1) * prefix_block;
        uint64_t tokens = (bytes * (uint64_t) n_prompt + total - 1) / total;
        uint64_t blocks = (tokens + (uint64_t) block_tokens - 1)
                          / (uint64_t) block_tokens;
        c->cover[i] = (uint32_t) (blocks < c->nblocks ? blocks : c->nblocks);
    }
    return c;

fail:
    prefix_claim_free(c);
    return NULL;
}
