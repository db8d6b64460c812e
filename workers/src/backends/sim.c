/*
 * Sim backend: no model math, but real KV pages and real step times.
 *
 * forward() writes every computed token's K and V rows into its blocks,
 * produces the next token from a seeded generator, and then sleeps until
 * the step time of the latency profile (scaled by --speed) has passed.
 */

#include "sim.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "base/config.h"
#include "sim_profile.h"

struct sim_state {
    struct sim_profile  profile;
    double              speed;
    bool                check_kv;
    struct kv_manager  *kv;
};

/* ------------------------------------------------------------------------ */
/* the pseudo-word generator */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64: tiny, fast and good enough for text */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int is_vowel(int c)
{
    return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
}

static int is_letter(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int32_t sim_next_token(struct worker_request *r)
{
    static const char consonants[] = "bcdfghklmnprstvwyz";
    static const char vowels[] = "aeiou";
    const int32_t *gen = r->tokens + r->n_prompt;
    int n = r->n_tokens - r->n_prompt;
    int last = n > 0 ? gen[n - 1] : ' ';
    uint64_t x = rng_next(&r->rng);
    int word_len = 0;

    if (n == 0)
        return consonants[(x >> 16) % (sizeof(consonants) - 1)] - 'a' + 'A';
    if (last == '.' || last == ',')
        return ' ';
    if (is_letter(last)) {
        while (word_len < n && word_len < 12 && is_letter(gen[n - 1 - word_len]))
            word_len++;
        /* words of 2 to 9 letters, ending more likely as they grow */
        if (word_len >= 2 && (int) (x % 100) < word_len * 12) {
            if ((x >> 8) % 10 == 0)
                return '.';
            if ((x >> 8) % 13 == 1)
                return ',';
            return ' ';
        }
        if (is_vowel(last | 0x20))
            return consonants[(x >> 16) % (sizeof(consonants) - 1)];
        return vowels[(x >> 16) % (sizeof(vowels) - 1)];
    }
    /* after a space: start a word, capitalised after a full stop */
    {
        int c = consonants[(x >> 16) % (sizeof(consonants) - 1)];
        int prev = n >= 2 ? gen[n - 2] : '.';
        return prev == '.' ? c - 'a' + 'A' : c;
    }
}

/* ------------------------------------------------------------------------ */

static int sim_init(struct backend *b, const struct worker_config *cfg,
    char *err, int err_len)
{
    struct sim_state *st = calloc(1, sizeof(*st));

    if (st == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    if (sim_profile_load(&st->profile, cfg->sim_profile, err, err_len) != 0) {
        free(st);
        return -1;
    }
    st->speed = cfg->speed;
    st->check_kv = cfg->sim_check_kv != 0;
    b->state = st;
    b->info.max_model_len = st->profile.max_model_len;
    b->info.vocab_size = 256;
    b->info.eos_token = -1;
    b->info.num_layers = st->profile.kv_layers;
    b->info.kv_heads = st->profile.kv_heads;
    b->info.head_dim = st->profile.head_dim;
    b->info.dtype_bytes = st->profile.dtype_bytes;
    return 0;
}

static void sim_attach_kv(struct backend *b, struct kv_manager *kv)
{
    ((struct sim_state *) b->state)->kv = kv;
}

/* A row's bytes are base + j (mod 256), so every row is a slice of one
 * ramp: a memcpy instead of a byte loop keeps the sim's own CPU time small
 * next to the real work it stands for (and next to a KV transfer sharing
 * the machine). */
#define RAMP_ROW_MAX    65536
static uint8_t ramp[256 + RAMP_ROW_MAX];

static const uint8_t *row_bytes(int32_t token, int pos, int layer, int k_or_v,
    size_t row)
{
    if (ramp[1] == 0)
        for (size_t i = 0; i < sizeof(ramp); i++)
            ramp[i] = (uint8_t) i;
    if (row > RAMP_ROW_MAX)
        return NULL;
    return ramp + sim_kv_byte(token, pos, layer, k_or_v, 0);
}

static void write_token_kv(struct kv_manager *kv, const struct worker_request *r,
    int pos, int layer)
{
    int bt = kv->geo.block_tokens;
    int32_t block = r->blocks[pos / bt];
    int32_t token = r->tokens[pos];
    size_t row = kv_row_bytes(kv);

    for (int k_or_v = 0; k_or_v < 2; k_or_v++) {
        uint8_t *p = kv_slot(kv, block, layer, k_or_v, pos % bt);
        const uint8_t *src = row_bytes(token, pos, layer, k_or_v, row);

        if (src) {
            memcpy(p, src, row);
            continue;
        }
        for (size_t j = 0; j < row; j++)
            p[j] = sim_kv_byte(token, pos, layer, k_or_v, (int) j);
    }
}

static atomic_uint_fast64_t kv_checked, kv_mismatched;

void sim_kv_check_counts(uint64_t *checked, uint64_t *mismatched)
{
    *checked = atomic_load(&kv_checked);
    *mismatched = atomic_load(&kv_mismatched);
}

/* Rows [r->kv_checked, upto) of every layer must hold what the sim wrote
 * for those tokens, whoever computed them. */
static void check_kv(struct kv_manager *kv, struct worker_request *r, int upto)
{
    int bt = kv->geo.block_tokens;
    size_t row = kv_row_bytes(kv);

    for (int pos = r->kv_checked; pos < upto; pos++) {
        bool bad = false;
        for (int layer = 0; layer < kv->geo.num_layers && !bad; layer++)
            for (int k_or_v = 0; k_or_v < 2 && !bad; k_or_v++) {
                const uint8_t *p = kv_slot(kv, r->blocks[pos / bt], layer,
                                           k_or_v, pos % bt);
                const uint8_t *want = row_bytes(r->tokens[pos], pos, layer,
                                                k_or_v, row);
                if (want) {
                    bad = memcmp(p, want, row) != 0;
                    continue;
                }
                for (size_t j = 0; j < row; j++)
                    if (p[j] != sim_kv_byte(r->tokens[pos], pos, layer,
                                            k_or_v, (int) j)) {
                        bad = true;
                        break;
                    }
            }
        if (bad) {
            if (atomic_fetch_add(&kv_mismatched, 1) < 5)
                fprintf(stderr, "llmd-worker: sim: KV rows of position %d of "
                        "request %llu do not hold its token's bytes\n", pos,
                        (unsigned long long) r->id);
        }
        atomic_fetch_add(&kv_checked, 1);
    }
    if (upto > r->kv_checked)
        r->kv_checked = upto;
}

static void sleep_until(const struct timespec *deadline)
{
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline, NULL)
           == EINTR)
        ;
}

