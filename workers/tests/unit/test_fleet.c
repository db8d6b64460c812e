/* The fleet-state pieces: Redis URLs, the decode-step fit, prefix claims
 * and the advertised-prefix map, and the fleet flags. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/config.h"
#include "engine/engine_stats.h"
#include "sched/kv_blocks.h"
#include "llmd_request.h"
#include "llmd_wire.h"
#include "sched/prefix_claim.h"
#include "sched/prefix_map.h"
#include "server/openai_api.h"
#include "base/redis_url.h"
#include "suites.h"

static int parse(const char *s, struct redis_url *u)
{
    char err[128];

    return redis_url_parse(s, u, err, sizeof(err));
}

START_TEST(url_tcp)
{
    struct redis_url u;

    ck_assert_int_eq(parse("redis://127.0.0.1:6380", &u), 0);
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.db, 0);
    ck_assert_str_eq(u.password, "");
    ck_assert_str_eq(u.path, "");

    ck_assert_int_eq(parse("redis://localhost", &u), 0);
    ck_assert_int_eq(u.port, 6379);

    ck_assert_int_eq(parse("redis://alice:s3cr%40t@redis.local:7000/3", &u), 0);
    ck_assert_str_eq(u.user, "alice");
    ck_assert_str_eq(u.password, "s3cr@t");
    ck_assert_str_eq(u.host, "redis.local");
    ck_assert_int_eq(u.port, 7000);
    ck_assert_int_eq(u.db, 3);

    ck_assert_int_eq(parse("redis://:pw@h:1", &u), 0);
    ck_assert_str_eq(u.user, "");
    ck_assert_str_eq(u.password, "pw");

    ck_assert_int_eq(parse("redis://[::1]:6379/1", &u), 0);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.db, 1);
}
END_TEST

START_TEST(url_unix)
{
    struct redis_url u;
    char buf[64];

    ck_assert_int_eq(parse("unix:///tmp/r.sock", &u), 0);
    ck_assert_str_eq(u.path, "/tmp/r.sock");
    ck_assert_str_eq(u.host, "");
    ck_assert_int_eq(parse("unix:///tmp/r.sock?password=a%26b&db=2", &u), 0);
    ck_assert_str_eq(u.password, "a&b");
    ck_assert_int_eq(u.db, 2);
    ck_assert_int_eq(parse("unix:///tmp/r.sock?user=bob&password=x", &u), 0);
    ck_assert_str_eq(u.user, "bob");
    redis_url_describe(&u, buf, sizeof(buf));
    ck_assert_str_eq(buf, "unix:/tmp/r.sock");
}
END_TEST

START_TEST(url_bad)
{
    static const char *bad[] = {
        "", "localhost:6379", "http://h:1", "redis://", "redis://:6379",
        "redis://h:0", "redis://h:65536", "redis://h:12x", "redis://h:1/x",
        "redis://h:1/-1", "redis://user@h:1", "redis://u:@h:1",
        "redis://u:p%4@h:1", "redis://[::1:1", "redis://h:1?password=x",
        "unix://", "unix://relative.sock", "unix:///s?pass=x",
        "unix:///s?user=bob", "unix:///s?db=z", "unix:///s?password=",
        "unix:///aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
    };
    struct redis_url u;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(parse(bad[i], &u) != 0, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(fleet_flags)
{
    struct worker_config cfg;
    char err[256];
    char *ok[] = { "w", "--redis", "unix:///tmp/x.sock", "--pool", "p1",
                   "--worker-id", "w-1", "--advertise", "10.0.0.1:8000",
                   "--heartbeat-ms", "50", "--prefix-block", "128", NULL };
    char *bad_url[] = { "w", "--redis", "redis://h:99999", NULL };
    char *bad_block[] = { "w", "--prefix-block", "8", NULL };
    char *bad_adv[] = { "w", "--advertise", "nohost", NULL };
    char *bad_hb[] = { "w", "--heartbeat-ms", "0", NULL };

    ck_assert_int_eq(config_parse(&cfg, 13, ok, err, sizeof(err)), CONFIG_OK);
    ck_assert_str_eq(cfg.pool, "p1");
    ck_assert_str_eq(cfg.worker_id, "w-1");
    ck_assert_str_eq(cfg.advertise, "10.0.0.1:8000");
    ck_assert_int_eq(cfg.heartbeat_ms, 50);
    ck_assert_int_eq(cfg.prefix_block, 128);
    ck_assert_str_eq(cfg.redis_prefix, "llmd:");
    ck_assert_int_eq(config_parse(&cfg, 3, bad_url, err, sizeof(err)), CONFIG_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "--redis"));
    ck_assert_int_eq(config_parse(&cfg, 3, bad_block, err, sizeof(err)), CONFIG_ERROR);
    ck_assert_int_eq(config_parse(&cfg, 3, bad_adv, err, sizeof(err)), CONFIG_ERROR);
    ck_assert_int_eq(config_parse(&cfg, 3, bad_hb, err, sizeof(err)), CONFIG_ERROR);
}
END_TEST

/* ------------------------------------------------------------------------ */

