/* KV block manager: allocation, reference counts, prefix reuse, eviction. */

#include <stdlib.h>
#include <string.h>

#include "sched/kv_blocks.h"
#include "suites.h"

#define BT 4

static struct kv_manager kv;
static int stored, removed;
static uint64_t last_removed, last_parent;
static int32_t last_tokens[BT];

static void on_event(void *arg, const struct kv_event *ev)
{
    (void) arg;
    if (ev->kind == KV_EVENT_STORED) {
        stored++;
        last_parent = ev->parent_hash;
        memcpy(last_tokens, ev->tokens, sizeof(last_tokens));
    } else {
        removed++;
        last_removed = ev->hash;
    }
}

static void setup_blocks(int n)
{
    struct kv_geometry geo = { n, BT, 3, 2, 4, 2 };

    ck_assert_int_eq(kv_init(&kv, &geo), 0);
    kv_set_event_cb(&kv, on_event, NULL);
    stored = removed = 0;
}

static void teardown(void)
{
    kv_free(&kv);
}

/* commit the chained hashes of tokens[0..n_blocks*BT) into blocks[] */
static void commit_chain(const int32_t *tokens, int n_blocks, int32_t *blocks)
{
    uint64_t parent = KV_HASH_SEED;

    for (int i = 0; i < n_blocks; i++) {
        uint64_t h = kv_block_hash(parent, tokens + i * BT, BT);
        kv_commit(&kv, blocks[i], h, parent, tokens + i * BT);
        parent = h;
    }
}

START_TEST(alloc_until_full_then_free)
{
    int32_t got[8];

    setup_blocks(8);
    for (int i = 0; i < 8; i++) {
        got[i] = kv_alloc(&kv);
        ck_assert_int_ne(got[i], KV_NO_BLOCK);
        for (int j = 0; j < i; j++)
            ck_assert_int_ne(got[i], got[j]);
    }
    ck_assert_int_eq(kv_alloc(&kv), KV_NO_BLOCK);
    ck_assert_int_eq(kv_available(&kv), 0);
    ck_assert(kv_usage(&kv) == 1.0);
    kv_release(&kv, got[3]);
    ck_assert_int_eq(kv_available(&kv), 1);
    ck_assert_int_eq(kv_alloc(&kv), got[3]);
    for (int i = 0; i < 8; i++)
        kv_release(&kv, got[i]);
    ck_assert(kv_usage(&kv) == 0.0);
    ck_assert_int_eq(kv_available(&kv), 8);
    teardown();
}
END_TEST

START_TEST(reference_counts)
{
    int32_t b;

    setup_blocks(4);
    b = kv_alloc(&kv);
    kv_acquire(&kv, b);
    ck_assert_int_eq(kv.blocks[b].ref, 2);
    kv_release(&kv, b);
    ck_assert_int_eq(kv.n_used, 1);
    ck_assert_int_eq(kv_available(&kv), 3);
    kv_release(&kv, b);
    ck_assert_int_eq(kv.n_used, 0);
    ck_assert_int_eq(kv_available(&kv), 4);
    teardown();
}
END_TEST

START_TEST(prefix_reuse_is_chained)
{
    int32_t a[3 * BT], b[3 * BT], c[3 * BT], blocks[3], found[3];
    uint64_t hashes[3];

    setup_blocks(8);
    for (int i = 0; i < 3 * BT; i++)
        a[i] = b[i] = c[i] = 100 + i;
    b[2 * BT + 1] = 7;          /* b diverges in its third block */
    c[0] = 9;                   /* c differs only in the first block */

    for (int i = 0; i < 3; i++)
        blocks[i] = kv_alloc(&kv);
    commit_chain(a, 3, blocks);
    ck_assert_int_eq(stored, 3);
    ck_assert(last_parent != KV_HASH_SEED);
    ck_assert_int_eq(last_tokens[0], 100 + 2 * BT);

    /* one more token than three blocks, so all three may match */
    {
        int32_t a1[3 * BT + 1];
        memcpy(a1, a, sizeof(a));
        a1[3 * BT] = 1;
        ck_assert_int_eq(kv_match_prefix(&kv, a1, 3 * BT + 1, hashes, found), 3);
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(found[i], blocks[i]);
    }
    /* the last token is never matched: exactly three blocks match two */
    ck_assert_int_eq(kv_match_prefix(&kv, a, 3 * BT, hashes, found), 2);
    ck_assert_int_eq(kv_match_prefix(&kv, b, 3 * BT, hashes, found), 2);
    /* c's second and third blocks equal a's, but their parents differ */
    ck_assert_int_eq(kv_match_prefix(&kv, c, 3 * BT, hashes, found), 0);

    /* a second copy of the same prefix is not registered twice */
    {
        int32_t dup = kv_alloc(&kv);
        kv_commit(&kv, dup, kv_block_hash(KV_HASH_SEED, a, BT), KV_HASH_SEED, a);
        ck_assert_int_eq(stored, 3);
        ck_assert_int_eq(kv_lookup(&kv, kv_block_hash(KV_HASH_SEED, a, BT)),
                         blocks[0]);
        kv_release(&kv, dup);
        ck_assert_int_eq(kv.n_free, 8 - 3);   /* dup went back to the free list */
    }
    teardown();
}
END_TEST