static void add_ns(struct timespec *t, long long ns)
{
    ns += t->tv_nsec;
    t->tv_sec += (time_t) (ns / 1000000000LL);
    t->tv_nsec = (long) (ns % 1000000000LL);
}

/* Layer by layer, as a model computes: each layer's pages are written and
 * its share of the step time passes before the next layer starts, so a KV
 * transfer streaming behind the compute sees a real model's timing. */
static int sim_forward(struct backend *b, const struct batch *batch,
    int32_t *next_tokens)
{
    struct sim_state *st = b->state;
    int layers = st->kv->geo.num_layers;
    struct timespec t;
    long long step_ns = 0;

    if (st->check_kv)
        for (int i = 0; i < batch->n; i++)
            check_kv(st->kv, batch->items[i].req, batch->items[i].start);
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (st->speed > 0)
        step_ns = (long long) (1e9 * st->speed * sim_profile_step_seconds(
                      &st->profile, batch->n_prefill_tokens,
                      batch->prefill_attention, batch->n_decode,
                      batch->decode_kv_tokens));
    for (int layer = 0; layer < layers; layer++) {
        for (int i = 0; i < batch->n; i++) {
            const struct batch_item *it = &batch->items[i];
            for (int pos = it->start; pos < it->start + it->n_tokens; pos++)
                write_token_kv(st->kv, it->req, pos, layer);
        }
        if (step_ns > 0) {
            add_ns(&t, step_ns / layers);
            sleep_until(&t);
        }
        backend_layer_done(b, layer);
    }
    for (int i = 0; i < batch->n; i++)
        if (batch->items[i].sample)
            next_tokens[i] = sim_next_token(batch->items[i].req);
    return 0;
}

static void sim_free(struct backend *b)
{
    free(b->state);
    b->state = NULL;
}

/* --sim-check-kv's counters, for /metrics */
static int sim_metrics_text(const struct backend *b, char *buf, size_t cap)
{
    const struct sim_state *st = b->state;
    uint64_t checked, bad;
    int n;

    if (st == NULL || !st->check_kv)
        return 0;
    sim_kv_check_counts(&checked, &bad);
    n = snprintf(buf, cap,
                 "# HELP llmd:sim_kv_checked_tokens_total Token positions "
                 "whose KV rows --sim-check-kv verified.\n"
                 "# TYPE llmd:sim_kv_checked_tokens_total counter\n"
                 "llmd:sim_kv_checked_tokens_total %llu\n"
                 "# HELP llmd:sim_kv_mismatched_tokens_total Of which "
                 "held other bytes.\n"
                 "# TYPE llmd:sim_kv_mismatched_tokens_total counter\n"
                 "llmd:sim_kv_mismatched_tokens_total %llu\n",
                 (unsigned long long) checked, (unsigned long long) bad);
    return n < 0 || (size_t) n >= cap ? 0 : n;
}

const struct backend_ops sim_backend_ops = {
    .name = "sim",
    .init = sim_init,
    .attach_kv = sim_attach_kv,
    .forward = sim_forward,
    .free = sim_free,
    .metrics_text = sim_metrics_text,
};
