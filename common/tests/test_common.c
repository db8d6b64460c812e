/*
 * Unit tests for common/: prefix keys and request inspection.
 */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmd_prefix.h"
#include "llmd_request.h"

#define BS      16
#define MAXK    64

static unsigned char  block[BS];
static uint64_t       keys[MAXK];


static llmd_req_status_t
inspect(llmd_request_t *rq, const char *json)
{
    return llmd_request_inspect(rq, &llmd_libc_allocator, json, strlen(json),
                                BS, MAXK, block, keys);
}


/* Keys of a whole buffer computed the reference way. */
static size_t
ref_keys(const void *data, size_t len, uint64_t *out)
{
    return llmd_prefix_keys(data, len, BS, out, MAXK);
}


START_TEST(prefix_chain_names_whole_prefix)
{
    const char  *a = "0123456789abcdefSAME-SECOND-BLK!tail-a";
    const char  *b = "XXXXXXXXXXXXXXXXSAME-SECOND-BLK!tail-b";
    uint64_t     ka[4], kb[4];

    ck_assert_uint_eq(llmd_prefix_keys(a, strlen(a), BS, ka, 4), 2);
    ck_assert_uint_eq(llmd_prefix_keys(b, strlen(b), BS, kb, 4), 2);

    /* same second block, different first block: the chain differs */
    ck_assert(ka[0] != kb[0]);
    ck_assert(ka[1] != kb[1]);
    ck_assert(ka[1] == llmd_prefix_block_key(ka[0], a + BS, BS));
    ck_assert(ka[0] == llmd_prefix_block_key(LLMD_PREFIX_SEED, a, BS));
}
END_TEST


START_TEST(prefix_streaming_matches_whole)
{
    unsigned char         data[300];
    uint64_t              whole[MAXK];
    size_t                i, n, step;
    llmd_prefix_hasher_t  h;

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char) (i * 7 + 3);
    }
    n = ref_keys(data, sizeof(data), whole);
    ck_assert_uint_eq(n, sizeof(data) / BS);

    for (step = 1; step < 40; step++) {
        llmd_prefix_init(&h, BS, MAXK, block, keys);
        for (i = 0; i < sizeof(data); i += step) {
            llmd_prefix_update(&h, data + i,
                               i + step > sizeof(data) ? sizeof(data) - i
                                                       : step);
        }
        ck_assert_uint_eq(h.nkeys, n);
        ck_assert_uint_eq(h.total_bytes, sizeof(data));
        ck_assert_mem_eq(keys, whole, n * sizeof(uint64_t));
    }
}
END_TEST


START_TEST(prefix_stops_at_max_blocks)
{
    unsigned char         data[BS * 10];
    llmd_prefix_hasher_t  h;

    memset(data, 'x', sizeof(data));
    llmd_prefix_init(&h, BS, 3, block, keys);
    llmd_prefix_update(&h, data, sizeof(data));
    ck_assert_uint_eq(h.nkeys, 3);
    ck_assert_uint_eq(h.total_bytes, sizeof(data));
}
END_TEST


