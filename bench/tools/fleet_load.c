/*
 * Fleet-state load for the gateway's Redis mirror: N workers' heartbeats
 * at a given rate plus a stream of cache events, written the way workers
 * write them (common/llmd_wire), pipelined so the generator keeps up.
 *
 *   fleet_load SOCKET SECONDS WORKERS HEARTBEATS_PER_S EVENTS_PER_S
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "llmd_wire.h"


static uint64_t
now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static double
mono(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


#define HB_KEY      LLMD_KEY_PREFIX_DEFAULT LLMD_KEY_POOL_DEFAULT LLMD_KEY_HB
#define EVENTS_KEY  LLMD_KEY_PREFIX_DEFAULT LLMD_KEY_POOL_DEFAULT LLMD_KEY_EVENTS

/* what one run sends, and has sent */
struct load {
    redisContext        *c;
    int                  workers;
    int                  hb_rate;
    int                  ev_rate;
    long                 ticks;
    long                 hb_count;
    long                 ev_count;
    long                 pending;
    uint64_t             seqs[1024];
    uint64_t             x;             /* xorshift state */
    uint64_t             keys[4];
    llmd_heartbeat_t     hb;
    llmd_cache_event_t   ev;
};


/* the fields every record repeats */
static void
fixed_fields(struct load *ld)
{
    llmd_heartbeat_t  *hb = &ld->hb;

    memset(hb, 0, sizeof(*hb));
    strcpy(hb->pool, LLMD_KEY_POOL_DEFAULT);
    strcpy(hb->model, "m");
    hb->interval_ms = 1000 / (ld->hb_rate ? ld->hb_rate : 1);
    hb->ttl_ms = 10 * hb->interval_ms;
    hb->kv_total = 2048;
    hb->block_tokens = 16;
    hb->prefill_tps = 10000;
    hb->decode_ms_base = 8;
    hb->decode_ms_per_seq = 0.1;
    hb->events = 1;

    memset(&ld->ev, 0, sizeof(ld->ev));
    ld->ev.block_size = 256;
    ld->ev.keys = ld->keys;
    ld->ev.nkeys = 4;
}


/* worker i beats hb_rate times a second, spread over the ticks */
static void
tick_heartbeats(struct load *ld)
{
    int     i;
    char    buf[4096];
    size_t  len;

    for (i = 0; i < ld->workers; i++) {
        if ((ld->ticks + i) % (100 / (ld->hb_rate ? ld->hb_rate : 1)) != 0) {
            continue;
        }
        snprintf(ld->hb.id, sizeof(ld->hb.id), "bench-%d", i);
        snprintf(ld->hb.addr, sizeof(ld->hb.addr), "127.0.0.1:%d", 20000 + i);
        ld->hb.seq = ++ld->seqs[i];
        ld->hb.ts_ms = now_ms();
        ld->hb.running = (unsigned) (ld->x % 32);
        if (llmd_wire_pack_heartbeat(&ld->hb, buf, sizeof(buf), &len)
            == LLMD_WIRE_OK)
        {
            redisAppendCommand(ld->c, "HSET " HB_KEY " %s %b", ld->hb.id,
                               buf, len);
            ld->pending++;
            ld->hb_count++;
        }
    }
}


/* a tick's share of the events: random keys, stored or removed */
static void
tick_events(struct load *ld)
{
    int        i;
    char       buf[4096];
    size_t     len;
    uint64_t   x;

    for (i = 0; i < ld->ev_rate / 100; i++) {
        x = ld->x;
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        ld->x = x;
        ld->keys[0] = x; ld->keys[1] = x * 3; ld->keys[2] = x * 5;
        ld->keys[3] = x * 7;
        snprintf(ld->ev.id, sizeof(ld->ev.id), "bench-%d",
                 (int) (x % ld->workers));
        snprintf(ld->ev.addr, sizeof(ld->ev.addr), "127.0.0.1:%d",
                 20000 + (int) (x % ld->workers));
        ld->ev.type = (x & 1) ? LLMD_EVENT_STORED : LLMD_EVENT_REMOVED;
        ld->ev.ts_ms = now_ms();
        if (llmd_wire_pack_event(&ld->ev, buf, sizeof(buf), &len)
            == LLMD_WIRE_OK)
        {
            redisAppendCommand(ld->c, "XADD " EVENTS_KEY " MAXLEN ~ "
                               "100000 * e %b", buf, len);
            ld->pending++;
            ld->ev_count++;
        }
    }
}


int
main(int argc, char **argv)
{
    double               t0, t, secs, next_tick;
    redisReply          *r;
    static struct load   ld;

    if (argc < 6) {
        fprintf(stderr, "usage: fleet_load SOCKET SECONDS WORKERS "
                "HEARTBEATS_PER_S EVENTS_PER_S\n");
        return 2;
    }

    secs = atof(argv[2]);
    ld.workers = atoi(argv[3]);
    ld.hb_rate = atoi(argv[4]);
    ld.ev_rate = atoi(argv[5]);
    ld.x = 88172645463325252ULL;
    if (ld.workers < 1 || ld.workers > 1024) {
        return 2;
    }

    ld.c = redisConnectUnix(argv[1]);
    if (ld.c == NULL || ld.c->err) {
        fprintf(stderr, "redis: %s\n", ld.c ? ld.c->errstr : "no memory");
        return 1;
    }

    fixed_fields(&ld);

    t0 = mono();
    next_tick = t0;

    /* 100 ticks a second: each sends its share of both rates */
    while ((t = mono()) - t0 < secs) {
        if (t < next_tick) {
            struct timespec  d = { 0, (long) ((next_tick - t) * 1e9) };
            nanosleep(&d, NULL);
            continue;
        }
        next_tick += 0.01;

        tick_heartbeats(&ld);
        ld.ticks++;
        tick_events(&ld);

        while (ld.pending > 0) {
            if (redisGetReply(ld.c, (void **) &r) != REDIS_OK) {
                fprintf(stderr, "redis: %s\n", ld.c->errstr);
                return 1;
            }
            freeReplyObject(r);
            ld.pending--;
        }
    }

    t = mono() - t0;
    printf("sent %.0f heartbeats/s (%d workers) and %.0f events/s for %.1fs\n",
           ld.hb_count / t, ld.workers, ld.ev_count / t, t);

    redisFree(ld.c);
    return 0;
}
