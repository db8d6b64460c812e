/*
 * The shared-memory zone: per-peer load counters and the prefix index
 * (prefix key -> peers that recently received or stored it), shared by all
 * nginx worker processes and kept across reloads.
 *
 * The index is a chained hash table over a fixed array of entries with an
 * LRU list through them; when every entry is in use the least recently
 * used prefix is forgotten.  Index operations hold the slab mutex; peer
 * counters are atomics and need no lock.
 */

#include "ngx_llmd.h"

#include <sys/random.h>


static uint32_t ngx_llmd_lookup(ngx_llmd_shctx_t *sh, uint64_t key);
static ngx_uint_t ngx_llmd_zone_deepest(ngx_llmd_shctx_t *sh, uint64_t *keys,
    ngx_uint_t lo, ngx_uint_t hi, uint16_t id, uint16_t flag, uint32_t *hints);
static void ngx_llmd_zone_front(ngx_llmd_entry_t *entry, uint16_t id,
    uint16_t flag, ngx_uint_t held);
static void ngx_llmd_zone_share(ngx_llmd_shctx_t *sh, uint64_t key,
    ngx_int_t slot);


/* 64 random bits; only when the kernel has none, a mix of what varies. */
static uint64_t
ngx_llmd_random64(void)
{
    uint64_t  v;

    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t) sizeof(v)) {
        return v;
    }

    return ((uint64_t) ngx_random() << 33)
           ^ ((uint64_t) ngx_random() << 2)
           ^ ((uint64_t) ngx_pid << 40)
           ^ (uint64_t) ngx_time() ^ (uint64_t) (uintptr_t) &v;
}


/* Fleet state from Redis is fresh: the mirror read it within llmd_redis
 * stale=; pick, P/D and prediction use it only then. */
ngx_uint_t
ngx_llmd_redis_fresh(ngx_llmd_srv_conf_t *conf)
{
    return conf->redis && conf->sh->redis_ok
           && ngx_llmd_since(conf->sh->redis_ok) <= conf->redis->stale;
}


