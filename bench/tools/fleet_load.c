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


int
main(int argc, char **argv)
{
    int                  i, workers, hb_rate, ev_rate, sent_hb = 0;
    long                 sent_ev = 0, hb_count = 0, pending = 0;
    char                 buf[4096];
    size_t               len;
    double               t0, t, secs, next_tick;
    uint64_t             keys[4], seqs[1024] = {0}, x = 88172645463325252ULL;
    redisContext        *c;
    redisReply          *r;
    llmd_heartbeat_t     hb;
    llmd_cache_event_t   ev;

    if (argc < 6) {
        fprintf(stderr, "usage: fleet_load SOCKET SECONDS WORKERS "
                "HEARTBEATS_PER_S EVENTS_PER_S\n");
        return 2;
    }

    secs = atof(argv[2]);
    workers = atoi(argv[3]);
    hb_rate = atoi(argv[4]);
    ev_rate = atoi(argv[5]);
    if (workers < 1 || workers > 1024) {
        return 2;
    }

    c = redisConnectUnix(argv[1]);
    if (c == NULL || c->err) {
        fprintf(stderr, "redis: %s\n", c ? c->errstr : "no memory");
        return 1;
    }

    memset(&hb, 0, sizeof(hb));
    strcpy(hb.pool, "default");
    strcpy(hb.model, "m");
    hb.interval_ms = 1000 / (hb_rate ? hb_rate : 1);
    hb.ttl_ms = 10 * hb.interval_ms;
    hb.kv_total = 2048;
    hb.block_tokens = 16;
    hb.prefill_tps = 10000;
    hb.decode_ms_base = 8;
    hb.decode_ms_per_seq = 0.1;
    hb.events = 1;

    memset(&ev, 0, sizeof(ev));
    ev.block_size = 256;
    ev.keys = keys;
    ev.nkeys = 4;

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

        for (i = 0; i < workers; i++) {
            /* worker i beats hb_rate times a second, spread over ticks */
            if ((sent_hb + i) % (100 / (hb_rate ? hb_rate : 1)) != 0) {
                continue;
            }
            snprintf(hb.id, sizeof(hb.id), "bench-%d", i);
            snprintf(hb.addr, sizeof(hb.addr), "127.0.0.1:%d", 20000 + i);
            hb.seq = ++seqs[i];
            hb.ts_ms = now_ms();
            hb.running = (unsigned) (x % 32);
            if (llmd_wire_pack_heartbeat(&hb, buf, sizeof(buf), &len)
                == LLMD_WIRE_OK)
            {
                redisAppendCommand(c, "HSET llmd:default:hb %s %b", hb.id,
                                   buf, len);
                pending++;
                hb_count++;
            }
        }
        sent_hb++;

        for (i = 0; i < ev_rate / 100; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            keys[0] = x; keys[1] = x * 3; keys[2] = x * 5; keys[3] = x * 7;
            snprintf(ev.id, sizeof(ev.id), "bench-%d", (int) (x % workers));
            snprintf(ev.addr, sizeof(ev.addr), "127.0.0.1:%d",
                     20000 + (int) (x % workers));
            ev.type = (x & 1) ? LLMD_EVENT_STORED : LLMD_EVENT_REMOVED;
            ev.ts_ms = now_ms();
            if (llmd_wire_pack_event(&ev, buf, sizeof(buf), &len)
                == LLMD_WIRE_OK)
            {
                redisAppendCommand(c, "XADD llmd:default:events MAXLEN ~ "
                                   "100000 * e %b", buf, len);
                pending++;
                sent_ev++;
            }
        }

        while (pending > 0) {
            if (redisGetReply(c, (void **) &r) != REDIS_OK) {
                fprintf(stderr, "redis: %s\n", c->errstr);
                return 1;
            }
            freeReplyObject(r);
            pending--;
        }
    }

    t = mono() - t0;
    printf("sent %.0f heartbeats/s (%d workers) and %.0f events/s for %.1fs\n",
           hb_count / t, workers, sent_ev / t, t);

    redisFree(c);
    return 0;
}
