/*
 * KV block manager: free list, evictable LRU list and a chained hash table
 * of cached blocks, all indexed by block id (no per-block allocation).
 */

#include "kv_blocks.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

/* ------------------------------------------------------------------------ */
/* LRU list of evictable blocks (cached, ref 0); head is the oldest */

static void lru_push_tail(struct kv_manager *kv, int32_t b)
{
    struct kv_block *blk = &kv->blocks[b];

    blk->lru_prev = kv->lru_tail;
    blk->lru_next = KV_NO_BLOCK;
    if (kv->lru_tail != KV_NO_BLOCK)
        kv->blocks[kv->lru_tail].lru_next = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_evictable++;
}

static void lru_remove(struct kv_manager *kv, int32_t b)
{
    struct kv_block *blk = &kv->blocks[b];

    if (blk->lru_prev != KV_NO_BLOCK)
        kv->blocks[blk->lru_prev].lru_next = blk->lru_next;
    else
        kv->lru_head = blk->lru_next;
    if (blk->lru_next != KV_NO_BLOCK)
        kv->blocks[blk->lru_next].lru_prev = blk->lru_prev;
    else
        kv->lru_tail = blk->lru_prev;
    blk->lru_prev = blk->lru_next = KV_NO_BLOCK;
    kv->n_evictable--;
}

/* ------------------------------------------------------------------------ */
/* hash table: bucket heads plus a next link inside each block */

static uint32_t bucket_of(const struct kv_manager *kv, uint64_t hash)
{
    return (uint32_t) (hash ^ (hash >> 32)) & kv->bucket_mask;
}

static void table_insert(struct kv_manager *kv, int32_t b)
{
    uint32_t i = bucket_of(kv, kv->blocks[b].hash);

    kv->blocks[b].hash_next = kv->buckets[i];
    kv->buckets[i] = b;
}

static void table_remove(struct kv_manager *kv, int32_t b)
{
    int32_t *link = &kv->buckets[bucket_of(kv, kv->blocks[b].hash)];

    while (*link != KV_NO_BLOCK) {
        if (*link == b) {
            *link = kv->blocks[b].hash_next;
            kv->blocks[b].hash_next = KV_NO_BLOCK;
            return;
        }
        link = &kv->blocks[*link].hash_next;
    }
}

int32_t kv_lookup(const struct kv_manager *kv, uint64_t hash)
{
    int32_t b = kv->buckets[bucket_of(kv, hash)];

    while (b != KV_NO_BLOCK && kv->blocks[b].hash != hash)
        b = kv->blocks[b].hash_next;
    return b;
}

/* ------------------------------------------------------------------------ */

static size_t pool_bytes(const struct kv_manager *kv)
{
    return (size_t) kv->geo.num_blocks * kv->block_bytes;
}

/* Large pools are mapped: zeroed pages that cost nothing until touched and
 * are not counted against the overcommit limit, so a backend that adopts
 * its own pool (many GiB of GPU memory) never pays for this one.  Small
 * ones stay on the heap, where ASan watches their bounds in the tests. */
#define POOL_MAP_BYTES  ((size_t) 64 << 20)

