/*
 * Unit tests for the fleet-state codec: round trips, truncated, hostile
 * and mistyped input.
 */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "llmd_wire.h"

static char  buf[LLMD_WIRE_MAX_RECORD];


static void
sample_heartbeat(llmd_heartbeat_t *hb)
{
    memset(hb, 0, sizeof(*hb));
    strcpy(hb->id, "worker-1");
    strcpy(hb->pool, "default");
    strcpy(hb->addr, "127.0.0.1:8001");
    strcpy(hb->model, "llama-3-8b");
    hb->role = LLMD_ROLE_DECODE;
    hb->seq = 42;
    hb->ts_ms = 1795549178123ULL;
    hb->interval_ms = 100;
    hb->ttl_ms = 1000;
    hb->running = 7;
    hb->waiting = 3;
    hb->queued_prefill_tokens = 12345;
    hb->kv_used = 100;
    hb->kv_total = 2048;
    hb->block_tokens = 16;
    hb->prefill_tps = 8000.5;
    hb->decode_ms_base = 6.25;
    hb->decode_ms_per_seq = 0.125;
    hb->ttft_ms = 85.5;
    hb->bytes_per_token = 3.75;
    hb->requests_total = 1000;
    hb->prompt_tokens_total = 1u << 30;
    hb->generation_tokens_total = 99;
    hb->prefix_hit_tokens_total = 5;
    hb->events = 1;
}


START_TEST(heartbeat_round_trip)
{
    size_t            len;
    llmd_heartbeat_t  a, b;

    sample_heartbeat(&a);
    ck_assert_int_eq(llmd_wire_pack_heartbeat(&a, buf, sizeof(buf), &len),
                     LLMD_WIRE_OK);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &b), LLMD_WIRE_OK);
    ck_assert_mem_eq(&a, &b, sizeof(a));

    /* a buffer too small is an error, not an overflow */
    ck_assert_int_eq(llmd_wire_pack_heartbeat(&a, buf, 20, &len),
                     LLMD_WIRE_ENOSPACE);
}
END_TEST


START_TEST(heartbeat_truncated_everywhere)
{
    size_t            len, cut;
    llmd_heartbeat_t  a, b;

    sample_heartbeat(&a);
    llmd_wire_pack_heartbeat(&a, buf, sizeof(buf), &len);

    for (cut = 0; cut < len; cut++) {
        ck_assert_int_ne(llmd_wire_unpack_heartbeat(buf, cut, &b),
                         LLMD_WIRE_OK);
    }
}
END_TEST


/* Builds a record by hand with msgpack, for shapes our packer never makes. */
static size_t
build(void (*fn)(msgpack_packer *pk))
{
    msgpack_sbuffer  sb;
    msgpack_packer   pk;
    size_t           len;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    memcpy(buf, sb.data, sb.size);
    len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return len;
}


static void
kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_str_with_body(pk, v, strlen(v));
}


static void
kv_uint(msgpack_packer *pk, const char *k, uint64_t v)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_uint64(pk, v);
}


static void
hb_wrong_version(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    kv_uint(pk, "v", 99);
    kv_str(pk, "id", "w");
}

static void
hb_no_version(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    kv_str(pk, "id", "w");
}

static void
hb_wrong_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    kv_uint(pk, "v", 1);
    kv_str(pk, "id", "w");
    kv_str(pk, "run", "seven");
}

static void
hb_long_string(msgpack_packer *pk)
{
    char  s[300];

    memset(s, 'a', sizeof(s) - 1);
    s[sizeof(s) - 1] = '\0';
    msgpack_pack_map(pk, 2);
    kv_uint(pk, "v", 1);
    kv_str(pk, "id", s);
}

static void
hb_negative_float(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    kv_uint(pk, "v", 1);
    kv_str(pk, "id", "w");
    msgpack_pack_str_with_body(pk, "ptps", 4);
    msgpack_pack_double(pk, -5.0);
}

static void
hb_unknown_fields(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    kv_uint(pk, "v", 1);
    kv_str(pk, "id", "w");
    kv_str(pk, "future_field", "x");
    msgpack_pack_str_with_body(pk, "nested", 6);
    msgpack_pack_array(pk, 2);
    msgpack_pack_nil(pk);
    msgpack_pack_true(pk);
}

static void
not_a_map(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint32(pk, 1);
}


START_TEST(heartbeat_hostile)
{
    size_t            len;
    llmd_heartbeat_t  hb;

    len = build(hb_wrong_version);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb),
                     LLMD_WIRE_EVERSION);
    len = build(hb_no_version);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb),
                     LLMD_WIRE_EVERSION);
    len = build(hb_wrong_type);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb),
                     LLMD_WIRE_ETYPE);
    len = build(hb_long_string);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb),
                     LLMD_WIRE_ETOOBIG);
    len = build(hb_negative_float);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb),
                     LLMD_WIRE_ETYPE);
    len = build(not_a_map);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb),
                     LLMD_WIRE_ETYPE);

    /* forward compatible: unknown fields are skipped */
    len = build(hb_unknown_fields);
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len, &hb), LLMD_WIRE_OK);
    ck_assert_str_eq(hb.id, "w");

    /* trailing bytes after the record */
    len = build(hb_unknown_fields);
    buf[len] = (char) 0xc0;
    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, len + 1, &hb),
                     LLMD_WIRE_ETYPE);

    ck_assert_int_eq(llmd_wire_unpack_heartbeat(buf, LLMD_WIRE_MAX_RECORD + 1,
                                                &hb), LLMD_WIRE_ETOOBIG);
}
END_TEST


