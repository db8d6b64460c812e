/*
 * Prefix keys: a chain of 64-bit hashes over fixed-size blocks of the
 * canonical prompt bytes.  Key i hashes block i with key i-1 as its seed,
 * so a single key names the whole prefix up to and including its block.
 *
 * The gateway and the workers both compute keys with this code, from the
 * same canonical bytes (see llmd_request.h), so they agree on what a
 * "cached prefix" is without sharing a tokenizer.
 *
 * Plain C: no allocation here; the caller owns every buffer.
 */

#ifndef LLMD_PREFIX_H
#define LLMD_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#define LLMD_PREFIX_BLOCK_DEFAULT   256
#define LLMD_PREFIX_BLOCK_MIN       16
#define LLMD_PREFIX_BLOCK_MAX       65536
#define LLMD_PREFIX_MAX_BLOCKS_DEFAULT  1024

/* Seed of key 0; bump it when the canonical form changes so that old and
 * new keys never collide across a mixed-version fleet. */
#define LLMD_PREFIX_SEED            0x6c6c6d6430303031ULL   /* "llmd0001" */

typedef struct {
    size_t          block_size;     /* bytes per block */
    size_t          max_blocks;     /* capacity of keys[] */
    unsigned char  *block;          /* block_size bytes of scratch */
    size_t          fill;           /* bytes held in block[] */
    uint64_t       *keys;           /* max_blocks keys */
    size_t          nkeys;          /* keys computed so far */
    uint64_t        total_bytes;    /* all canonical bytes seen, hashed or not */
} llmd_prefix_hasher_t;

/* block must hold block_size bytes, keys must hold max_blocks entries. */
void llmd_prefix_init(llmd_prefix_hasher_t *h, size_t block_size,
    size_t max_blocks, unsigned char *block, uint64_t *keys);

/* Feed canonical bytes; a full block produces the next key.  Bytes past
 * max_blocks full blocks are counted in total_bytes but not hashed. */
void llmd_prefix_update(llmd_prefix_hasher_t *h, const void *data, size_t len);

/* The key of one block given the previous key (0 for the first block uses
 * LLMD_PREFIX_SEED): the primitive, exposed for tests and for workers that
 * rebuild keys from stored bytes. */
uint64_t llmd_prefix_block_key(uint64_t prev, const void *block, size_t len);

/*
 * Keys are per model: the gateway's index holds key ^ llmd_prefix_model_salt
 * (model name), so two models never share an entry for the same bytes.
 * The salt of no model (len 0) is 0, which leaves keys as they are.
 */
#define LLMD_PREFIX_MODEL_SEED      0x6c6c6d644d4f444cULL   /* "llmdMODL" */

uint64_t llmd_prefix_model_salt(const void *model, size_t len);
void llmd_prefix_salt(uint64_t *keys, size_t nkeys, uint64_t salt);

/* Convenience: keys of a whole buffer at once; returns the number written. */
size_t llmd_prefix_keys(const void *data, size_t len, size_t block_size,
    uint64_t *keys, size_t max_keys);

#endif /* LLMD_PREFIX_H */