static uint8_t *pool_alloc(size_t bytes)
{
    void *p;

    if (bytes < POOL_MAP_BYTES)
        return calloc(1, bytes);
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void drop_pool(struct kv_manager *kv)
{
    if (kv->pool == NULL)
        return;
    if (kv->pool_release)
        kv->pool_release(kv->pool);
    else if (pool_bytes(kv) < POOL_MAP_BYTES)
        free(kv->pool);
    else
        munmap(kv->pool, pool_bytes(kv));
    kv->pool = NULL;
    kv->pool_release = NULL;
}

int kv_init(struct kv_manager *kv, const struct kv_geometry *geo)
{
    uint32_t nbuckets = 16;

    memset(kv, 0, sizeof(*kv));
    if (geo->num_blocks < 1 || geo->block_tokens < 1 || geo->num_layers < 1
        || geo->kv_heads < 1 || geo->head_dim < 1 || geo->dtype_bytes < 1)
        return -1;
    kv->geo = *geo;
    kv->layer_bytes = (size_t) 2 * geo->block_tokens * geo->kv_heads
                      * geo->head_dim * geo->dtype_bytes;
    kv->block_bytes = kv->layer_bytes * geo->num_layers;

    while (nbuckets < (uint32_t) geo->num_blocks * 2)
        nbuckets <<= 1;
    kv->bucket_mask = nbuckets - 1;

    kv->pool = pool_alloc(pool_bytes(kv));
    kv->blocks = calloc(geo->num_blocks, sizeof(*kv->blocks));
    kv->free_stack = malloc(sizeof(int32_t) * geo->num_blocks);
    kv->buckets = malloc(sizeof(int32_t) * nbuckets);
    if (!kv->pool || !kv->blocks || !kv->free_stack || !kv->buckets) {
        kv_free(kv);
        return -1;
    }
    for (uint32_t i = 0; i < nbuckets; i++)
        kv->buckets[i] = KV_NO_BLOCK;

    /* Push in reverse so that block 0 is handed out first (easier to read
     * in tests and dumps). */
    for (int i = geo->num_blocks - 1; i >= 0; i--) {
        kv->blocks[i].lru_prev = kv->blocks[i].lru_next = KV_NO_BLOCK;
        kv->blocks[i].hash_next = KV_NO_BLOCK;
        kv->free_stack[kv->n_free++] = i;
    }
    kv->lru_head = kv->lru_tail = KV_NO_BLOCK;
    return 0;
}

void kv_free(struct kv_manager *kv)
{
    drop_pool(kv);
    free(kv->blocks);
    free(kv->free_stack);
    free(kv->buckets);
    memset(kv, 0, sizeof(*kv));
}

void kv_adopt_pool(struct kv_manager *kv, void *pool, void (*release)(void *pool))
{
    drop_pool(kv);
    kv->pool = pool;
    kv->pool_release = release;
}

void kv_set_event_cb(struct kv_manager *kv, kv_event_fn fn, void *arg)
{
    kv->on_event = fn;
    kv->event_arg = arg;
}

double kv_usage(const struct kv_manager *kv)
{
    return kv->geo.num_blocks ? (double) kv->n_used / kv->geo.num_blocks : 0;
}

static void emit(struct kv_manager *kv, enum kv_event_kind kind, int32_t b,
    uint64_t hash, uint64_t parent, const int32_t *tokens, int n)
{
    struct kv_event ev = { kind, b, hash, parent, tokens, n };

    if (kv->on_event)
        kv->on_event(kv->event_arg, &ev);
}

int32_t kv_alloc(struct kv_manager *kv)
{
    int32_t b;

    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else if (kv->lru_head != KV_NO_BLOCK) {
        b = kv->lru_head;
        lru_remove(kv, b);
        table_remove(kv, b);
        kv->blocks[b].cached = 0;
        kv->stats.evictions++;
        emit(kv, KV_EVENT_REMOVED, b, kv->blocks[b].hash, 0, NULL, 0);
    } else {
        return KV_NO_BLOCK;
    }
    kv->blocks[b].ref = 1;
    kv->blocks[b].hash = 0;
    kv->n_used++;
    kv->stats.allocations++;
    return b;
}

void kv_acquire(struct kv_manager *kv, int32_t b)
{
    struct kv_block *blk = &kv->blocks[b];

    if (blk->ref++ == 0) {
        /* only cached blocks can be found with ref 0 */
        lru_remove(kv, b);
        kv->n_used++;
    }
}

void kv_release(struct kv_manager *kv, int32_t b)
{
    struct kv_block *blk = &kv->blocks[b];

    if (--blk->ref > 0)
        return;
    kv->n_used--;
    if (blk->cached)
        lru_push_tail(kv, b);
    else
        kv->free_stack[kv->n_free++] = b;
}

void kv_commit(struct kv_manager *kv, int32_t b, uint64_t hash,
    uint64_t parent_hash, const int32_t *tokens)
{
    struct kv_block *blk = &kv->blocks[b];

    if (blk->cached || kv_lookup(kv, hash) != KV_NO_BLOCK)
        return;
    blk->hash = hash;
    blk->cached = 1;
    table_insert(kv, b);
    emit(kv, KV_EVENT_STORED, b, hash, parent_hash, tokens,
         kv->geo.block_tokens);
}

uint64_t kv_block_hash(uint64_t parent_hash, const int32_t *tokens, int n)
{
    return XXH3_64bits_withSeed(tokens, sizeof(int32_t) * (size_t) n,
                                parent_hash);
}

int kv_match_prefix(const struct kv_manager *kv, const int32_t *tokens, int n,
    uint64_t *hashes, int32_t *blocks)
{
    int bt = kv->geo.block_tokens;
    int full = (n - 1) / bt;
    uint64_t parent = KV_HASH_SEED;
    int i;

    for (i = 0; i < full; i++) {
        hashes[i] = kv_block_hash(parent, tokens + (size_t) i * bt, bt);
        blocks[i] = kv_lookup(kv, hashes[i]);
        if (blocks[i] == KV_NO_BLOCK)
            break;
        parent = hashes[i];
    }
    return i;
}
