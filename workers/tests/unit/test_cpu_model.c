/* CPU backend, model side: the GGUF loader against corrupted files, both
 * tokenizer families, chat templates, and the real stories260K model's
 * known tokenizations and logits (skipped when the file is absent). */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/cpu.h"
#include "backends/cpu_sample.h"
#include "model/chat_template.h"
#include "model/gguf.h"
#include "model_tool/gguf_write.h"
#include "model/model.h"
#include "model_tool/model_gen.h"
#include "suites.h"
#include "model/tokenizer_vocab.h"

/* A generated model written to a temporary file; its path in `path`. */
static void make_model(char *path, const char *arch, const char *vocab,
    enum ggml_type type)
{
    struct model_gen_params p;
    char err[256];

    model_gen_defaults(&p);
    strcpy(p.arch, arch);
    strcpy(p.vocab, vocab);
    p.type = type;
    p.dim = 32;
    p.hidden_dim = 64;
    snprintf(path, 64, "/tmp/llmd-test-%d-%s-%s.gguf", (int) getpid(), arch, vocab);
    ck_assert_msg(model_gen_write(&p, path, err, sizeof(err)) == 0, "%s", err);
}

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *size = (size_t) ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc(*size);
    ck_assert_uint_eq(fread(p, 1, *size, f), *size);
    fclose(f);
    return p;
}

/* parse + model + vocab from bytes; 0 when all accept them */
static int load_bytes(const uint8_t *bytes, size_t size, char *err)
{
    struct gguf_file f;
    struct model m;
    struct vocab v;
    int rc;

    if (gguf_parse(&f, bytes, size, err, 256) != 0)
        return -1;
    rc = model_load(&m, &f, err, 256);
    if (rc == 0) {
        model_free(&m);
        rc = vocab_load(&v, &f, err, 256);
        if (rc == 0)
            vocab_free(&v);
    }
    free(f.kv);
    free(f.tensors);
    return rc;
}

START_TEST(loader_rejects_corrupted_files)
{
    char path[64], err[256];
    size_t size;
    uint8_t *good, *bad;

    make_model(path, "llama", "spm", GGML_F32);
    good = read_all(path, &size);
    unlink(path);
    ck_assert_int_eq(load_bytes(good, size, err), 0);

    /* every truncation fails cleanly (ASan watches the reads) */
    for (size_t n = 0; n < size; n += n < 20000 ? 1 : 997) {
        bad = malloc(n ? n : 1);
        memcpy(bad, good, n);
        ck_assert_msg(load_bytes(bad, n, err) != 0, "truncated to %zu accepted", n);
        free(bad);
    }
    /* flipped bytes anywhere in the header: an error or a valid model,
     * never a crash */
    bad = malloc(size);
    for (int i = 0; i < 3000; i++) {
        memcpy(bad, good, size);
        bad[(size_t) (i * 7919) % 20000] ^= (uint8_t) (1 + i % 255);
        bad[(size_t) (i * 104729) % 20000] = 0xff;
        load_bytes(bad, size, err);
    }
    memcpy(bad, good, size);
    bad[0] = 'X';
    ck_assert_int_ne(load_bytes(bad, size, err), 0);
    ck_assert_ptr_nonnull(strstr(err, "magic"));
    free(bad);
    free(good);
}
END_TEST

