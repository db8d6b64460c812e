/*
 * Packing an engine batch into the step words of cuda_plan_layout.h.
 */

#include "cuda_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched/request.h"
#include "cpu_sample.h"

void cuda_split_plan(int max_keys, int n_queries, int n_heads, int n_sms,
    int *split_tokens, int *splits)
{
    int blocks = n_queries * n_heads, want = 1, by_len, tokens;

    if (max_keys < 1)
        max_keys = 1;
    if (blocks < 2 * n_sms)
        want = (2 * n_sms + blocks - 1) / (blocks > 0 ? blocks : 1);
    by_len = (max_keys + PLAN_SPLIT_MIN - 1) / PLAN_SPLIT_MIN;
    if (want > by_len)
        want = by_len;
    if (want > PLAN_MAX_SPLIT)
        want = PLAN_MAX_SPLIT;
    if (want < 1)
        want = 1;
    tokens = (max_keys + want - 1) / want;
    tokens = (tokens + PLAN_SPLIT_ALIGN - 1) / PLAN_SPLIT_ALIGN * PLAN_SPLIT_ALIGN;
    *split_tokens = tokens;
    *splits = plan_splits_of(max_keys, tokens);
}

size_t cuda_split_partials(int queries, int n_heads, int n_sms)
{
    /* one split each when the queries fill the machine; otherwise at most
     * ceil(2 * n_sms / blocks) splits each, i.e. blocks + 2 * n_sms */
    return (size_t) queries * (size_t) n_heads + 2 * (size_t) n_sms;
}

static int reserve(struct cuda_plan *p, size_t words, int items)
{
    if (words > p->cap_words) {
        size_t cap = p->cap_words ? p->cap_words : 1024;
        int32_t *w;

        while (cap < words)
            cap *= 2;
        w = realloc(p->words, cap * sizeof(int32_t));
        if (w == NULL)
            return -1;
        p->words = w;
        p->cap_words = cap;
    }
    if (items > p->cap_items) {
        int *s = realloc(p->item_sample, (size_t) items * sizeof(int));

        if (s == NULL)
            return -1;
        p->item_sample = s;
        p->cap_items = items;
    }
    return 0;
}

static int32_t float_bits(float f)
{
    int32_t i;

    memcpy(&i, &f, sizeof(i));
    return i;
}

/* Counts first, so that every array's offset is known before filling. */
static void count(struct cuda_plan *p, const struct batch *b,
    const struct cuda_plan_params *pp, int *max_keys)
{
    int bt = pp->block_tokens;

    p->n_rows = p->n_sample = p->n_att = p->n_tiles = 0;
    p->n_items = b->n;
    p->table_stride = 1;
    p->pure_decode = b->n > 0;
    *max_keys = 1;
    for (int i = 0; i < b->n; i++) {
        const struct batch_item *it = &b->items[i];
        int end = it->start + it->n_tokens, blocks = (end + bt - 1) / bt;

        p->n_rows += it->n_tokens;
        p->n_sample += it->sample;
        if (blocks > p->table_stride)
            p->table_stride = blocks;
        if (it->n_tokens != 1 || !it->sample)
            p->pure_decode = false;
        if (it->n_tokens > 1 && pp->tiles) {
            p->n_tiles += (it->n_tokens + PLAN_TILE_ROWS - 1) / PLAN_TILE_ROWS;
        } else {
            p->n_att += it->n_tokens;
            if (end > *max_keys)
                *max_keys = end;
        }
    }
}