START_TEST(request_fields)
{
    llmd_request_t  rq;

    ck_assert_int_eq(inspect(&rq,
        "{\"model\":\"m1\",\"max_tokens\":42,\"stream\":true,\"user\":\"u\","
        "\"extra\":{\"a\":[1,{\"b\":null}]},"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"),
        LLMD_REQ_OK);
    ck_assert_str_eq(rq.model, "m1");
    ck_assert_str_eq(rq.user, "u");
    ck_assert_int_eq(rq.max_tokens, 42);
    ck_assert_int_eq(rq.stream, 1);
    ck_assert(rq.has_messages);
    ck_assert(!rq.has_prompt);
    ck_assert_uint_eq(rq.nmessages, 1);
    /* "hi" US "user" RS */
    ck_assert_uint_eq(rq.prefix.total_bytes, 2 + 1 + 4 + 1);

    ck_assert_int_eq(inspect(&rq, "{\"max_completion_tokens\":7}"),
                     LLMD_REQ_OK);
    ck_assert_int_eq(rq.max_tokens, 7);
    ck_assert_int_eq(rq.stream, -1);
}
END_TEST


/* Key order inside a message or the root object must not change keys. */
START_TEST(request_key_order_does_not_matter)
{
    llmd_request_t  rq;
    uint64_t        k1[MAXK];
    size_t          n1;
    const char     *sys = "You are a helpful assistant who answers briefly.";
    char            j1[512], j2[512];

    snprintf(j1, sizeof(j1), "{\"messages\":[{\"role\":\"system\","
             "\"content\":\"%s\"},{\"role\":\"user\",\"content\":\"q\"}],"
             "\"model\":\"m\"}", sys);
    snprintf(j2, sizeof(j2), "{\"model\":\"m\",\"messages\":[{\"content\":"
             "\"%s\",\"role\":\"system\"},{\"content\":\"q\",\"role\":"
             "\"user\"}]}", sys);

    ck_assert_int_eq(inspect(&rq, j1), LLMD_REQ_OK);
    n1 = rq.prefix.nkeys;
    ck_assert_uint_gt(n1, 2);
    memcpy(k1, keys, n1 * sizeof(uint64_t));

    ck_assert_int_eq(inspect(&rq, j2), LLMD_REQ_OK);
    ck_assert_uint_eq(rq.prefix.nkeys, n1);
    ck_assert_mem_eq(keys, k1, n1 * sizeof(uint64_t));
}
END_TEST


/* Keys equal the reference keys of the documented canonical bytes. */
START_TEST(request_canonical_bytes)
{
    llmd_request_t  rq;
    uint64_t        ref[MAXK];
    size_t          n;
    const char     *canon = "system prompt text here!"
                            "\x1fsystem\x1e"
                            "part one\x1dpart two\x1d"
                            "\x1fuser\x1e";

    ck_assert_int_eq(inspect(&rq,
        "{\"messages\":[{\"role\":\"system\",\"content\":"
        "\"system prompt text here!\"},{\"role\":\"user\",\"content\":["
        "{\"type\":\"text\",\"text\":\"part one\"},{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"x\"}},{\"type\":\"text\",\"text\":"
        "\"part two\"}]}]}"), LLMD_REQ_OK);

    n = ref_keys(canon, strlen(canon), ref);
    ck_assert_uint_eq(rq.prefix.total_bytes, strlen(canon));
    ck_assert_uint_eq(rq.prefix.nkeys, n);
    ck_assert_mem_eq(keys, ref, n * sizeof(uint64_t));

    /* prompt forms */
    ck_assert_int_eq(inspect(&rq, "{\"prompt\":\"abcdefghijklmnopqrstuvwxyz"
                                  "0123456789\"}"), LLMD_REQ_OK);
    n = ref_keys("abcdefghijklmnopqrstuvwxyz0123456789", 36, ref);
    ck_assert_uint_eq(rq.prefix.nkeys, n);
    ck_assert_mem_eq(keys, ref, n * sizeof(uint64_t));

    ck_assert_int_eq(inspect(&rq, "{\"prompt\":[1,2,3,4,[5,6]]}"),
                     LLMD_REQ_OK);
    ck_assert_uint_eq(rq.prefix.total_bytes, 24);
    ck_assert_uint_eq(rq.prefix.nkeys, 1);
    {
        unsigned char  t[16] = { 1,0,0,0, 2,0,0,0, 3,0,0,0, 4,0,0,0 };
        ck_assert(keys[0] == llmd_prefix_block_key(LLMD_PREFIX_SEED, t, 16));
    }
}
END_TEST


/* Split the body at every offset: same result. */
START_TEST(request_split_anywhere)
{
    const char      *j = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\","
                         "\"content\":\"a long system prompt \\u00e9 with an "
                         "escape and some more words\"},{\"role\":\"user\","
                         "\"content\":\"question\"}],\"stream\":false}";
    size_t           len = strlen(j), cut, nref;
    uint64_t         ref[MAXK];
    llmd_request_t   rq;

    ck_assert_int_eq(inspect(&rq, j), LLMD_REQ_OK);
    nref = rq.prefix.nkeys;
    memcpy(ref, keys, nref * sizeof(uint64_t));

    for (cut = 1; cut < len; cut++) {
        ck_assert_int_eq(llmd_request_init(&rq, &llmd_libc_allocator, BS, MAXK,
                                           block, keys), LLMD_REQ_OK);
        ck_assert_int_eq(llmd_request_feed(&rq, j, cut), LLMD_REQ_OK);
        ck_assert_int_eq(llmd_request_feed(&rq, j + cut, len - cut),
                         LLMD_REQ_OK);
        ck_assert_int_eq(llmd_request_finish(&rq), LLMD_REQ_OK);
        llmd_request_cleanup(&rq);
        ck_assert_int_eq(rq.stream, 0);
        ck_assert_uint_eq(rq.prefix.nkeys, nref);
        ck_assert_mem_eq(keys, ref, nref * sizeof(uint64_t));
    }
}
END_TEST


START_TEST(request_errors)
{
    llmd_request_t  rq;

    ck_assert_int_eq(inspect(&rq, "{\"prompt\":\"x\""), LLMD_REQ_INVALID);
    ck_assert(strstr(rq.error, "invalid JSON") != NULL);

    ck_assert_int_eq(inspect(&rq, "{\"prompt\": nope}"), LLMD_REQ_INVALID);
    ck_assert(strstr(rq.error, "invalid JSON") != NULL);

    ck_assert_int_eq(inspect(&rq, ""), LLMD_REQ_INVALID);
    ck_assert_int_eq(inspect(&rq, "[1,2]"), LLMD_REQ_INVALID);
    ck_assert(strstr(rq.error, "JSON object") != NULL);

    ck_assert_int_eq(inspect(&rq, "{\"messages\":\"hi\"}"), LLMD_REQ_INVALID);
    ck_assert_str_eq(rq.error_param, "messages");

    ck_assert_int_eq(inspect(&rq, "{\"messages\":[\"hi\"]}"),
                     LLMD_REQ_INVALID);
    ck_assert_str_eq(rq.error_param, "messages");

    ck_assert_int_eq(inspect(&rq, "{\"messages\":[{\"role\":\"user\","
                                  "\"content\":5}]}"), LLMD_REQ_INVALID);

    ck_assert_int_eq(inspect(&rq, "{\"prompt\":{\"a\":1}}"),
                     LLMD_REQ_INVALID);
    ck_assert_str_eq(rq.error_param, "prompt");

    ck_assert_int_eq(inspect(&rq, "{\"prompt\":[[1,\"x\"]]}"),
                     LLMD_REQ_INVALID);

    ck_assert_int_eq(inspect(&rq, "{\"max_tokens\":\"10\"}"),
                     LLMD_REQ_INVALID);
    ck_assert_str_eq(rq.error_param, "max_tokens");

    ck_assert_int_eq(inspect(&rq, "{\"prompt\":\"x\"} {}"), LLMD_REQ_INVALID);

    /* invalid UTF-8 inside a string */
    ck_assert_int_eq(inspect(&rq, "{\"prompt\":\"\xff\xfe\"}"),
                     LLMD_REQ_INVALID);
}
END_TEST


START_TEST(request_deep_nesting_is_rejected)
{
    llmd_request_t  rq;
    char            j[1024];
    size_t          i, n = 0;

    n += (size_t) snprintf(j, sizeof(j), "{\"x\":");
    for (i = 0; i < 200; i++) {
        j[n++] = '[';
    }
    for (i = 0; i < 200; i++) {
        j[n++] = ']';
    }
    j[n++] = '}';
    j[n] = '\0';

    ck_assert_int_eq(inspect(&rq, j), LLMD_REQ_INVALID);
    ck_assert(strstr(rq.error, "deep") != NULL);
}
END_TEST


static Suite *
common_suite(void)
{
    Suite  *s = suite_create("common");
    TCase  *tc = tcase_create("core");

    tcase_add_test(tc, prefix_chain_names_whole_prefix);
    tcase_add_test(tc, prefix_streaming_matches_whole);
    tcase_add_test(tc, prefix_stops_at_max_blocks);
    tcase_add_test(tc, request_fields);
    tcase_add_test(tc, request_key_order_does_not_matter);
    tcase_add_test(tc, request_canonical_bytes);
    tcase_add_test(tc, request_split_anywhere);
    tcase_add_test(tc, request_errors);
    tcase_add_test(tc, request_deep_nesting_is_rejected);
    suite_add_tcase(s, tc);
    return s;
}


int
main(void)
{
    SRunner  *sr = srunner_create(common_suite());
    int       failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
