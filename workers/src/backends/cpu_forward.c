/*
 * Forward pass of a Llama-family decoder over one engine batch.
 *
 * All new tokens of all batch items are rows of one activation matrix, so
 * every matrix multiply reads its weights once per step however many
 * sequences and prompt chunks share it.  Each row's result depends only on
 * that row (and its own sequence's KV), never on what else is in the batch
 * or how the work is split over threads, so batching and chunked prefill
 * give bit-identical logits.
 */

#include "cpu_forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "cpu_sample.h"

/* ------------------------------------------------------------------------ */
/* scratch */

static int grow(void **p, size_t bytes)
{
    void *n = realloc(*p, bytes ? bytes : 1);

    if (n == NULL)
        return -1;
    *p = n;
    return 0;
}

static int ensure_rows(struct cpu_state *st, int rows, int items, int samples)
{
    const struct model_config *c = &st->model.cfg;
    size_t r = (size_t) rows;
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;

    if (rows > st->cap_rows) {
        if (grow((void **) &st->x, r * c->dim * 4) || grow((void **) &st->xb, r * c->dim * 4)
            || grow((void **) &st->xb2, r * q_dim * 4) || grow((void **) &st->q, r * q_dim * 4)
            || grow((void **) &st->k, r * kv_dim * 4) || grow((void **) &st->v, r * kv_dim * 4)
            || grow((void **) &st->hb, r * c->hidden_dim * 4)
            || grow((void **) &st->hb2, r * c->hidden_dim * 4)
            || grow((void **) &st->row_item, r * sizeof(int))
            || grow((void **) &st->row_pos, r * sizeof(int)))
            return -1;
        st->cap_rows = rows;
    }
    if (items > st->cap_items) {
        if (grow((void **) &st->item_logits, (size_t) items * sizeof(int)))
            return -1;
        st->cap_items = items;
    }
    if (samples > st->cap_sample) {
        if (grow((void **) &st->xs, (size_t) samples * c->dim * 4)
            || grow((void **) &st->logits, (size_t) samples * c->vocab_size * 4))
            return -1;
        st->cap_sample = samples;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* parallel matrix multiply: up to three matrices on the same input rows */

struct matmul_part {
    const struct weight *w;
    const float         *x;         /* [n][w->cols] */
    float               *y;         /* [n][w->rows] */
};

struct matmul_job {
    struct cpu_state   *st;
    struct matmul_part  part[3];
    int                 n_parts;
    int                 n;          /* rows of x */
    int                 rows_per_task;
    int                 first_task[4];
};

static void matmul_task(void *arg, int task, int thread)
{
    struct matmul_job *j = arg;
    int p = 0, r0, r1;

    while (task >= j->first_task[p + 1])
        p++;
    r0 = (task - j->first_task[p]) * j->rows_per_task;
    r1 = r0 + j->rows_per_task;
    if (r1 > j->part[p].w->rows)
        r1 = j->part[p].w->rows;
    matmul_rows(j->part[p].w, j->part[p].x, j->n, j->part[p].y, j->part[p].w->rows,
                r0, r1, j->st->row_scratch + (size_t) thread * j->st->row_scratch_len);
}

static void matmul(struct cpu_state *st, int n, const struct matmul_part *parts,
    int n_parts)
{
    struct matmul_job j = { .st = st, .n_parts = n_parts, .n = n };
    int total = 0, tasks;

    for (int i = 0; i < n_parts; i++) {
        j.part[i] = parts[i];
        total += parts[i].w->rows;
    }
    /* about 8 tasks per thread, at least 16 rows each */
    j.rows_per_task = total / (st->pool.n_threads * 8);
    if (j.rows_per_task < 16)
        j.rows_per_task = 16;
    tasks = 0;
    for (int i = 0; i < n_parts; i++) {
        j.first_task[i] = tasks;
        tasks += (parts[i].w->rows + j.rows_per_task - 1) / j.rows_per_task;
    }
    j.first_task[n_parts] = tasks;
    pool_run(&st->pool, matmul_task, &j, tasks);
}

/* ------------------------------------------------------------------------ */
/* attention through the block tables */

struct attention_job {
    struct cpu_state       *st;
    const struct batch     *batch;
    int                     layer;
};

static const float *kv_row(const struct cpu_state *st,
    const struct worker_request *r, int layer, int k_or_v, int pos)
{
    int bt = st->kv->geo.block_tokens;

    return (const float *) kv_slot(st->kv, r->blocks[pos / bt], layer, k_or_v, pos % bt);
}

static void attention_task(void *arg, int task, int thread)
{
    struct attention_job *j = arg;
    struct cpu_state *st = j->st;
    const struct model_config *c = &st->model.cfg;
    int row = task / c->n_heads, head = task % c->n_heads;
    int hd = c->head_dim, kv_head = head / (c->n_heads / c->n_kv_heads);
    int pos = st->row_pos[row];
    const struct worker_request *r = j->batch->items[st->row_item[row]].req;
    const float *q = st->q + (size_t) row * c->n_heads * hd + (size_t) head * hd;
    float *out = st->xb2 + (size_t) row * c->n_heads * hd + (size_t) head * hd;
    float *att = st->att + (size_t) thread * st->att_len;
    float scale = 1.0f / sqrtf((float) hd);

    for (int t = 0; t <= pos; t++)
        att[t] = dot_f32(q, kv_row(st, r, j->layer, 0, t) + (size_t) kv_head * hd, hd) * scale;
    softmax(att, pos + 1);
    memset(out, 0, sizeof(float) * (size_t) hd);
    for (int t = 0; t <= pos; t++)
        axpy_f32(out, att[t], kv_row(st, r, j->layer, 1, t) + (size_t) kv_head * hd, hd);
}

/* ------------------------------------------------------------------------ */

static void add_bias(float *y, const float *bias, int rows, int n)
{
    if (bias == NULL)
        return;
    for (int t = 0; t < rows; t++)
        for (int i = 0; i < n; i++)
            y[(size_t) t * n + i] += bias[i];
}

static void layer_forward(struct cpu_state *st, const struct batch *batch,
    int layer, int rows)
{
    const struct model_config *c = &st->model.cfg;
    const struct layer_weights *w = &st->model.layers[layer];
    int dim = c->dim, hd = c->head_dim, hidden = c->hidden_dim;
    int q_dim = c->n_heads * hd, kv_dim = c->n_kv_heads * hd;
    size_t kv_bytes = sizeof(float) * (size_t) kv_dim;

    /* attention block */
    for (int t = 0; t < rows; t++)
        rmsnorm(st->xb + (size_t) t * dim, st->x + (size_t) t * dim, w->attn_norm,
                dim, c->norm_eps);
    matmul(st, rows, (struct matmul_part[]) {
        { &w->wq, st->xb, st->q }, { &w->wk, st->xb, st->k }, { &w->wv, st->xb, st->v },
    }, 3);
    add_bias(st->q, w->bq, rows, q_dim);
    add_bias(st->k, w->bk, rows, kv_dim);
    add_bias(st->v, w->bv, rows, kv_dim);
    for (int t = 0; t < rows; t++) {
        const struct worker_request *r = batch->items[st->row_item[t]].req;
        int pos = st->row_pos[t];
        double rpos = pos / (double) c->rope_linear_scale;
        int neox = c->rope_style == ROPE_NEOX;

        rope(st->q + (size_t) t * q_dim, c->n_heads, hd, c->n_rot, st->inv_freq, rpos, neox);
        rope(st->k + (size_t) t * kv_dim, c->n_kv_heads, hd, c->n_rot, st->inv_freq, rpos, neox);
        memcpy((void *) kv_row(st, r, layer, 0, pos), st->k + (size_t) t * kv_dim, kv_bytes);
        memcpy((void *) kv_row(st, r, layer, 1, pos), st->v + (size_t) t * kv_dim, kv_bytes);
    }
    {
        struct attention_job j = { st, batch, layer };
        pool_run(&st->pool, attention_task, &j, rows * c->n_heads);
    }
    matmul(st, rows, (struct matmul_part[]) { { &w->wo, st->xb2, st->xb } }, 1);
    for (size_t i = 0; i < (size_t) rows * dim; i++)
        st->x[i] += st->xb[i];

    /* SwiGLU feed-forward block */
    for (int t = 0; t < rows; t++)
        rmsnorm(st->xb + (size_t) t * dim, st->x + (size_t) t * dim, w->ffn_norm,
                dim, c->norm_eps);
    matmul(st, rows, (struct matmul_part[]) {
        { &w->w_gate, st->xb, st->hb }, { &w->w_up, st->xb, st->hb2 },
    }, 2);
    for (size_t i = 0; i < (size_t) rows * hidden; i++) {
        float g = st->hb[i];
        st->hb[i] = g / (1.0f + expf(-g)) * st->hb2[i];
    }
    matmul(st, rows, (struct matmul_part[]) { { &w->w_down, st->hb, st->xb } }, 1);
    for (size_t i = 0; i < (size_t) rows * dim; i++)
        st->x[i] += st->xb[i];
}

int cpu_forward_batch(struct cpu_state *st, const struct batch *batch)
{
    const struct model_config *c = &st->model.cfg;
    int rows = 0, n_sample = 0, row = 0;

    for (int i = 0; i < batch->n; i++) {
        rows += batch->items[i].n_tokens;
        n_sample += batch->items[i].sample;
    }
    if (ensure_rows(st, rows, batch->n, n_sample) != 0)
        return -1;

    /* embed every new token */
    for (int i = 0; i < batch->n; i++) {
        const struct batch_item *it = &batch->items[i];
        for (int k = 0; k < it->n_tokens; k++, row++) {
            int pos = it->start + k;
            int32_t tok = it->req->tokens[pos];
            const float *e;

            if (tok < 0 || tok >= c->vocab_size)
                tok = 0;
            e = weight_row(&st->model.token_embd, tok, st->x + (size_t) row * c->dim);
            if (e != st->x + (size_t) row * c->dim)
                memcpy(st->x + (size_t) row * c->dim, e, sizeof(float) * (size_t) c->dim);
            st->row_item[row] = i;
            st->row_pos[row] = pos;
        }
    }
    for (int l = 0; l < c->n_layers; l++) {
        layer_forward(st, batch, l, rows);
        if (st->backend)
            backend_layer_done(st->backend, l);
    }

    /* the head, only for the last row of the items that sample */
    st->n_logits = 0;
    row = 0;
    for (int i = 0; i < batch->n; i++) {
        const struct batch_item *it = &batch->items[i];
        row += it->n_tokens;
        st->item_logits[i] = -1;
        if (!it->sample)
            continue;
        rmsnorm(st->xs + (size_t) st->n_logits * c->dim, st->x + (size_t) (row - 1) * c->dim,
                st->model.output_norm, c->dim, c->norm_eps);
        st->item_logits[i] = st->n_logits++;
    }
    if (st->n_logits > 0)
        matmul(st, st->n_logits, (struct matmul_part[]) {
            { &st->model.output, st->xs, st->logits } }, 1);
    return 0;
}
