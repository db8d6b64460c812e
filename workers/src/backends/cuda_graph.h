/*
 * Which decode shapes have a captured CUDA graph.  A pure-decode step of
 * n sequences with `splits` attention splits launches the same kernels
 * with the same arguments every time (the step's data lives in the plan
 * words), so after a shape has been seen twice its step is captured once
 * and replayed: one launch instead of ~10 per layer.
 *
 * Plain C: the graphs are opaque pointers given back through `destroy`,
 * so the bookkeeping is unit-tested without a GPU.
 */

#ifndef LLMD_CUDA_GRAPH_H
#define LLMD_CUDA_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#define GRAPH_SLOTS         64      /* shapes kept; least recently used go */
#define GRAPH_AFTER_SEEN    2       /* capture on the second sighting */

struct graph_entry {
    int         n, splits;          /* the shape; n == 0: empty slot */
    int         seen;
    void       *exec;               /* the instantiated graph, or NULL */
    uint64_t    used;
};

struct graph_cache {
    struct graph_entry  slot[GRAPH_SLOTS];
    uint64_t            clock;
    void              (*destroy)(void *exec);
};

/* The entry of a shape, counting this sighting: found, or made in an empty
 * slot or in the least recently used one (its graph destroyed). */
struct graph_entry *graph_cache_get(struct graph_cache *c, int n, int splits);

/* Whether this sighting should capture the shape's graph. */
static inline int graph_should_capture(const struct graph_entry *e)
{
    return e->exec == NULL && e->seen >= GRAPH_AFTER_SEEN;
}

/* Destroy every graph (the buffers or the KV pool they point into moved). */
void graph_cache_clear(struct graph_cache *c);

#endif
