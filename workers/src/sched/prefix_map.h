/*
 * What this worker advertises to the gateways: the set of gateway prefix
 * keys it holds, and for each the KV blocks that make it true.
 *
 * Adopting a claim (prefill done) advertises its keys that were not yet
 * advertised; the claim is kept, as a "group", with the keys it
 * introduced.  When the KV cache drops a block, every group that contains
 * it at position p withdraws its keys covering more than p blocks: that key
 * and every later one of the same chain.  Groups are kept in arrival order
 * and the oldest are withdrawn when the map reaches its bounds, so memory
 * stays fixed whatever the traffic.
 *
 * Each change is reported in order through the emit callback (STORED or
 * REMOVED, with one key), which the publisher batches into stream events.
 * HTTP thread only.
 */

#ifndef LLMD_PREFIX_MAP_H
#define LLMD_PREFIX_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "prefix_claim.h"

typedef void (*prefix_emit_fn)(void *arg, uint32_t type, uint64_t key);

struct prefix_map;

/* max_keys advertised keys and max_edges (group, block) links at most. */
struct prefix_map *prefix_map_new(uint32_t max_keys, uint32_t max_edges,
    prefix_emit_fn emit, void *arg);
void prefix_map_free(struct prefix_map *m);

/* Takes ownership of c (it may be freed at once). */
void prefix_map_adopt(struct prefix_map *m, struct prefix_claim *c);

/* The KV block named kv_hash left the cache. */
void prefix_map_block_removed(struct prefix_map *m, uint64_t kv_hash);

/* Advertised keys: count, and a copy of up to max of them. */
size_t prefix_map_count(const struct prefix_map *m);
size_t prefix_map_keys(const struct prefix_map *m, uint64_t *out, size_t max);

#endif
