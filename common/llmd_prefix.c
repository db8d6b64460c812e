/*
 * Chained block hashing of canonical prompt bytes (see llmd_prefix.h).
 */

#include <string.h>

#define XXH_INLINE_ALL          /* lets the compiler specialise xxh3 here */
#include <xxhash.h>

#include "llmd_prefix.h"


void
llmd_prefix_init(llmd_prefix_hasher_t *h, size_t block_size,
    size_t max_blocks, unsigned char *block, uint64_t *keys)
{
    h->block_size = block_size;
    h->max_blocks = max_blocks;
    h->block = block;
    h->fill = 0;
    h->keys = keys;
    h->nkeys = 0;
    h->total_bytes = 0;
}


uint64_t
llmd_prefix_block_key(uint64_t prev, const void *block, size_t len)
{
    return XXH3_64bits_withSeed(block, len, prev);
}


static void
llmd_prefix_emit(llmd_prefix_hasher_t *h, const unsigned char *block)
{
    uint64_t  prev;

    prev = h->nkeys ? h->keys[h->nkeys - 1] : LLMD_PREFIX_SEED;
    h->keys[h->nkeys++] = llmd_prefix_block_key(prev, block, h->block_size);
}


void
llmd_prefix_update(llmd_prefix_hasher_t *h, const void *data, size_t len)
{
    size_t                n;
    const unsigned char  *p = data;

    h->total_bytes += len;

    while (len && h->nkeys < h->max_blocks) {

        /* whole blocks straight from the input: no copy on the fast path */
        if (h->fill == 0 && len >= h->block_size) {
            llmd_prefix_emit(h, p);
            p += h->block_size;
            len -= h->block_size;
            continue;
        }

        n = h->block_size - h->fill;
        if (n > len) {
            n = len;
        }

        memcpy(h->block + h->fill, p, n);
        h->fill += n;
        p += n;
        len -= n;

        if (h->fill == h->block_size) {
            llmd_prefix_emit(h, h->block);
            h->fill = 0;
        }
    }
}


size_t
llmd_prefix_keys(const void *data, size_t len, size_t block_size,
    uint64_t *keys, size_t max_keys)
{
    size_t                i, n;
    uint64_t              prev = LLMD_PREFIX_SEED;
    const unsigned char  *p = data;

    n = len / block_size;
    if (n > max_keys) {
        n = max_keys;
    }

    for (i = 0; i < n; i++) {
        prev = llmd_prefix_block_key(prev, p + i * block_size, block_size);
        keys[i] = prev;
    }

    return n;
}


uint64_t
llmd_prefix_model_salt(const void *model, size_t len)
{
    uint64_t  h;

    if (len == 0) {
        return 0;
    }

    h = XXH3_64bits_withSeed(model, len, LLMD_PREFIX_MODEL_SEED);

    return h ? h : 1;       /* 0 means "no model" */
}


void
llmd_prefix_salt(uint64_t *keys, size_t nkeys, uint64_t salt)
{
    size_t  i;

    for (i = 0; salt && i < nkeys; i++) {
        keys[i] ^= salt;
    }
}