int cuda_plan_build(struct cuda_plan *p, const struct batch *b,
    const struct cuda_plan_params *pp)
{
    int bt = pp->block_tokens, max_keys, row = 0, att = 0, tile = 0, smp = 0;
    int32_t *w, *token, *pos, *slot, *attw, *tilew, *srow, *spar, *table;
    size_t at = PLAN_HEADER_WORDS;

    count(p, b, pp, &max_keys);
    cuda_split_plan(max_keys, p->n_att, pp->n_heads, pp->n_sms,
                    &p->split_tokens, &p->max_splits);
    p->n_words = at + 3 * (size_t) p->n_rows + PLAN_ATT_WORDS * (size_t) p->n_att
                 + PLAN_TILE_WORDS * (size_t) p->n_tiles
                 + (1 + PLAN_PAR_WORDS) * (size_t) p->n_sample
                 + (size_t) p->n_items * (size_t) p->table_stride;
    if (reserve(p, p->n_words, p->n_items) != 0)
        return -1;

    w = p->words;
    w[PLAN_N_ROWS] = p->n_rows;
    w[PLAN_N_ITEMS] = p->n_items;
    w[PLAN_N_SAMPLE] = p->n_sample;
    w[PLAN_N_ATT] = p->n_att;
    w[PLAN_N_TILES] = p->n_tiles;
    w[PLAN_TABLE_STRIDE] = p->table_stride;
    w[PLAN_SPLIT_TOKENS] = p->split_tokens;
    w[PLAN_MAX_SPLITS] = p->max_splits;
#define PLACE(word, n) (w[word] = (int32_t) at, at += (size_t) (n), w + w[word])
    token = PLACE(PLAN_ROW_TOKEN, p->n_rows);
    pos = PLACE(PLAN_ROW_POS, p->n_rows);
    slot = PLACE(PLAN_ROW_SLOT, p->n_rows);
    attw = PLACE(PLAN_ATT, PLAN_ATT_WORDS * p->n_att);
    tilew = PLACE(PLAN_TILE, PLAN_TILE_WORDS * p->n_tiles);
    srow = PLACE(PLAN_SAMPLE_ROW, p->n_sample);
    spar = PLACE(PLAN_SAMPLE_PAR, PLAN_PAR_WORDS * p->n_sample);
    table = PLACE(PLAN_TABLE, p->n_items * p->table_stride);
#undef PLACE

    for (int i = 0; i < b->n; i++) {
        const struct batch_item *it = &b->items[i];
        struct worker_request *r = it->req;
        int blocks = (it->start + it->n_tokens + bt - 1) / bt;
        bool tiled = it->n_tokens > 1 && pp->tiles;

        for (int k = 0; k < p->table_stride; k++)
            table[(size_t) i * p->table_stride + k] = k < blocks ? r->blocks[k] : 0;
        for (int k = 0; k < it->n_tokens; k++) {
            int ps = it->start + k;

            token[row + k] = r->tokens[ps];
            pos[row + k] = ps;
            slot[row + k] = r->blocks[ps / bt] * bt + ps % bt;
            if (!tiled) {
                attw[att * PLAN_ATT_WORDS + 0] = row + k;
                attw[att * PLAN_ATT_WORDS + 1] = i;
                attw[att * PLAN_ATT_WORDS + 2] = ps + 1;
                att++;
            }
        }
        for (int k = 0; tiled && k < it->n_tokens; k += PLAN_TILE_ROWS) {
            int n = it->n_tokens - k < PLAN_TILE_ROWS ? it->n_tokens - k : PLAN_TILE_ROWS;

            tilew[tile * PLAN_TILE_WORDS + 0] = i;
            tilew[tile * PLAN_TILE_WORDS + 1] = row + k;
            tilew[tile * PLAN_TILE_WORDS + 2] = it->start + k;
            tilew[tile * PLAN_TILE_WORDS + 3] = n;
            tile++;
        }
        row += it->n_tokens;
        p->item_sample[i] = -1;
        if (!it->sample)
            continue;
        {
            float temp = (float) r->params.temperature, u = 0;

            if (temp > 0) {
                /* a double just below 1 may round up to 1.0f */
                u = (float) sample_uniform(&r->rng);
                if (u >= 1.0f)
                    u = nextafterf(1.0f, 0.0f);
            }
            srow[smp] = row - 1;
            spar[smp * PLAN_PAR_WORDS + 0] = float_bits(temp > 0 ? temp : 0);
            spar[smp * PLAN_PAR_WORDS + 1] = float_bits((float) r->params.top_p);
            spar[smp * PLAN_PAR_WORDS + 2] = float_bits(u);
            p->item_sample[i] = smp++;
        }
    }
    return 0;
}

void cuda_plan_free(struct cuda_plan *p)
{
    free(p->words);
    free(p->item_sample);
    memset(p, 0, sizeof(*p));
}
