/*
 * The advertised-prefix map: see prefix_map.h.
 *
 * Two open-addressing tables with linear probing and backward-shift
 * deletion (no tombstones, so probes stay short under churn):
 *   keys:  gateway key -> owning group
 *   edges: KV block hash -> (group, position of the block in the group)
 * A hash may have several edges (groups sharing a prefix); each group has
 * at most one per hash, because chained hashes never repeat in a chain.
 */

#include "prefix_map.h"

#include <stdlib.h>
#include <string.h>

#include "llmd_wire.h"

struct group {
    struct group        *prev, *next;   /* arrival order, oldest first */
    struct prefix_claim *c;             /* keys[0..nkeys) are this group's */
    uint32_t             nkeys;
    uint32_t             nedges;        /* blocks [0, nedges) are indexed */
};

struct key_slot {
    uint64_t        key;
    struct group   *g;                  /* NULL: empty */
};

struct edge_slot {
    uint64_t        hash;
    struct group   *g;                  /* NULL: empty */
    uint32_t        pos;
};

struct prefix_map {
    struct key_slot    *keys;
    uint32_t            key_mask;
    uint32_t            nkeys;
    uint32_t            max_keys;
    struct edge_slot   *edges;
    uint32_t            edge_mask;
    uint32_t            nedges;
    uint32_t            max_edges;
    struct group       *head, *tail;
    prefix_emit_fn      emit;
    void               *arg;
};

static uint32_t slot_of(uint64_t h, uint32_t mask)
{
    /* the hashes are xxh3 outputs already; fold the halves together */
    return (uint32_t) (h ^ (h >> 32)) & mask;
}

/* true when the entry at j, whose home is k, may move back into hole i */
static int may_fill(uint32_t i, uint32_t j, uint32_t k)
{
    return i <= j ? (k <= i || k > j) : (k <= i && k > j);
}

/* ------------------------------------------------------------------------ */
/* keys */

static struct key_slot *key_find(const struct prefix_map *m, uint64_t key)
{
    uint32_t i = slot_of(key, m->key_mask);

    while (m->keys[i].g != NULL) {
        if (m->keys[i].key == key)
            return &m->keys[i];
        i = (i + 1) & m->key_mask;
    }
    return NULL;
}

static void key_insert(struct prefix_map *m, uint64_t key, struct group *g)
{
    uint32_t i = slot_of(key, m->key_mask);

    while (m->keys[i].g != NULL)
        i = (i + 1) & m->key_mask;
    m->keys[i].key = key;
    m->keys[i].g = g;
    m->nkeys++;
}

static void key_delete(struct prefix_map *m, struct key_slot *s)
{
    uint32_t i = (uint32_t) (s - m->keys), j = i;

    for (;;) {
        j = (j + 1) & m->key_mask;
        if (m->keys[j].g == NULL)
            break;
        if (may_fill(i, j, slot_of(m->keys[j].key, m->key_mask))) {
            m->keys[i] = m->keys[j];
            i = j;
        }
    }
    m->keys[i].g = NULL;
    m->nkeys--;
}

/* ------------------------------------------------------------------------ */
/* edges */

static void edge_insert(struct prefix_map *m, uint64_t hash, struct group *g,
    uint32_t pos)
{
    uint32_t i = slot_of(hash, m->edge_mask);

    while (m->edges[i].g != NULL)
        i = (i + 1) & m->edge_mask;
    m->edges[i].hash = hash;
    m->edges[i].g = g;
    m->edges[i].pos = pos;
    m->nedges++;
}

static void edge_delete(struct prefix_map *m, uint64_t hash, struct group *g)
{
    uint32_t i = slot_of(hash, m->edge_mask), j;

    while (m->edges[i].g != NULL
           && (m->edges[i].hash != hash || m->edges[i].g != g))
        i = (i + 1) & m->edge_mask;
    if (m->edges[i].g == NULL)
        return;
    for (j = i;;) {
        j = (j + 1) & m->edge_mask;
        if (m->edges[j].g == NULL)
            break;
        if (may_fill(i, j, slot_of(m->edges[j].hash, m->edge_mask))) {
            m->edges[i] = m->edges[j];
            i = j;
        }
    }
    m->edges[i].g = NULL;
    m->nedges--;
}

/* ------------------------------------------------------------------------ */
/* groups */

static void group_unlink(struct prefix_map *m, struct group *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        m->head = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        m->tail = g->prev;
}

/* Withdraw the group's keys [from, nkeys) and the blocks only they needed;
 * frees the group when nothing is left. */
