/*
 * llmd-fleet: the fleet state in Redis, decoded to JSON lines.
 *
 *   llmd-fleet --redis URL [--prefix P] [--pool P] workers
 *   llmd-fleet --redis URL [--prefix P] [--pool P] events [N]
 *   llmd-fleet --redis URL [--prefix P] [--pool P] snapshot WORKER_ID
 *   llmd-fleet [--prefix-block B] keys < body.json
 *
 * workers: one heartbeat per line (with its age); events: the last N
 * stream entries (100), oldest first; snapshot: one worker's snapshot;
 * keys: the gateway prefix keys of a request body, as the gateway computes
 * them.  Keys print as 16 hex digits, since JSON numbers lose 64-bit
 * precision in most readers.
 */

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmd_prefix.h"
#include "llmd_request.h"
#include "llmd_wire.h"
#include "base/redis_url.h"

static const char usage[] =
"usage: llmd-fleet --redis URL [--prefix P] [--pool P] workers|events [N]|snapshot ID\n"
"       llmd-fleet [--prefix-block B] keys < body.json\n";

static const char *type_name(uint32_t t)
{
    switch (t) {
    case LLMD_EVENT_STORED:   return "stored";
    case LLMD_EVENT_REMOVED:  return "removed";
    case LLMD_EVENT_CLEARED:  return "cleared";
    case LLMD_EVENT_SNAPSHOT: return "snapshot";
    default:                  return "unknown";
    }
}

/* Our own strings are plain, but a record may hold anything: escape. */
static void put_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void put_keys(const uint64_t *keys, uint32_t n)
{
    fputs("[", stdout);
    for (uint32_t i = 0; i < n; i++)
        printf("%s\"%016" PRIx64 "\"", i ? "," : "", keys[i]);
    fputs("]", stdout);
}

static uint64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void print_heartbeat(const llmd_heartbeat_t *hb)
{
    printf("{\"id\":");
    put_str(hb->id);
    printf(",\"pool\":");
    put_str(hb->pool);
    printf(",\"addr\":");
    put_str(hb->addr);
    printf(",\"model\":");
    put_str(hb->model);
    printf(",\"kv\":");
    put_str(hb->kv_addr);
    printf(",\"role\":\"%s\",\"seq\":%" PRIu64 ",\"ts_ms\":%" PRIu64
           ",\"age_ms\":%" PRId64 ",\"interval_ms\":%u,\"ttl_ms\":%u"
           ",\"running\":%u,\"waiting\":%u,\"queued_prefill_tokens\":%" PRIu64
           ",\"kv_used\":%u,\"kv_total\":%u,\"block_tokens\":%u"
           ",\"prefill_tps\":%.3f,\"decode_ms_base\":%.4f"
           ",\"decode_ms_per_seq\":%.5f,\"ttft_ms\":%.3f"
           ",\"requests_total\":%" PRIu64 ",\"prompt_tokens_total\":%" PRIu64
           ",\"generation_tokens_total\":%" PRIu64
           ",\"prefix_hit_tokens_total\":%" PRIu64 ",\"events\":%u}\n",
           llmd_role_name(hb->role), hb->seq, hb->ts_ms,
           (int64_t) (unix_ms() - hb->ts_ms), hb->interval_ms, hb->ttl_ms,
           hb->running, hb->waiting, hb->queued_prefill_tokens, hb->kv_used,
           hb->kv_total, hb->block_tokens, hb->prefill_tps, hb->decode_ms_base,
           hb->decode_ms_per_seq, hb->ttft_ms, hb->requests_total,
           hb->prompt_tokens_total, hb->generation_tokens_total,
           hb->prefix_hit_tokens_total, hb->events);
}

static int print_event(const char *stream_id, const char *buf, size_t len)
{
    static uint64_t keys[LLMD_WIRE_MAX_KEYS];
    llmd_cache_event_t ev = { .keys = keys, .max_keys = LLMD_WIRE_MAX_KEYS };
    llmd_wire_status_t st = llmd_wire_unpack_event(buf, len, &ev);

    if (st != LLMD_WIRE_OK) {
        printf("{\"error\":\"%s\"}\n", llmd_wire_strerror(st));
        return -1;
    }
    fputs("{", stdout);
    if (stream_id)
        printf("\"stream_id\":\"%s\",", stream_id);
    printf("\"type\":\"%s\",\"id\":", type_name(ev.type));
    put_str(ev.id);
    printf(",\"addr\":");
    put_str(ev.addr);
    printf(",\"ts_ms\":%" PRIu64 ",\"bs\":%u,\"nkeys\":%u,\"keys\":",
           ev.ts_ms, ev.block_size, ev.nkeys);
    put_keys(keys, ev.nkeys);
    fputs("}\n", stdout);
    return 0;
}

/* ------------------------------------------------------------------------ */

static redisContext *connect_url(const char *s)
{
    struct timeval tv = { 2, 0 };
    struct redis_url url;
    redisContext *c;
    redisReply *r;
    char err[256];

    if (redis_url_parse(s, &url, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmd-fleet: --redis: %s\n", err);
        exit(2);
    }
    c = url.path[0] ? redisConnectUnixWithTimeout(url.path, tv)
                    : redisConnectWithTimeout(url.host, url.port, tv);
    if (c == NULL || c->err) {
        fprintf(stderr, "llmd-fleet: cannot connect: %s\n",
                c ? c->errstr : "out of memory");
        exit(1);
    }
    redisSetTimeout(c, tv);
    if (url.password[0]) {
        r = url.user[0] ? redisCommand(c, "AUTH %s %s", url.user, url.password)
                        : redisCommand(c, "AUTH %s", url.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "llmd-fleet: AUTH: %s\n", r ? r->str : c->errstr);
            exit(1);
        }
        freeReplyObject(r);
    }
    if (url.db) {
        r = redisCommand(c, "SELECT %d", url.db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "llmd-fleet: SELECT: %s\n", r ? r->str : c->errstr);
            exit(1);
        }
        freeReplyObject(r);
    }
    return c;
}

