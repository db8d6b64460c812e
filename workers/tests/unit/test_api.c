/* OpenAI request parsing, context checks and rendering. */

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "llmd_request.h"
#include "server/openai_api.h"
#include "suites.h"

static struct api_request rq;
static struct api_error err;

static int parse(enum api_kind kind, const char *body)
{
    memset(&err, 0, sizeof(err));
    return api_parse_request(kind, body, strlen(body), &rq, &err);
}

static void expect_400(enum api_kind kind, const char *body, const char *param)
{
    ck_assert_int_eq(parse(kind, body), -1);
    ck_assert_int_eq(err.status, 400);
    if (param)
        ck_assert_str_eq(err.param, param);
    else
        ck_assert_ptr_null(err.param);
}

START_TEST(completion_fields)
{
    ck_assert_int_eq(parse(API_COMPLETIONS,
        "{\"model\":\"m\",\"prompt\":\"Hi!\",\"max_tokens\":7,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"stop\":[\"a\",\"bc\"],"
        "\"temperature\":0.5,\"top_p\":0.9,\"seed\":42,\"n\":1,\"user\":\"u\","
        "\"priority\":3}"), 0);
    ck_assert_str_eq(rq.model, "m");
    ck_assert_int_eq(rq.n_prompt, 3);
    ck_assert_int_eq(rq.prompt[0], 'H');
    ck_assert_int_eq(rq.prompt[2], '!');
    ck_assert_int_eq(rq.max_tokens, 7);
    ck_assert(rq.stream && rq.include_usage && rq.has_seed);
    ck_assert_int_eq(rq.params.n_stop, 2);
    ck_assert_str_eq(rq.params.stop[1], "bc");
    ck_assert(rq.params.temperature == 0.5);
    ck_assert_uint_eq(rq.params.seed, 42);
    ck_assert_int_eq(rq.params.priority, 3);
    api_request_free(&rq);

    ck_assert_int_eq(parse(API_COMPLETIONS,
        "{\"prompt\":[72,105],\"max_completion_tokens\":3}"), 0);
    ck_assert_int_eq(rq.n_prompt, 2);
    ck_assert_int_eq(rq.prompt[1], 105);
    ck_assert_int_eq(rq.max_tokens, 3);
    api_request_free(&rq);
}
END_TEST

START_TEST(canonical_prompt_bytes)
{
    /* the same bytes the gateway hashes (common/llmd_canon.h) */
    const char chat_bytes[] = "be brief\x1fsystem\x1ehi\x1d\x1fuser\x1e";

    ck_assert_int_eq(parse(API_CHAT,
        "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}"), 0);
    ck_assert_int_eq(rq.n_prompt, (int) sizeof(chat_bytes) - 1);
    for (int i = 0; i < rq.n_prompt; i++)
        ck_assert_int_eq(rq.prompt[i], (unsigned char) chat_bytes[i]);
    api_request_free(&rq);

    ck_assert_int_eq(parse(API_COMPLETIONS, "{\"prompt\":[\"ab\"]}"), 0);
    ck_assert_int_eq(rq.n_prompt, 3);
    ck_assert_int_eq(rq.prompt[2], 0x1e);
    api_request_free(&rq);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* one corpus, both sides: the gateway's streaming parser (common/
 * llmd_request) and the worker's parse write the same canonical bytes */

struct sink_buf {
    unsigned char   b[4096];
    size_t          len;
};

static void sink_write(void *ctx, const void *data, size_t len)
{
    struct sink_buf *sb = ctx;

    ck_assert_uint_le(sb->len + len, sizeof(sb->b));
    memcpy(sb->b + sb->len, data, len);
    sb->len += len;
}

#define CORPUS_BLOCK    16
#define CORPUS_KEYS     64

