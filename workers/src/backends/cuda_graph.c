/*
 * The decode-graph cache: a small table searched linearly (64 slots).
 */

#include "cuda_graph.h"

#include <string.h>

static void drop(struct graph_cache *c, struct graph_entry *e)
{
    if (e->exec && c->destroy)
        c->destroy(e->exec);
    memset(e, 0, sizeof(*e));
}

struct graph_entry *graph_cache_get(struct graph_cache *c, int n, int splits)
{
    struct graph_entry *victim = &c->slot[0];

    for (int i = 0; i < GRAPH_SLOTS; i++) {
        struct graph_entry *e = &c->slot[i];

        if (e->n == n && e->splits == splits) {
            victim = e;
            goto found;
        }
        if (victim->n != 0 && (e->n == 0 || e->used < victim->used))
            victim = e;
    }
    drop(c, victim);
    victim->n = n;
    victim->splits = splits;
found:
    victim->seen++;
    victim->used = ++c->clock;
    return victim;
}

void graph_cache_clear(struct graph_cache *c)
{
    for (int i = 0; i < GRAPH_SLOTS; i++)
        drop(c, &c->slot[i]);
}