START_TEST(loader_names_bad_dims_offsets_types)
{
    struct gguf_writer w = { 0 };
    float data[8] = { 0 };
    uint8_t *bytes;
    size_t size;
    char err[256];
    struct gguf_file f;

    gw_str(&w, "general.architecture", "llama");
    gw_tensor(&w, "huge", GGML_F32, 1LL << 40, 1, data, sizeof(data));
    bytes = gw_finish(&w, &size);
    ck_assert_int_ne(gguf_parse(&f, bytes, size, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "huge"));
    free(bytes);
    gw_free(&w);

    memset(&w, 0, sizeof(w));
    gw_tensor(&w, "q4", (enum ggml_type) 12, 8, 1, data, sizeof(data));
    bytes = gw_finish(&w, &size);
    ck_assert_int_ne(gguf_parse(&f, bytes, size, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "Q4_K"));
    free(bytes);
    gw_free(&w);

    /* an offset past the end: the tensor's offset field is the last 8
     * bytes before the data padding; point it far away */
    memset(&w, 0, sizeof(w));
    gw_tensor(&w, "t", GGML_F32, 8, 1, data, sizeof(data));
    bytes = gw_finish(&w, &size);
    {
        uint64_t far = 1ULL << 40;
        uint8_t *off = memmem(bytes, size, "t\x01\x00\x00\x00", 5);
        ck_assert_ptr_nonnull(off);
        memcpy(off + 5 + 8 + 4, &far, 8);
    }
    ck_assert_int_ne(gguf_parse(&f, bytes, size, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "outside"));
    free(bytes);
    gw_free(&w);

    memset(&w, 0, sizeof(w));
    gw_str(&w, "general.architecture", "mamba");
    bytes = gw_finish(&w, &size);
    ck_assert_int_eq(gguf_parse(&f, bytes, size, err, sizeof(err)), 0);
    {
        struct model m;
        ck_assert_int_ne(model_load(&m, &f, err, sizeof(err)), 0);
        ck_assert_ptr_nonnull(strstr(err, "mamba"));
    }
    free(f.kv);
    free(f.tensors);
    free(bytes);
    gw_free(&w);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* tokenizers */

static struct gguf_file tok_file;
static struct vocab tok;

static void open_vocab(const char *vocab)
{
    char path[64], err[256];

    make_model(path, strcmp(vocab, "spm") ? "qwen2" : "llama", vocab, GGML_F32);
    ck_assert_msg(gguf_open(&tok_file, path, err, sizeof(err)) == 0, "%s", err);
    unlink(path);
    ck_assert_msg(vocab_load(&tok, &tok_file, err, sizeof(err)) == 0, "%s", err);
}

static void close_vocab(void)
{
    vocab_free(&tok);
    gguf_close(&tok_file);
}

/* decode ids back to text */
static void decode(const int32_t *ids, int n, char *out)
{
    int len = 0;

    for (int i = 0; i < n; i++) {
        int k;
        const char *t = vocab_token_text(&tok, i ? ids[i - 1] : -1, ids[i], &k);
        memcpy(out + len, t, (size_t) k);
        len += k;
    }
    out[len] = '\0';
}

static void round_trip(const char *text)
{
    size_t len = strlen(text);
    int32_t *ids = malloc(sizeof(int32_t) * (3 * len + 3));
    char *back = malloc(4 * len + 64);
    int n = vocab_encode(&tok, text, len, false, false, ids);

    ck_assert_int_ge(n, 0);
    decode(ids, n, back);
    /* SentencePiece adds a leading space; the decoder keeps it unless the
     * text follows BOS */
    if (tok.kind == VOCAB_SPM)
        ck_assert_str_eq(back + (back[0] == ' '), text);
    else
        ck_assert_str_eq(back, text);
    free(ids);
    free(back);
}

static const char *const samples[] = {
    "Once upon a time, there was a little girl named Lily.",
    "  two  spaces\tand a tab\nnew line",
    "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xd0\x9f\xd1\x80\xd0\xb8",
    "digits 1234567 and 'quotes' don't won't",
    "\xff\xfe broken utf-8 \xc3",
    "",
};

START_TEST(spm_round_trips_and_merges)
{
    int32_t ids[64];
    int n;

    open_vocab("spm");
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        if (i != 4)     /* SentencePiece maps broken UTF-8 to bytes too */
            round_trip(samples[i]);
    round_trip(samples[4]);
    n = vocab_encode(&tok, "the girl", 8, true, false, ids);
    ck_assert_int_eq(n, 3);             /* <s> ▁the ▁girl */
    ck_assert_int_eq(ids[0], tok.bos);
    ck_assert_str_eq(tok.piece[ids[1]], "\xe2\x96\x81the");
    ck_assert_str_eq(tok.piece[ids[2]], "\xe2\x96\x81girl");
    /* a character outside the vocabulary falls back to its bytes */
    n = vocab_encode(&tok, "\xc3\xa9", 2, false, false, ids);
    ck_assert_int_eq(n, 3);             /* ▁ <0xC3> <0xA9> */
    ck_assert_int_eq(tok.types[ids[1]], TOKEN_BYTE);
    /* special tokens in text only when asked */
    n = vocab_encode(&tok, "</s>", 4, false, true, ids);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], tok.eos);
    close_vocab();
}
END_TEST

START_TEST(bpe_round_trips_regex_specials)
{
    int32_t ids[64];
    char text[256];
    int n;

    open_vocab("qwen2");
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
        round_trip(samples[i]);
    n = vocab_encode(&tok, "the girl said hello", 19, true, false, ids);
    ck_assert_int_eq(n, 4);             /* the, Ġgirl, Ġsaid, Ġhello; no BOS */
    ck_assert_str_eq(tok.piece[ids[1]], "\xc4\xa0girl");
    /* the qwen2 pre-tokenizer splits digits one by one */
    n = vocab_encode(&tok, "123", 3, false, false, ids);
    ck_assert_int_eq(n, 3);
    n = vocab_encode(&tok, "<|im_start|>user\nhi<|im_end|>", 29, false, true, ids);
    ck_assert_str_eq(tok.piece[ids[0]], "<|im_start|>");
    ck_assert_str_eq(tok.piece[ids[n - 1]], "<|im_end|>");
    ck_assert(vocab_is_end(&tok, ids[n - 1]));
    decode(ids, n, text);
    ck_assert_str_eq(text, "user\nhi");     /* control tokens print nothing */
    ck_assert_int_eq(tok.chat, CHAT_CHATML);
    close_vocab();

    open_vocab("llama3");
    round_trip(samples[0]);
    n = vocab_encode(&tok, "They went home", 14, true, false, ids);
    ck_assert_int_eq(ids[0], tok.bos);  /* Llama-3 wants BOS */
    ck_assert_str_eq(tok.piece[ids[1]], "They");
    ck_assert_str_eq(tok.piece[ids[2]], "\xc4\xa0went");
    ck_assert_int_eq(tok.chat, CHAT_LLAMA3);
    close_vocab();
}
END_TEST