static size_t both_sides(const char *note, enum api_kind kind, const char *body)
{
    struct sink_buf gw = { .len = 0 };
    llmd_canon_sink_t sink = { sink_write, &gw };
    unsigned char scratch[CORPUS_BLOCK];
    uint64_t gkeys[CORPUS_KEYS], wkeys[CORPUS_KEYS];
    llmd_request_t lr;
    size_t nw;

    ck_assert_int_eq(llmd_request_init(&lr, &llmd_libc_allocator, CORPUS_BLOCK,
                                       CORPUS_KEYS, scratch, gkeys), LLMD_REQ_OK);
    llmd_request_set_sink(&lr, &sink);
    ck_assert_msg(llmd_request_feed(&lr, body, strlen(body)) == LLMD_REQ_OK
                  && llmd_request_finish(&lr) == LLMD_REQ_OK,
                  "%s: the gateway rejects it: %s", note, lr.error);
    llmd_request_cleanup(&lr);

    ck_assert_msg(parse(kind, body) == 0, "%s: the worker rejects it: %s",
                  note, err.message);
    ck_assert_msg(rq.canon_len == gw.len
                  && memcmp(rq.canon, gw.b, gw.len) == 0,
                  "%s: canonical bytes differ (worker %zu, gateway %zu)",
                  note, rq.canon_len, gw.len);
    ck_assert_uint_eq(lr.prefix.total_bytes, gw.len);

    nw = llmd_prefix_keys(rq.canon, rq.canon_len, CORPUS_BLOCK, wkeys,
                          CORPUS_KEYS);
    ck_assert_msg(nw == lr.prefix.nkeys, "%s: %zu keys vs %zu", note, nw,
                  lr.prefix.nkeys);
    ck_assert_msg(memcmp(wkeys, gkeys, nw * sizeof(uint64_t)) == 0,
                  "%s: keys differ", note);
    api_request_free(&rq);
    return nw;
}

START_TEST(canonical_corpus_both_sides)
{
    const char *root = getenv("LLMD_REPO_ROOT");
    char path[1024];
    json_error_t jerr;
    json_t *corpus, *item;
    size_t i, nkeys = 0;

    snprintf(path, sizeof(path), "%s/common/tests/canon_corpus.json",
             root ? root : "..");
    corpus = json_load_file(path, 0, &jerr);
    ck_assert_msg(corpus != NULL, "%s: %s", path, jerr.text);
    ck_assert_uint_ge(json_array_size(corpus), 10);

    json_array_foreach(corpus, i, item) {
        const char *note = json_string_value(json_object_get(item, "note"));
        enum api_kind kind = strcmp(json_string_value(json_object_get(item,
                                    "kind")), "chat") == 0 ? API_CHAT
                                                           : API_COMPLETIONS;
        /* as clients send it, and with every non-ASCII byte escaped */
        for (int ascii = 0; ascii < 2; ascii++) {
            char *body = json_dumps(json_object_get(item, "body"),
                                    JSON_COMPACT | (ascii ? JSON_ENSURE_ASCII : 0));

            nkeys += both_sides(note, kind, body);
            free(body);
        }
    }
    /* most of the corpus fills a block or more: keys were compared */
    ck_assert_uint_ge(nkeys, 2 * json_array_size(corpus));
    json_decref(corpus);
}
END_TEST

START_TEST(a_role_counts_up_to_its_limit)
{
    /* the long role of the corpus: both sides keep LLMD_ROLE_MAX bytes */
    ck_assert_int_eq(parse(API_CHAT, "{\"messages\":[{\"role\":"
        "\"0123456789012345678901234567890123456789\",\"content\":\"x\"}]}"), 0);
    ck_assert_uint_eq(rq.canon_len, 1 + 1 + LLMD_ROLE_MAX + 1);
    ck_assert_int_eq(rq.canon[2 + LLMD_ROLE_MAX], LLMD_SEP_RS);
    api_request_free(&rq);
}
END_TEST