START_TEST(event_round_trip_and_bounds)
{
    size_t              len;
    uint32_t            i;
    uint64_t            keys[100], out[100];
    llmd_cache_event_t  a, b;

    memset(&a, 0, sizeof(a));
    strcpy(a.id, "worker-1");
    strcpy(a.addr, "127.0.0.1:8001");
    a.type = LLMD_EVENT_STORED;
    a.ts_ms = 123;
    a.block_size = 256;
    for (i = 0; i < 100; i++) {
        keys[i] = 0x9e3779b97f4a7c15ULL * (i + 1);
    }
    a.keys = keys;
    a.nkeys = 100;

    ck_assert_int_eq(llmd_wire_pack_event(&a, buf, sizeof(buf), &len),
                     LLMD_WIRE_OK);

    b.keys = out;
    b.max_keys = 100;
    ck_assert_int_eq(llmd_wire_unpack_event(buf, len, &b), LLMD_WIRE_OK);
    ck_assert_uint_eq(b.nkeys, 100);
    ck_assert_uint_eq(b.type, LLMD_EVENT_STORED);
    ck_assert_uint_eq(b.block_size, 256);
    ck_assert_str_eq(b.addr, "127.0.0.1:8001");
    ck_assert_mem_eq(out, keys, sizeof(keys));

    /* more keys than the reader's buffer: rejected, not copied */
    b.keys = out;
    b.max_keys = 99;
    ck_assert_int_eq(llmd_wire_unpack_event(buf, len, &b), LLMD_WIRE_ETOOBIG);

    /* bad event type */
    a.type = 9;
    llmd_wire_pack_event(&a, buf, sizeof(buf), &len);
    b.max_keys = 100;
    ck_assert_int_eq(llmd_wire_unpack_event(buf, len, &b), LLMD_WIRE_ETYPE);
}
END_TEST


START_TEST(gateway_round_trip)
{
    size_t                len;
    llmd_gateway_load_t  *a, *b;

    a = calloc(1, sizeof(*a));
    b = calloc(1, sizeof(*b));
    strcpy(a->id, "gw-1");
    a->seq = 5;
    a->ts_ms = 77;
    a->npeers = 2;
    strcpy(a->peers[0].addr, "127.0.0.1:1");
    a->peers[0].inflight = 3;
    a->peers[0].inflight_tokens = 3000;
    a->peers[0].inflight_work = 700;
    strcpy(a->peers[1].addr, "127.0.0.1:2");
    a->peers[1].inflight = 0;

    ck_assert_int_eq(llmd_wire_pack_gateway(a, buf, sizeof(buf), &len),
                     LLMD_WIRE_OK);
    ck_assert_int_eq(llmd_wire_unpack_gateway(buf, len, b), LLMD_WIRE_OK);
    ck_assert_mem_eq(a, b, sizeof(*a));
    free(a);
    free(b);
}
END_TEST


/* Random bytes and random mutations of a valid record never crash (ASan
 * and UBSan watch) and never decode as something out of bounds. */
START_TEST(fuzz_does_not_crash)
{
    size_t              len, i, j;
    uint64_t            keys[16];
    unsigned int        seed = 12345;
    llmd_heartbeat_t    hb;
    llmd_cache_event_t  ev;
    llmd_gateway_load_t *gw = malloc(sizeof(*gw));
    char                 good[4096];
    size_t               good_len;

    sample_heartbeat(&hb);
    llmd_wire_pack_heartbeat(&hb, good, sizeof(good), &good_len);

    for (i = 0; i < 20000; i++) {
        memcpy(buf, good, good_len);
        len = good_len;
        for (j = 0; j < 1 + i % 4; j++) {
            buf[rand_r(&seed) % len] = (char) rand_r(&seed);
        }
        if (i % 3 == 0) {
            len = rand_r(&seed) % (good_len + 1);
        }
        if (llmd_wire_unpack_heartbeat(buf, len, &hb) == LLMD_WIRE_OK) {
            ck_assert_uint_lt(strlen(hb.id), sizeof(hb.id));
            ck_assert_uint_le(hb.role, 2);
        }
        ev.keys = keys;
        ev.max_keys = 16;
        if (llmd_wire_unpack_event(buf, len, &ev) == LLMD_WIRE_OK) {
            ck_assert_uint_le(ev.nkeys, 16);
        }
        (void) llmd_wire_unpack_gateway(buf, len, gw);
    }

    free(gw);
}
END_TEST


static Suite *
wire_suite(void)
{
    Suite  *s = suite_create("wire");
    TCase  *tc = tcase_create("codec");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, heartbeat_round_trip);
    tcase_add_test(tc, heartbeat_truncated_everywhere);
    tcase_add_test(tc, heartbeat_hostile);
    tcase_add_test(tc, event_round_trip_and_bounds);
    tcase_add_test(tc, gateway_round_trip);
    tcase_add_test(tc, fuzz_does_not_crash);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    SRunner  *sr = srunner_create(wire_suite());
    int       failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