START_TEST(chat_templates_render)
{
    struct chat_message m[] = {
        { "system", 6, "Be brief.", 9 }, { "user", 4, " Hi! ", 5 },
    };
    size_t len;
    char *s;

    s = chat_render(CHAT_CHATML, m, 2, &len);
    ck_assert_str_eq(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                        " Hi! <|im_end|>\n<|im_start|>assistant\n");
    free(s);
    s = chat_render(CHAT_LLAMA3, m, 2, &len);
    ck_assert_str_eq(s, "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(s);
    ck_assert_int_eq(chat_template_detect("{{ '[INST] ' + x }}", 17), CHAT_LLAMA2);
    ck_assert_int_eq(chat_template_detect("{{ x }}", 7), CHAT_UNKNOWN);
    ck_assert_int_eq(chat_family_by_name("gemma"), CHAT_GEMMA);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* stories260K: a real trained model with known answers */

static const char *stories_path(void)
{
    static char path[1024];
    const char *root = getenv("LLMD_REPO_ROOT");

    snprintf(path, sizeof(path), "%s/../shared/models/stories260K.gguf",
             root ? root : "..");
    return access(path, R_OK) == 0 ? path : NULL;
}

static void expect_top5(const float *logits, int n, const int *ids, const float *vals)
{
    float copy[512];

    memcpy(copy, logits, sizeof(float) * (size_t) n);
    for (int k = 0; k < 5; k++) {
        int best = argmax(copy, n);
        ck_assert_int_eq(best, ids[k]);
        ck_assert_msg(fabsf(copy[best] - vals[k]) < 1e-3f, "logit %d: %f vs %f",
                      best, copy[best], vals[k]);
        copy[best] = -INFINITY;
    }
}

START_TEST(stories260k_tokens_and_logits)
{
    const char *path = stories_path();
    struct backend b = { .ops = &cpu_backend_ops };
    struct kv_manager kv;
    struct kv_geometry geo;
    struct gen_params gp = { .max_tokens = 4 };
    struct worker_request *r;
    int32_t ids[64];
    char err[256];
    int n;
    static const int32_t lily[] = { 1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433, 426 };

    if (path == NULL) {
        printf("SKIP stories260K: ../shared/models/stories260K.gguf (from the repo "
               "root) is absent\n");
        return;
    }
    ck_assert_msg(cpu_backend_open(&b, path, 2, err, sizeof(err)) == 0, "%s", err);
    n = vocab_encode(b.vocab, "Once upon a time", 16, true, true, ids);
    ck_assert_int_eq(n, 5);
    ck_assert(memcmp(ids, (int32_t[]) { 1, 403, 407, 261, 378 }, sizeof(int32_t) * 5) == 0);
    n = vocab_encode(b.vocab, "Lily and Tom went to the park.", 30, true, true, ids);
    ck_assert_int_eq(n, 13);
    ck_assert(memcmp(ids, lily, sizeof(lily)) == 0);

    geo = (struct kv_geometry) { 4, 16, b.info.num_layers, b.info.kv_heads,
                                 b.info.head_dim, b.info.dtype_bytes };
    ck_assert_int_eq(kv_init(&kv, &geo), 0);
    b.ops->attach_kv(&b, &kv);
    for (int prompt = 0; prompt < 2; prompt++) {
        int32_t next;
        int len = prompt ? 5 : 1;
        struct batch_item it;
        struct batch batch;

        r = request_new((int32_t[]) { 1, 403, 407, 261, 378 }, len, &gp, 16);
        r->blocks[r->n_blocks++] = kv_alloc(&kv);
        it = (struct batch_item) { .req = r, .start = 0, .n_tokens = len, .sample = true };
        batch = (struct batch) { .items = &it, .n = 1, .n_tokens = len };
        ck_assert_int_eq(b.ops->forward(&b, &batch, &next), 0);
        if (prompt == 0)
            expect_top5(cpu_backend_logits(&b, 0), 512, (int[]) { 403, 385, 410, 317, 407 },
                        (float[]) { 17.0235f, 15.4062f, 13.1083f, 12.7692f, 12.4181f });
        else
            expect_top5(cpu_backend_logits(&b, 0), 512, (int[]) { 432, 383, 322, 353, 323 },
                        (float[]) { 17.7994f, 14.2813f, 9.7097f, 9.5873f, 9.1342f });
        kv_release(&kv, r->blocks[0]);
        request_free(r);
    }
    kv_free(&kv);
    b.ops->free(&b);
}
END_TEST

Suite *cpu_model_suite(void)
{
    Suite *s = suite_create("cpu_model");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, loader_rejects_corrupted_files);
    tcase_add_test(tc, loader_names_bad_dims_offsets_types);
    tcase_add_test(tc, spm_round_trips_and_merges);
    tcase_add_test(tc, bpe_round_trips_regex_specials);
    tcase_add_test(tc, chat_templates_render);
    tcase_add_test(tc, stories260k_tokens_and_logits);
    suite_add_tcase(s, tc);
    return s;
}