ngx_int_t
ngx_llmd_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_llmd_srv_conf_t  *oconf = data;

    size_t                 avail, per_entry;
    uint32_t               i, n;
    ngx_slab_pool_t       *shpool;
    ngx_llmd_shctx_t      *sh;
    ngx_llmd_srv_conf_t   *conf;

    conf = shm_zone->data;

    if (oconf) {
        /* reload with the same zone: keep what the fleet has learnt */
        conf->sh = oconf->sh;
        conf->shpool = oconf->shpool;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        conf->sh = shpool->data;
        conf->shpool = shpool;
        return NGX_OK;
    }

    sh = ngx_slab_alloc(shpool, sizeof(ngx_llmd_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(sh, sizeof(ngx_llmd_shctx_t));
    sh->magic = NGX_LLMD_ZONE_MAGIC;

    /* transfer ids: unique across gateways and restarts (ngx_llmd_pd.c) */
    sh->transfer_base = ngx_llmd_random64();

    /* give the index most of what is left; the slab allocator keeps some
     * bookkeeping of its own */
    avail = shm_zone->shm.size - sizeof(ngx_llmd_shctx_t);
    avail = avail / 8 * 6;
    per_entry = sizeof(ngx_llmd_entry_t) + sizeof(uint32_t);

    for (n = avail / per_entry; n >= 64; n /= 2) {

        sh->entries = ngx_slab_alloc(shpool, n * sizeof(ngx_llmd_entry_t));
        if (sh->entries == NULL) {
            continue;
        }

        for (sh->nbuckets = 1; sh->nbuckets * 2 <= n; sh->nbuckets *= 2) {
            /* void */
        }

        sh->buckets = ngx_slab_alloc(shpool,
                                     sh->nbuckets * sizeof(uint32_t));
        if (sh->buckets) {
            break;
        }

        ngx_slab_free(shpool, sh->entries);
        sh->entries = NULL;
    }

    if (sh->entries == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "llmd zone \"%V\" is too small for a prefix index",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    sh->capacity = n;

    for (i = 0; i < sh->nbuckets; i++) {
        sh->buckets[i] = NGX_LLMD_NIL;
    }

    /* every entry starts on the free list, chained through next */
    for (i = 0; i < n; i++) {
        sh->entries[i].next = (i + 1 < n) ? i + 1 : NGX_LLMD_NIL;
    }

    sh->free_head = 0;
    sh->lru_head = NGX_LLMD_NIL;
    sh->lru_tail = NGX_LLMD_NIL;

    shpool->data = sh;
    shpool->log_nomem = 0;

    conf->sh = sh;
    conf->shpool = shpool;

    ngx_log_error(NGX_LOG_INFO, shm_zone->shm.log, 0,
                  "llmd zone \"%V\": %uD prefix entries, %ui peers",
                  &shm_zone->shm.name, sh->capacity,
                  (ngx_uint_t) NGX_LLMD_MAX_PEERS);

    return NGX_OK;
}


/* The zone slot of a peer, or NGX_ERROR if the zone never saw it. */
ngx_int_t
ngx_llmd_zone_find_peer(ngx_llmd_srv_conf_t *conf, u_char *name, size_t len)
{
    ngx_uint_t         i;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    for (i = 0; i < sh->npeers; i++) {
        if (sh->peers[i].name_len == len
            && ngx_memcmp(sh->peers[i].name, name, len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


/* The zone slot of a peer, registering it on first sight. */
ngx_int_t
ngx_llmd_zone_peer_slot(ngx_llmd_srv_conf_t *conf, ngx_str_t *name)
{
    size_t             len;
    ngx_int_t          slot;
    ngx_uint_t         i;
    ngx_llmd_peer_t   *peer;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;
    len = ngx_min(name->len, NGX_LLMD_PEER_NAME_LEN);
    slot = NGX_ERROR;

    ngx_shmtx_lock(&conf->shpool->mutex);

    for (i = 0; i < sh->npeers; i++) {
        peer = &sh->peers[i];
        if (peer->name_len == len && ngx_memcmp(peer->name, name->data, len)
                                     == 0)
        {
            slot = i;
            goto done;
        }
    }

    if (sh->npeers < NGX_LLMD_MAX_PEERS) {
        peer = &sh->peers[sh->npeers];
        ngx_memcpy(peer->name, name->data, len);
        peer->name_len = len;
        slot = sh->npeers++;
    }

done:

    ngx_shmtx_unlock(&conf->shpool->mutex);

    return slot;
}


static uint32_t
ngx_llmd_lookup(ngx_llmd_shctx_t *sh, uint64_t key)
{
    uint32_t  i;

    for (i = sh->buckets[key & (sh->nbuckets - 1)];
         i != NGX_LLMD_NIL;
         i = sh->entries[i].next)
    {
        if (sh->entries[i].key == key) {
            return i;
        }
    }

    return NGX_LLMD_NIL;
}


static void
ngx_llmd_lru_unlink(ngx_llmd_shctx_t *sh, uint32_t i)
{
    ngx_llmd_entry_t  *e = &sh->entries[i];

    if (e->lru_prev != NGX_LLMD_NIL) {
        sh->entries[e->lru_prev].lru_next = e->lru_next;
    } else {
        sh->lru_head = e->lru_next;
    }

    if (e->lru_next != NGX_LLMD_NIL) {
        sh->entries[e->lru_next].lru_prev = e->lru_prev;
    } else {
        sh->lru_tail = e->lru_prev;
    }
}


static void
ngx_llmd_lru_push_head(ngx_llmd_shctx_t *sh, uint32_t i)
{
    ngx_llmd_entry_t  *e = &sh->entries[i];

    e->lru_prev = NGX_LLMD_NIL;
    e->lru_next = sh->lru_head;

    if (sh->lru_head != NGX_LLMD_NIL) {
        sh->entries[sh->lru_head].lru_prev = i;
    } else {
        sh->lru_tail = i;
    }

    sh->lru_head = i;
}


/* Frees the least recently used entry and returns its index. */
static uint32_t
ngx_llmd_evict(ngx_llmd_shctx_t *sh)
{
    uint32_t   i, *p;

    i = sh->lru_tail;
    ngx_llmd_lru_unlink(sh, i);

    for (p = &sh->buckets[sh->entries[i].key & (sh->nbuckets - 1)];
         *p != NGX_LLMD_NIL;
         p = &sh->entries[*p].next)
    {
        if (*p == i) {
            *p = sh->entries[i].next;
            break;
        }
    }

    sh->used--;
    sh->evictions++;

    return i;
}


static uint32_t
ngx_llmd_insert(ngx_llmd_shctx_t *sh, uint64_t key)
{
    uint32_t           i, b;
    ngx_llmd_entry_t  *e;

    if (sh->free_head != NGX_LLMD_NIL) {
        i = sh->free_head;
        sh->free_head = sh->entries[i].next;

    } else {
        i = ngx_llmd_evict(sh);
    }

    e = &sh->entries[i];
    ngx_memzero(e->peers, sizeof(e->peers));
    e->key = key;

    b = key & (sh->nbuckets - 1);
    e->next = sh->buckets[b];
    sh->buckets[b] = i;

    ngx_llmd_lru_push_head(sh, i);
    sh->used++;

    return i;
}


/*
 * Whether the entry says this peer id (slot + 1) has its key; with
 * NGX_LLMD_KEY_HELD in flag, as held.  A peer not listed in a full entry
 * may have been pushed out by newer ones: a prefix that many peers share.
 * It counts as had, since the peer was found holding this prompt somewhere
 * (see match()), and a prompt is recorded as a whole prefix.
 */
static ngx_uint_t
ngx_llmd_entry_has(ngx_llmd_entry_t *e, uint16_t id, uint16_t flag)
{
    ngx_uint_t  k;

    for (k = 0; k < NGX_LLMD_KEY_PEERS && e->peers[k]; k++) {
        if ((e->peers[k] & NGX_LLMD_KEY_ID) == id) {
            return (e->peers[k] & flag) == flag;
        }
    }

    return k == NGX_LLMD_KEY_PEERS;
}


/* Candidates listed in an entry at depth keys[0..depth - 1]: each is known
 * to have been sent at least that much of the prompt (match() below). */
static void
ngx_llmd_match_note(ngx_llmd_entry_t *e, ngx_uint_t depth, ngx_int_t *slots,
    ngx_uint_t nslots, ngx_uint_t *known)
{
    uint16_t    id;
    ngx_uint_t  j, k;

    for (k = 0; k < NGX_LLMD_KEY_PEERS && e->peers[k]; k++) {
        id = e->peers[k] & NGX_LLMD_KEY_ID;

        for (j = 0; j < nslots; j++) {
            if (slots[j] == id - 1) {
                known[j] = ngx_max(known[j], depth);
                break;
            }
        }
    }
}


/*
 * The deepest i in [lo, hi) whose key keys[i - 1] lists peer id (with flag,
 * when flag is set), given that keys[lo - 1] does: a binary search, since a
 * peer's keys are recorded and evicted as a prefix.  hints[] (may be NULL)
 * gets the entries found.
 */
static ngx_uint_t
ngx_llmd_zone_deepest(ngx_llmd_shctx_t *sh, uint64_t *keys, ngx_uint_t lo,
    ngx_uint_t hi, uint16_t id, uint16_t flag, uint32_t *hints)
{
    uint32_t    e;
    ngx_uint_t  mid;

    while (hi - lo > 1) {
        mid = lo + (hi - lo) / 2;
        e = ngx_llmd_lookup(sh, keys[mid - 1]);

        if (e != NGX_LLMD_NIL && ngx_llmd_entry_has(&sh->entries[e], id, flag)) {
            lo = mid;
            if (hints) {
                hints[mid - 1] = e;
            }

        } else {
            hi = mid;
        }
    }

    return lo;
}


/*
 * For each candidate, how many leading blocks of the request it holds
 * (match[]) and how many are recorded for it at all, held or placed
 * (home[], may be NULL).  Both must start at zero.
 *
 * What a candidate holds: for a worker that publishes cache events, while
 * they are fresh, only what it said it stored; for any other peer, the
 * placements, which is all there is.  home[] is at least match[].
 *
 * A peer's blocks are recorded (or evicted by its worker) as a prefix, so
 * whether it has key i falls from true to false once along the chain, and
 * a binary search per peer finds its match in O(log n) lookups instead of
 * walking a long prompt's thousand keys; a second one, within the first's
 * result, finds the held part for a worker with events.
 *
 * Who to search for: the peers listed at the first key, and at the keys a
 * binary search for the deepest recorded key visits.  An entry lists at
 * most NGX_LLMD_KEY_PEERS peers, so a system prompt on more workers than
 * that lists only the latest; a conversation's own history, deeper down,
 * still names the worker that holds it.
 */
void
ngx_llmd_zone_match(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t *slots, ngx_uint_t nslots, ngx_uint_t *match,
    ngx_uint_t *home, uint32_t *hints)
{
    uint16_t           id;
    uint32_t           e, first;
    ngx_uint_t         j, lo, hi, mid, fresh, *known;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;
    fresh = ngx_llmd_redis_fresh(conf);

    /* the deepest known recorded key per candidate; match[] is free until
     * the end, and zero */
    known = match;

    ngx_shmtx_lock(&conf->shpool->mutex);

    first = ngx_llmd_lookup(sh, keys[0]);
    if (first == NGX_LLMD_NIL) {
        goto done;
    }

    if (hints) {
        hints[0] = first;   /* record() can skip this lookup */
    }

    ngx_llmd_match_note(&sh->entries[first], 1, slots, nslots, known);

    lo = 1;
    hi = nkeys + 1;

    while (hi - lo > 1) {
        mid = lo + (hi - lo) / 2;
        e = ngx_llmd_lookup(sh, keys[mid - 1]);

        if (e != NGX_LLMD_NIL) {
            ngx_llmd_match_note(&sh->entries[e], mid, slots, nslots, known);
            lo = mid;
            if (hints) {
                hints[mid - 1] = e;
            }

        } else {
            hi = mid;
        }
    }

    for (j = 0; j < nslots; j++) {

        if (known[j] == 0) {
            continue;       /* not recorded for this prompt */
        }

        id = (uint16_t) (slots[j] + 1);

        /* it has keys[known - 1]; find the deepest key it has */
        lo = ngx_llmd_zone_deepest(sh, keys, known[j], nkeys + 1, id, 0,
                                   hints);

        if (home) {
            home[j] = lo;
        }

        if (!(fresh && sh->peers[slots[j]].events)) {
            match[j] = lo;  /* placements are all there is */
            continue;
        }

        /* the held part of what is recorded, from the first key on */
        if (!ngx_llmd_entry_has(&sh->entries[first], id, NGX_LLMD_KEY_HELD)) {
            match[j] = 0;   /* placed here, evicted since */
            continue;
        }

        match[j] = ngx_llmd_zone_deepest(sh, keys, 1, lo + 1, id,
                                         NGX_LLMD_KEY_HELD, NULL);
    }

done:

    ngx_shmtx_unlock(&conf->shpool->mutex);
}


/*
 * Moves (or adds) peer id to the front of an entry.  When the entry is
 * full, the oldest placement makes room, or for an event the oldest peer;
 * when every peer there is held, a placement changes nothing: the
 * workers know better.
 */
static void
ngx_llmd_zone_front(ngx_llmd_entry_t *entry, uint16_t id, uint16_t flag,
    ngx_uint_t held)
{
    uint16_t    v;
    ngx_uint_t  k;

    for (k = 0; k < NGX_LLMD_KEY_PEERS; k++) {
        if ((entry->peers[k] & NGX_LLMD_KEY_ID) == id || entry->peers[k] == 0) {
            break;
        }
    }

    if (k == NGX_LLMD_KEY_PEERS) {
        while (k && (entry->peers[k - 1] & NGX_LLMD_KEY_HELD)) {
            k--;
        }

        if (k) {
            k--;

        } else if (held) {
            k = NGX_LLMD_KEY_PEERS - 1;

        } else {
            return;
        }

        v = id;

    } else {
        v = entry->peers[k] ? entry->peers[k] : id;
    }

    ngx_memmove(&entry->peers[1], &entry->peers[0], k * sizeof(uint16_t));
    entry->peers[0] = v | flag;
}


/* Other gateways learn a placement through Redis; when the ring is full
 * the oldest unsent placement is dropped. */
static void
ngx_llmd_zone_share(ngx_llmd_shctx_t *sh, uint64_t key, ngx_int_t slot)
{
    ngx_uint_t             head;
    ngx_llmd_placement_t  *pl;

    head = sh->placements_head;
    pl = &sh->placements[head % NGX_LLMD_PLACEMENTS];
    pl->key = key;
    pl->slot = (uint32_t) slot;
    sh->placements_head = head + 1;

    if (head + 1 - sh->placements_tail > NGX_LLMD_PLACEMENTS) {
        sh->placements_tail = head + 1 - NGX_LLMD_PLACEMENTS;
    }
}


/*
 * The peer in slot was sent (held == 0), or its worker says it stored
 * (held == 1), every block of this request.  recorded: how many leading
 * blocks match() found recorded for it, held or not.
 *
 * A placement keeps the held flag of a peer already listed, and takes the
 * place of the oldest placement when the entry is full, never of a held
 * peer: it says less than a worker's own event.
 */
void
ngx_llmd_zone_record(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t slot, ngx_uint_t share, uint32_t *hints,
    ngx_uint_t recorded, ngx_uint_t held)
{
    uint16_t           id, flag, want;
    uint32_t           e;
    ngx_uint_t         i;
    ngx_llmd_entry_t  *entry;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;
    id = (uint16_t) (slot + 1);
    flag = held ? NGX_LLMD_KEY_HELD : 0;

    /* what peers[0] must be for a key to need no update: a placement is
     * satisfied by either, an event only by the held flag */
    want = held ? (NGX_LLMD_KEY_ID | NGX_LLMD_KEY_HELD) : NGX_LLMD_KEY_ID;

    ngx_shmtx_lock(&conf->shpool->mutex);

    sh->clock++;

    /* a prompt this peer already holds whole, recorded recently: the
     * common case of a hot shared prefix costs one look at its last key */
    if (recorded == nkeys && hints && hints[nkeys - 1] != NGX_LLMD_NIL
        && sh->entries[hints[nkeys - 1]].key == keys[nkeys - 1]
        && (sh->entries[hints[nkeys - 1]].peers[0] & want) == (id | flag)
        && sh->clock - sh->entries[hints[nkeys - 1]].touched
           < sh->capacity / 8
        && !share)
    {
        ngx_shmtx_unlock(&conf->shpool->mutex);
        return;
    }

    for (i = 0; i < nkeys; i++) {

        /* match() may have found it already; another worker may have
         * evicted it since, so the key must still be there */
        e = (hints && hints[i] != NGX_LLMD_NIL
             && sh->entries[hints[i]].key == keys[i])
            ? hints[i] : ngx_llmd_lookup(sh, keys[i]);

        if (e == NGX_LLMD_NIL) {
            e = ngx_llmd_insert(sh, keys[i]);

        } else if ((sh->entries[e].peers[0] & want) == (id | flag)
                   && sh->clock - sh->entries[e].touched < sh->capacity / 8)
        {
            /* already this peer's, and recent enough: an approximate LRU
             * saves the relinking of long shared prefixes */
            if (share) {
                ngx_llmd_zone_share(sh, keys[i], slot);
            }
            continue;

        } else {
            ngx_llmd_lru_unlink(sh, e);
            ngx_llmd_lru_push_head(sh, e);
        }

        entry = &sh->entries[e];
        entry->touched = sh->clock;

        ngx_llmd_zone_front(entry, id, flag, held);

        if (share) {
            ngx_llmd_zone_share(sh, keys[i], slot);
        }
    }

    ngx_shmtx_unlock(&conf->shpool->mutex);
}


/* The worker no longer holds this key: what was held stays a placement. */
static void
ngx_llmd_entry_demote(ngx_llmd_entry_t *e, uint16_t id)
{
    ngx_uint_t  k;

    for (k = 0; k < NGX_LLMD_KEY_PEERS && e->peers[k]; k++) {
        if ((e->peers[k] & NGX_LLMD_KEY_ID) == id) {
            e->peers[k] &= NGX_LLMD_KEY_ID;
            return;
        }
    }
}


/* The peer no longer holds these prefixes (its cache evicted them); they
 * stay placed there, so the prefix keeps its home (see match()). */
void
ngx_llmd_zone_remove(ngx_llmd_srv_conf_t *conf, uint64_t *keys,
    ngx_uint_t nkeys, ngx_int_t slot)
{
    uint32_t           e;
    ngx_uint_t         i;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    ngx_shmtx_lock(&conf->shpool->mutex);

    for (i = 0; i < nkeys; i++) {
        e = ngx_llmd_lookup(sh, keys[i]);
        if (e != NGX_LLMD_NIL) {
            ngx_llmd_entry_demote(&sh->entries[e], (uint16_t) (slot + 1));
        }
    }

    ngx_shmtx_unlock(&conf->shpool->mutex);
}


/* The peer holds nothing any more (restart, snapshot resync), and keeps
 * its placements: a full walk, which is rare. */
void
ngx_llmd_zone_clear_peer(ngx_llmd_srv_conf_t *conf, ngx_int_t slot)
{
    uint32_t           i;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    ngx_shmtx_lock(&conf->shpool->mutex);

    for (i = sh->lru_head; i != NGX_LLMD_NIL; i = sh->entries[i].lru_next) {
        ngx_llmd_entry_demote(&sh->entries[i], (uint16_t) (slot + 1));
    }

    ngx_shmtx_unlock(&conf->shpool->mutex);
}