START_TEST(fit_recovers_line)
{
    struct step_fit f;
    double base, slope;

    step_fit_init(&f, 256);
    ck_assert_int_eq(step_fit_get(&f, &base, &slope), -1);
    for (int i = 0; i < 1000; i++) {
        int batch = 1 + i % 64;
        double noise = ((i * 7919) % 11 - 5) * 0.01;
        step_fit_add(&f, batch, 6.0 + 0.05 * batch + noise);
    }
    ck_assert_int_eq(step_fit_get(&f, &base, &slope), 0);
    ck_assert_double_eq_tol(base, 6.0, 0.05);
    ck_assert_double_eq_tol(slope, 0.05, 0.002);
}
END_TEST

START_TEST(fit_forgets_and_degenerates)
{
    struct step_fit f;
    double base, slope;

    /* one batch size only: the mean, no slope */
    step_fit_init(&f, 64);
    for (int i = 0; i < 100; i++)
        step_fit_add(&f, 1, 8.0);
    ck_assert_int_eq(step_fit_get(&f, &base, &slope), 0);
    ck_assert_double_eq_tol(base, 8.0, 1e-9);
    ck_assert_double_eq_tol(slope, 0, 1e-12);

    /* the device slowed down: the fit follows within a few horizons */
    for (int i = 0; i < 2000; i++)
        step_fit_add(&f, 1 + i % 8, 20.0 + 1.0 * (1 + i % 8));
    ck_assert_int_eq(step_fit_get(&f, &base, &slope), 0);
    ck_assert_double_eq_tol(base, 20.0, 0.1);
    ck_assert_double_eq_tol(slope, 1.0, 0.02);

    /* a falling line is noise: clamped to a flat one */
    step_fit_init(&f, 64);
    for (int i = 0; i < 100; i++)
        step_fit_add(&f, 1 + i % 4, 10.0 - (1 + i % 4));
    ck_assert_int_eq(step_fit_get(&f, &base, &slope), 0);
    ck_assert(slope >= 0);
    ck_assert(base >= 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* prefix claims and the map */

#define BT 16

static char *completion_body(const char *prompt)
{
    char *b = malloc(strlen(prompt) + 64);

    sprintf(b, "{\"prompt\":\"%s\",\"max_tokens\":4}", prompt);
    return b;
}

/* the worker's path: the body parsed once, the claim from its canonical
 * bytes and (byte-level) tokens */
static struct prefix_claim *claim_for(const char *prompt, size_t block)
{
    char *body = completion_body(prompt);
    struct api_request rq;
    struct api_error err;
    struct prefix_claim *c;

    ck_assert_int_eq(api_parse_request(API_COMPLETIONS, body, strlen(body),
                                       &rq, &err), 0);
    c = prefix_claim_new(rq.canon, rq.canon_len, rq.prompt, rq.n_prompt,
                         block, BT, 1024);
    api_request_free(&rq);
    free(body);
    return c;
}

static char *letters(int n, char c)
{
    char *s = malloc((size_t) n + 1);

    memset(s, c, (size_t) n);
    s[n] = '\0';
    return s;
}

START_TEST(claim_matches_gateway_keys)
{
    char *prompt = letters(600, 'a');
    char *body = completion_body(prompt);
    struct prefix_claim *c = claim_for(prompt, 256);
    uint64_t keys[8];
    unsigned char scratch[256];
    llmd_request_t rq;

    ck_assert_int_eq(llmd_request_inspect(&rq, &llmd_libc_allocator, body,
                                          strlen(body), 256, 8, scratch, keys),
                     LLMD_REQ_OK);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->nkeys, 2);
    ck_assert_uint_eq(rq.prefix.nkeys, 2);
    ck_assert(c->keys[0] == keys[0] && c->keys[1] == keys[1]);
    /* bytes are tokens here: key 0 is 256 tokens = 16 blocks */
    ck_assert_uint_eq(c->cover[0], 16);
    ck_assert_uint_eq(c->cover[1], 32);
    ck_assert_uint_eq(c->nblocks, 600 / BT);
    /* too short for one KV block: nothing to claim */
    ck_assert_ptr_null(claim_for("abc", 16));
    prefix_claim_free(c);
    free(body);
    free(prompt);
}
END_TEST

struct recorder {
    uint32_t    type[256];
    uint64_t    key[256];
    int         n;
};

static void record(void *arg, uint32_t type, uint64_t key)
{
    struct recorder *r = arg;

    if (r->n < 256) {
        r->type[r->n] = type;
        r->key[r->n] = key;
        r->n++;
    }
}

START_TEST(map_stores_once_and_removes_chains)
{
    struct recorder rec = { 0 };
    struct prefix_map *m = prefix_map_new(64, 1024, record, &rec);
    char *p1 = letters(64 * 4, 'x');         /* 4 keys of 64 bytes */
    struct prefix_claim *a = claim_for(p1, 64), *b, *c;
    uint64_t k[4], block2;

    ck_assert_ptr_nonnull(a);
    memcpy(k, a->keys, sizeof(k));
    block2 = a->blocks[9];                  /* in key 2's range: blocks 8..11 */
    prefix_map_adopt(m, a);
    ck_assert_int_eq(rec.n, 4);
    ck_assert_uint_eq(rec.type[0], LLMD_EVENT_STORED);
    ck_assert_uint_eq(prefix_map_count(m), 4);

    /* the same prompt again: nothing new */
    b = claim_for(p1, 64);
    prefix_map_adopt(m, b);
    ck_assert_int_eq(rec.n, 4);

    /* a block of key 2 goes: keys 2 and 3 go, 0 and 1 stay */
    prefix_map_block_removed(m, block2);
    ck_assert_int_eq(rec.n, 6);
    ck_assert_uint_eq(rec.type[4], LLMD_EVENT_REMOVED);
    ck_assert(rec.key[4] == k[2] && rec.key[5] == k[3]);
    ck_assert_uint_eq(prefix_map_count(m), 2);

    /* an unknown block changes nothing */
    prefix_map_block_removed(m, 12345);
    ck_assert_int_eq(rec.n, 6);

    /* prefilled again: only keys 2 and 3 are news */
    c = claim_for(p1, 64);
    prefix_map_adopt(m, c);
    ck_assert_int_eq(rec.n, 8);
    ck_assert(rec.key[6] == k[2] && rec.key[7] == k[3]);
    prefix_map_free(m);
    free(p1);
}
END_TEST

START_TEST(map_stays_bounded)
{
    struct recorder rec = { 0 };
    struct prefix_map *m = prefix_map_new(6, 1024, record, &rec);
    char *p1 = letters(64 * 4, 'x'), *p2 = letters(64 * 4, 'y');

    prefix_map_adopt(m, claim_for(p1, 64));
    prefix_map_adopt(m, claim_for(p2, 64));     /* 8 > 6: p1's keys go */
    ck_assert_uint_eq(prefix_map_count(m), 4);
    ck_assert_int_eq(rec.n, 4 + 4 + 4);
    ck_assert_uint_eq(rec.type[4], LLMD_EVENT_REMOVED);
    ck_assert_uint_eq(rec.type[8], LLMD_EVENT_STORED);
    prefix_map_free(m);
    free(p1);
    free(p2);
}
END_TEST

Suite *fleet_suite(void)
{
    Suite *s = suite_create("fleet");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, url_tcp);
    tcase_add_test(tc, url_unix);
    tcase_add_test(tc, url_bad);
    tcase_add_test(tc, fleet_flags);
    tcase_add_test(tc, fit_recovers_line);
    tcase_add_test(tc, fit_forgets_and_degenerates);
    tcase_add_test(tc, claim_matches_gateway_keys);
    tcase_add_test(tc, map_stores_once_and_removes_chains);
    tcase_add_test(tc, map_stays_bounded);
    suite_add_tcase(s, tc);
    return s;
}