static void withdraw(struct prefix_map *m, struct group *g, uint32_t from)
{
    struct prefix_claim *c = g->c;
    uint32_t keep_edges = from ? c->cover[from - 1] : 0;

    for (uint32_t i = from; i < g->nkeys; i++) {
        struct key_slot *s = key_find(m, c->keys[i]);
        if (s && s->g == g) {
            key_delete(m, s);
            m->emit(m->arg, LLMD_EVENT_REMOVED, c->keys[i]);
        }
    }
    g->nkeys = from;
    for (uint32_t p = keep_edges; p < g->nedges; p++)
        edge_delete(m, c->blocks[p], g);
    g->nedges = keep_edges;
    if (g->nkeys == 0) {
        group_unlink(m, g);
        prefix_claim_free(c);
        free(g);
    }
}

void prefix_map_adopt(struct prefix_map *m, struct prefix_claim *c)
{
    struct group *g;
    uint32_t n = 0;

    /* keep only the keys nobody advertises yet, in chain order */
    for (uint32_t i = 0; i < c->nkeys; i++) {
        if (key_find(m, c->keys[i]) != NULL)
            continue;
        c->keys[n] = c->keys[i];
        c->cover[n] = c->cover[i];
        n++;
    }
    /* a claim larger than the whole map keeps its shortest prefixes */
    while (n > 0 && (n > m->max_keys || c->cover[n - 1] > m->max_edges))
        n--;
    if (n == 0 || (g = calloc(1, sizeof(*g))) == NULL) {
        prefix_claim_free(c);
        return;
    }
    /* make room: the oldest groups go first */
    while (m->head && (m->nkeys + n > m->max_keys
                       || m->nedges + c->cover[n - 1] > m->max_edges))
        withdraw(m, m->head, 0);

    g->c = c;
    g->nkeys = n;
    g->nedges = c->cover[n - 1];
    g->prev = m->tail;
    if (m->tail)
        m->tail->next = g;
    else
        m->head = g;
    m->tail = g;
    for (uint32_t i = 0; i < n; i++) {
        key_insert(m, c->keys[i], g);
        m->emit(m->arg, LLMD_EVENT_STORED, c->keys[i]);
    }
    for (uint32_t p = 0; p < g->nedges; p++)
        edge_insert(m, c->blocks[p], g, p);
}

void prefix_map_block_removed(struct prefix_map *m, uint64_t kv_hash)
{
    struct group *hit[64];
    uint32_t pos[64];
    int n;

    /* withdrawing edits the table, so collect first; more than 64 groups
     * on one block only means another pass */
    do {
        uint32_t i = slot_of(kv_hash, m->edge_mask);

        n = 0;
        while (m->edges[i].g != NULL && n < 64) {
            if (m->edges[i].hash == kv_hash) {
                hit[n] = m->edges[i].g;
                pos[n] = m->edges[i].pos;
                n++;
            }
            i = (i + 1) & m->edge_mask;
        }
        for (int k = 0; k < n; k++) {
            struct group *g = hit[k];
            uint32_t from = 0;

            /* the first key that needs block pos, and all after it */
            while (from < g->nkeys && g->c->cover[from] <= pos[k])
                from++;
            withdraw(m, g, from);
        }
    } while (n == 64);
}

/* ------------------------------------------------------------------------ */

static uint32_t table_size(uint32_t entries)
{
    uint32_t size = 16;

    /* at most half full: probes stay short */
    while (size < entries * 2)
        size <<= 1;
    return size;
}

struct prefix_map *prefix_map_new(uint32_t max_keys, uint32_t max_edges,
    prefix_emit_fn emit, void *arg)
{
    struct prefix_map *m = calloc(1, sizeof(*m));
    uint32_t ks = table_size(max_keys), es = table_size(max_edges);

    if (m == NULL)
        return NULL;
    m->keys = calloc(ks, sizeof(*m->keys));
    m->edges = calloc(es, sizeof(*m->edges));
    if (m->keys == NULL || m->edges == NULL) {
        prefix_map_free(m);
        return NULL;
    }
    m->key_mask = ks - 1;
    m->edge_mask = es - 1;
    m->max_keys = max_keys;
    m->max_edges = max_edges;
    m->emit = emit;
    m->arg = arg;
    return m;
}

void prefix_map_free(struct prefix_map *m)
{
    if (m == NULL)
        return;
    while (m->head) {
        struct group *g = m->head;
        m->head = g->next;
        prefix_claim_free(g->c);
        free(g);
    }
    free(m->keys);
    free(m->edges);
    free(m);
}

size_t prefix_map_count(const struct prefix_map *m)
{
    return m->nkeys;
}

size_t prefix_map_keys(const struct prefix_map *m, uint64_t *out, size_t max)
{
    size_t n = 0;

    for (uint32_t i = 0; i <= m->key_mask && n < max; i++)
        if (m->keys[i].g != NULL)
            out[n++] = m->keys[i].key;
    return n;
}
