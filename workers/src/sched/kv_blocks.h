/*
 * KV block manager: the paged KV cache shared by every backend.
 *
 * The cache is a pool of fixed-size blocks, each holding the keys and values
 * of block_tokens consecutive tokens for every layer.  A sequence owns a
 * block table (a list of block ids); blocks are reference-counted so that
 * sequences with a common prefix share the blocks of that prefix.
 *
 * A block becomes reusable ("cached") once it is full: it is then named by a
 * chained hash, hash(i) = xxh3(tokens of block i, seed = hash(i-1)), so one
 * hash names the whole prefix up to and including its block, and a block is
 * reused only if every block before it matched too.  Cached blocks that no
 * sequence references stay in an LRU list and are evicted, oldest first, only
 * when a fresh block is needed and the free list is empty.
 *
 * Memory layout of one block (so that a run of blocks can be shipped to
 * another worker as is):   [layer][2 (K, V)][block_tokens][kv_heads][head_dim]
 *
 * The pool starts as host memory; a backend that keeps the pages elsewhere
 * (the cuda backend: GPU memory) hands its own pool over with
 * kv_adopt_pool(), and kv->pool is then a device pointer.  Only backends
 * touch page bytes, so nothing else may dereference kv->pool or kv_slot().
 *
 * Not thread-safe: the engine thread is the only user.
 */

#ifndef LLMD_KV_BLOCKS_H
#define LLMD_KV_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#define KV_NO_BLOCK     (-1)
#define KV_HASH_SEED    0x6c6c6d646b763031ULL   /* "llmdkv01": hash of "no parent" */

struct kv_geometry {
    int     num_blocks;
    int     block_tokens;
    int     num_layers;
    int     kv_heads;
    int     head_dim;
    int     dtype_bytes;
};

enum kv_event_kind {
    KV_EVENT_STORED,        /* a full block became reusable under `hash` */
    KV_EVENT_REMOVED        /* the block named `hash` was evicted */
};

struct kv_event {
    enum kv_event_kind  kind;
    int32_t             block;
    uint64_t            hash;
    uint64_t            parent_hash;    /* STORED only; KV_HASH_SEED for the first */
    const int32_t      *tokens;         /* STORED only: the block's token ids */
    int                 n_tokens;
};

typedef void (*kv_event_fn)(void *arg, const struct kv_event *ev);

struct kv_block {
    int32_t     ref;            /* sequences using the block */
    int32_t     lru_prev;       /* links in the evictable LRU list */
    int32_t     lru_next;
    int32_t     hash_next;      /* chain in the hash table */
    uint64_t    hash;           /* valid while cached */
    uint8_t     cached;         /* full and registered in the hash table */
};

struct kv_stats {
    uint64_t    evictions;
    uint64_t    allocations;
};

struct kv_manager {
    struct kv_geometry  geo;
    size_t              block_bytes;
    size_t              layer_bytes;
    uint8_t            *pool;           /* num_blocks * block_bytes */
    void              (*pool_release)(void *pool);  /* NULL: ours (host) */

    struct kv_block    *blocks;
    int32_t            *free_stack;     /* blocks with ref 0 that hold nothing reusable */
    int                 n_free;
    int32_t             lru_head;       /* oldest evictable (cached, ref 0) block */
    int32_t             lru_tail;
    int                 n_evictable;
    int                 n_used;         /* blocks with ref > 0 */

    int32_t            *buckets;        /* hash table heads */
    uint32_t            bucket_mask;

    kv_event_fn         on_event;
    void               *event_arg;
    struct kv_stats     stats;
};

/* Returns 0, or -1 when the geometry is invalid or memory runs out. */
int kv_init(struct kv_manager *kv, const struct kv_geometry *geo);
void kv_free(struct kv_manager *kv);
void kv_set_event_cb(struct kv_manager *kv, kv_event_fn fn, void *arg);

/* Replace the host pool by `pool` (num_blocks * block_bytes, e.g. GPU
 * memory), which kv_free() will give back with release(pool).  Call before
 * the first page is written: the old pages are dropped, not copied. */
void kv_adopt_pool(struct kv_manager *kv, void *pool, void (*release)(void *pool));

/* Blocks that an allocation can still obtain (free + evictable). */
static inline int kv_available(const struct kv_manager *kv)
{
    return kv->n_free + kv->n_evictable;
}

/* Fraction of blocks in use by sequences (vLLM's kv_cache_usage_perc). */
double kv_usage(const struct kv_manager *kv);

/* A fresh block with ref 1 (evicting the LRU cached block when needed),
 * or KV_NO_BLOCK when every block is referenced. */
int32_t kv_alloc(struct kv_manager *kv);

/* Take one more reference on a block (a prefix hit). */
void kv_acquire(struct kv_manager *kv, int32_t block);

/* Drop one reference; at zero the block becomes evictable if cached, free
 * otherwise. */
void kv_release(struct kv_manager *kv, int32_t block);

/* The cached block named by hash, or KV_NO_BLOCK. */
int32_t kv_lookup(const struct kv_manager *kv, uint64_t hash);

/* Register a full block under its chained hash.  If another block already
 * holds the same prefix the block stays private (it is freed, not cached,
 * when released).  Emits KV_EVENT_STORED when registered. */
void kv_commit(struct kv_manager *kv, int32_t block, uint64_t hash,
    uint64_t parent_hash, const int32_t *tokens);

/* hash(i) from hash(i-1) and the block's tokens. */
uint64_t kv_block_hash(uint64_t parent_hash, const int32_t *tokens, int n);

/* Number of leading full blocks of tokens[0..n) found in the cache, computing
 * their hashes into hashes[] (room for n / block_tokens entries).  The last
 * token is never matched: a sequence always computes at least one token. */
int kv_match_prefix(const struct kv_manager *kv, const int32_t *tokens, int n,
    uint64_t *hashes, int32_t *blocks);

/* The K (kv = 0) or V (kv = 1) rows of one token slot in one layer. */
static inline uint8_t *kv_slot(const struct kv_manager *kv, int32_t block,
    int layer, int k_or_v, int slot)
{
    size_t row = (size_t) kv->geo.kv_heads * kv->geo.head_dim
                 * kv->geo.dtype_bytes;
    return kv->pool + (size_t) block * kv->block_bytes
           + (size_t) layer * kv->layer_bytes
           + ((size_t) k_or_v * kv->geo.block_tokens + slot) * row;
}

static inline size_t kv_row_bytes(const struct kv_manager *kv)
{
    return (size_t) kv->geo.kv_heads * kv->geo.head_dim * kv->geo.dtype_bytes;
}

#endif /* LLMD_KV_BLOCKS_H */