START_TEST(bad_requests)
{
    expect_400(API_COMPLETIONS, "{\"prompt\":", NULL);
    expect_400(API_COMPLETIONS, "[1,2]", NULL);
    expect_400(API_COMPLETIONS, "{}", "prompt");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"\"}", "prompt");
    expect_400(API_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}", "prompt");
    expect_400(API_COMPLETIONS, "{\"prompt\":[1,300]}", "prompt");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"n\":2}", "n");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":\"5\"}", "max_tokens");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"temperature\":2.5}", "temperature");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"top_p\":0}", "top_p");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"stream\":1}", "stream");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":[\"\"]}", "stop");
    expect_400(API_COMPLETIONS, "{\"prompt\":\"x\",\"seed\":1.5}", "seed");
    expect_400(API_CHAT, "{\"messages\":[]}", "messages");
    expect_400(API_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages");
    expect_400(API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages");
}
END_TEST

START_TEST(context_limits)
{
    ck_assert_int_eq(parse(API_COMPLETIONS, "{\"prompt\":\"0123456789\"}"), 0);
    ck_assert_int_eq(api_fit_context(&rq, 100, &err), 0);
    ck_assert_int_eq(rq.params.max_tokens, 16);     /* OpenAI's default */
    ck_assert_int_eq(api_fit_context(&rq, 10, &err), -1);
    ck_assert_int_eq(err.status, 400);
    ck_assert_ptr_nonnull(strstr(err.message, "maximum context length is 10 tokens"));
    ck_assert_str_eq(err.code, "context_length_exceeded");
    api_request_free(&rq);

    ck_assert_int_eq(parse(API_COMPLETIONS, "{\"prompt\":\"0123456789\",\"max_tokens\":91}"), 0);
    ck_assert_int_eq(api_fit_context(&rq, 100, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.message, "you requested 101 tokens"));
    api_request_free(&rq);

    ck_assert_int_eq(parse(API_CHAT, "{\"messages\":[{\"role\":\"u\",\"content\":\"x\"}]}"), 0);
    ck_assert_int_eq(api_fit_context(&rq, 100, &err), 0);
    ck_assert_int_eq(rq.params.max_tokens, 100 - rq.n_prompt);
    api_request_free(&rq);
}
END_TEST

START_TEST(rendering_is_valid_json)
{
    char prefix[512], chunk[1024], esc[64];
    size_t len = 0, slen = 0;
    const char *suffix = api_chunk_suffix_for(API_CHAT, &slen);
    int n = api_chunk_prefix(API_CHAT, "chatcmpl-1", 7, "m\"x", prefix, sizeof(prefix));
    json_t *j;
    char *s;

    /* prefix + escaped text + suffix, minus "data: " and "\n\n" */
    memcpy(chunk, prefix, (size_t) n);
    len = (size_t) n + json_escape(chunk + n, "a\"\n\x01", 4);
    memcpy(chunk + len, suffix, slen);
    len += slen;
    ck_assert(len > 8 && memcmp(chunk, "data: ", 6) == 0);
    j = json_loadb(chunk + 6, len - 8, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(
        json_array_get(json_object_get(j, "choices"), 0), "delta"), "content")),
        "a\"\n\x01");
    ck_assert_str_eq(json_string_value(json_object_get(j, "model")), "m\"x");
    json_decref(j);

    s = api_render_response(API_COMPLETIONS, "cmpl-1", 7, "m", "hey", 3,
                            FINISH_LENGTH, 4, 3, &len);
    j = json_loads(s, 0, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "usage"),
                     "total_tokens")), 7);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(
        json_object_get(j, "choices"), 0), "finish_reason")), "length");
    json_decref(j);
    free(s);

    ck_assert_uint_eq(json_escape(esc, "ok", 2), 2);
}
END_TEST

Suite *api_suite(void)
{
    Suite *s = suite_create("openai_api");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, completion_fields);
    tcase_add_test(tc, canonical_prompt_bytes);
    tcase_add_test(tc, canonical_corpus_both_sides);
    tcase_add_test(tc, a_role_counts_up_to_its_limit);
    tcase_add_test(tc, bad_requests);
    tcase_add_test(tc, context_limits);
    tcase_add_test(tc, rendering_is_valid_json);
    suite_add_tcase(s, tc);
    return s;
}
