/*
 * A request's claim on the gateway's prefix-key space.
 *
 * The gateway routes on keys it computes from the request body (common/
 * llmd_prefix.h: a chain of hashes over fixed-size blocks of the canonical
 * prompt bytes, common/llmd_canon.h); the worker caches KV blocks of tokens.
 * A claim links the two for one request, computed on the HTTP thread from
 * the canonical bytes the request's parse wrote:
 *
 *   gateway key i covers canonical bytes [0, (i+1) * B), taken to be the
 *   first ceil((i+1) * B / total_bytes * n_prompt) prompt tokens, i.e. the
 *   KV blocks [0, cover[i]).  Blocks past the prompt's last full block are
 *   never cached under the prompt's own hashes, so cover is capped there.
 *
 * Proportional mapping is exact for the byte-level tokenizer and close for
 * others; a key whose coverage is off by a block is only a routing hint.
 */

#ifndef LLMD_PREFIX_CLAIM_H
#define LLMD_PREFIX_CLAIM_H

#include <stddef.h>
#include <stdint.h>

struct prefix_claim {
    uint32_t    nkeys;
    uint64_t   *keys;       /* gateway keys, in chain order */
    uint32_t   *cover;      /* KV blocks key i depends on, from block 0 */
    uint32_t    nblocks;
    uint64_t   *blocks;     /* chained KV hashes of the full prompt blocks */
    double      bytes_per_token;    /* canonical bytes / prompt tokens */
};

/* NULL when the bytes make no key, the prompt fills no KV block, or
 * memory runs out: nothing to claim. */
struct prefix_claim *prefix_claim_new(const void *canon, size_t len,
    const int32_t *prompt, int n_prompt, size_t prefix_block,
    int block_tokens, size_t max_keys);
void prefix_claim_free(struct prefix_claim *c);

#endif