START_TEST(lru_eviction_oldest_first)
{
    int32_t toks[3][BT], blk[3], other[5];
    uint64_t h[3];

    setup_blocks(8);
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < BT; i++)
            toks[k][i] = k * 10 + i;
        blk[k] = kv_alloc(&kv);
        h[k] = kv_block_hash(KV_HASH_SEED, toks[k], BT);
        kv_commit(&kv, blk[k], h[k], KV_HASH_SEED, toks[k]);
    }
    /* released in order 1, 0, 2: block 1 is the oldest unreferenced */
    kv_release(&kv, blk[1]);
    kv_release(&kv, blk[0]);
    kv_release(&kv, blk[2]);
    ck_assert_int_eq(kv.n_evictable, 3);
    ck_assert(kv_usage(&kv) == 0.0);    /* cached but unused is free */
    for (int i = 0; i < 5; i++)
        other[i] = kv_alloc(&kv);       /* drains the free list */
    ck_assert_int_eq(kv.n_free, 0);

    ck_assert_int_eq(kv_alloc(&kv), blk[1]);
    ck_assert_int_eq(removed, 1);
    ck_assert(last_removed == h[1]);
    ck_assert_int_eq(kv_lookup(&kv, h[1]), KV_NO_BLOCK);
    ck_assert_int_eq(kv_lookup(&kv, h[0]), blk[0]);

    /* a hit takes block 0 off the LRU list, so block 2 goes next */
    kv_acquire(&kv, blk[0]);
    ck_assert_int_eq(kv_alloc(&kv), blk[2]);
    ck_assert(last_removed == h[2]);
    ck_assert_int_eq(kv_alloc(&kv), KV_NO_BLOCK);   /* block 0 is in use */
    (void) other;
    teardown();
}
END_TEST

START_TEST(block_layout)
{
    /* [layer][K/V][block_tokens][kv_heads][head_dim] x dtype */
    size_t row = 2 * 4 * 2, layer = 2 * BT * row;

    setup_blocks(4);
    ck_assert_uint_eq(kv_row_bytes(&kv), row);
    ck_assert_uint_eq(kv.block_bytes, 3 * layer);
    ck_assert_ptr_eq(kv_slot(&kv, 2, 1, 1, 3),
                     kv.pool + 2 * kv.block_bytes + layer + (BT + 3) * row);
    /* the last row of the last block ends exactly at the end of the pool */
    memset(kv_slot(&kv, 3, 2, 1, BT - 1), 0xab, row);
    ck_assert_ptr_eq(kv_slot(&kv, 3, 2, 1, BT - 1) + row,
                     kv.pool + 4 * kv.block_bytes);
    teardown();
}
END_TEST

static void *released;

static void note_release(void *pool)
{
    released = pool;
}

START_TEST(adopted_pool)
{
    static uint8_t elsewhere[4 * 3 * 2 * BT * 2 * 4 * 2];

    /* a backend's own pool (GPU memory in the cuda backend) replaces the
     * host one; kv_free gives it back through the backend's release */
    setup_blocks(4);
    ck_assert_uint_eq(sizeof(elsewhere), 4 * kv.block_bytes);
    released = NULL;
    kv_adopt_pool(&kv, elsewhere, note_release);
    ck_assert_ptr_eq(kv.pool, elsewhere);
    ck_assert_ptr_eq(kv_slot(&kv, 1, 0, 0, 0), elsewhere + kv.block_bytes);
    ck_assert_ptr_null(released);
    teardown();
    ck_assert_ptr_eq(released, elsewhere);

    /* a large pool is mapped, not allocated, and unmapped by kv_free */
    {
        struct kv_geometry geo = { 1024, 16, 32, 8, 128, 2 };     /* 2 GiB */
        ck_assert_int_eq(kv_init(&kv, &geo), 0);
        kv.pool[kv.geo.num_blocks * kv.block_bytes - 1] = 1;
        teardown();
    }
}
END_TEST

Suite *kv_blocks_suite(void)
{
    Suite *s = suite_create("kv_blocks");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, alloc_until_full_then_free);
    tcase_add_test(tc, reference_counts);
    tcase_add_test(tc, prefix_reuse_is_chained);
    tcase_add_test(tc, lru_eviction_oldest_first);
    tcase_add_test(tc, block_layout);
    tcase_add_test(tc, adopted_pool);
    suite_add_tcase(s, tc);
    return s;
}