static redisReply *must(redisContext *c, redisReply *r)
{
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "llmd-fleet: %s\n", r ? r->str : c->errstr);
        exit(1);
    }
    return r;
}

static int cmd_workers(redisContext *c, const char *key)
{
    redisReply *r = must(c, redisCommand(c, "HGETALL %s", key));
    int bad = 0;

    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        llmd_heartbeat_t hb;
        redisReply *v = r->element[i + 1];
        llmd_wire_status_t st = llmd_wire_unpack_heartbeat(v->str, v->len, &hb);

        if (st != LLMD_WIRE_OK) {
            printf("{\"field\":");
            put_str(r->element[i]->str);
            printf(",\"error\":\"%s\"}\n", llmd_wire_strerror(st));
            bad = 1;
            continue;
        }
        print_heartbeat(&hb);
    }
    freeReplyObject(r);
    return bad;
}

static int cmd_events(redisContext *c, const char *key, long n)
{
    redisReply *r = must(c, redisCommand(c, "XREVRANGE %s + - COUNT %ld", key, n));
    int bad = 0;

    /* newest first from Redis; print oldest first */
    for (size_t i = r->elements; r->type == REDIS_REPLY_ARRAY && i-- > 0;) {
        redisReply *entry = r->element[i], *fields;

        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2)
            continue;
        fields = entry->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2)
            if (strcmp(fields->element[f]->str, "e") == 0)
                bad |= print_event(entry->element[0]->str,
                                   fields->element[f + 1]->str,
                                   fields->element[f + 1]->len) != 0;
    }
    freeReplyObject(r);
    return bad;
}

static int cmd_snapshot(redisContext *c, const char *key)
{
    redisReply *r = must(c, redisCommand(c, "GET %s", key));
    int rc = 1;

    if (r->type == REDIS_REPLY_STRING)
        rc = print_event(NULL, r->str, r->len) != 0;
    else
        fprintf(stderr, "llmd-fleet: no snapshot at %s\n", key);
    freeReplyObject(r);
    return rc;
}

static int cmd_keys(long block)
{
    static uint64_t keys[LLMD_PREFIX_MAX_BLOCKS_DEFAULT];
    static unsigned char scratch[LLMD_PREFIX_BLOCK_MAX];
    size_t len = 0, cap = 1 << 16;
    char *body = malloc(cap);
    llmd_request_t rq;
    size_t n;

    while (body) {
        n = fread(body + len, 1, cap - len, stdin);
        len += n;
        if (len < cap)
            break;
        body = realloc(body, cap *= 2);
    }
    if (body == NULL)
        return 1;
    if (llmd_request_inspect(&rq, &llmd_libc_allocator, body, len, (size_t) block,
                             LLMD_PREFIX_MAX_BLOCKS_DEFAULT, scratch, keys)
        != LLMD_REQ_OK) {
        fprintf(stderr, "llmd-fleet: %s\n", rq.error);
        free(body);
        return 1;
    }
    printf("{\"bs\":%ld,\"total_bytes\":%" PRIu64 ",\"keys\":", block,
           rq.prefix.total_bytes);
    put_keys(keys, (uint32_t) rq.prefix.nkeys);
    fputs("}\n", stdout);
    free(body);
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *prefix = LLMD_KEY_PREFIX_DEFAULT, *pool = LLMD_KEY_POOL_DEFAULT;
    long block = LLMD_PREFIX_BLOCK_DEFAULT;
    char key[512];
    redisContext *c;
    int i, rc;

    for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc)
            goto bad;
        if (strcmp(argv[i], "--redis") == 0)
            url = argv[i + 1];
        else if (strcmp(argv[i], "--prefix") == 0)
            prefix = argv[i + 1];
        else if (strcmp(argv[i], "--pool") == 0)
            pool = argv[i + 1];
        else if (strcmp(argv[i], "--prefix-block") == 0)
            block = strtol(argv[i + 1], NULL, 10);
        else
            goto bad;
    }
    if (i >= argc)
        goto bad;
    if (strcmp(argv[i], "keys") == 0) {
        if (block < LLMD_PREFIX_BLOCK_MIN || block > LLMD_PREFIX_BLOCK_MAX)
            goto bad;
        return cmd_keys(block);
    }
    if (url == NULL)
        goto bad;
    c = connect_url(url);
    if (strcmp(argv[i], "workers") == 0 && i + 1 == argc) {
        snprintf(key, sizeof(key), "%s%s" LLMD_KEY_HB, prefix, pool);
        rc = cmd_workers(c, key);
    } else if (strcmp(argv[i], "events") == 0 && i + 2 >= argc) {
        snprintf(key, sizeof(key), "%s%s" LLMD_KEY_EVENTS, prefix, pool);
        rc = cmd_events(c, key, i + 1 < argc ? strtol(argv[i + 1], NULL, 10) : 100);
    } else if (strcmp(argv[i], "snapshot") == 0 && i + 2 == argc) {
        snprintf(key, sizeof(key), "%s%s" LLMD_KEY_SNAP "%s", prefix, pool, argv[i + 1]);
        rc = cmd_snapshot(c, key);
    } else {
        redisFree(c);
        goto bad;
    }
    redisFree(c);
    return rc;

bad:
    fputs(usage, stderr);
    return 2;
}
