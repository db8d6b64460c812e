#include "records.h"

#include <stdlib.h>
#include <string.h>

#include "body.h"

void records_init(struct records *r, FILE *out, double t0,
                  double slo_ttft_ms, double slo_itl_ms)
{
    memset(r, 0, sizeof(*r));
    r->out = out;
    r->t0 = t0;
    r->slo_ttft_ms = slo_ttft_ms;
    r->slo_itl_ms = slo_itl_ms;
}

void float_vec_push(struct float_vec *v, float x)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 256;
        v->v = realloc(v->v, v->cap * sizeof(float));
        if (v->v == NULL)
            abort();
    }
    v->v[v->n++] = x;
}

static struct tag_stats *tag_slot(struct records *r, const char *tag)
{
    for (int i = 0; i < r->n_tags; i++) {
        const char *t = r->tags[i].tag;

        if ((t == NULL && tag == NULL) || (t && tag && strcmp(t, tag) == 0))
            return &r->tags[i];
    }
    if (r->n_tags == RECORDS_MAX_TAGS)
        return &r->tags[RECORDS_MAX_TAGS - 1];  /* beyond that, lumped */
    r->tags[r->n_tags].tag = tag;
    return &r->tags[r->n_tags++];
}

static void count_upstream(struct records *r, const char *name)
{
    if (name == NULL)
        name = "";
    for (size_t i = 0; i < r->n_upstreams; i++)
        if (strcmp(r->upstreams[i].name, name) == 0) {
            r->upstreams[i].count++;
            return;
        }
    r->upstreams = realloc(r->upstreams, (r->n_upstreams + 1) * sizeof(*r->upstreams));
    if (r->upstreams == NULL)
        abort();
    r->upstreams[r->n_upstreams++] = (struct upstream_count) { strdup(name), 1 };
}

static double ms(double a, double b)
{
    return (a - b) * 1000.0;
}

/* time per output token after the first; per token, not per chunk, so a
 * server that batches tokens into chunks is judged on the same scale */
static double tpot_ms(const struct request_result *res)
{
    long tokens = res->output_tokens >= 0 ? res->output_tokens : res->chunks;

    if (tokens < 2 || res->t_first == 0)
        return -1;
    return ms(res->t_last, res->t_first) / (double) (tokens - 1);
}

static void add_ms(struct evbuffer *b, const char *key, double v)
{
    if (v >= 0)
        evbuffer_add_printf(b, ",\"%s\":%.3f", key, v);
    else
        evbuffer_add_printf(b, ",\"%s\":null", key);
}

static void write_line(struct records *r, const struct request_result *res,
                       double ttft, double e2e, double tpot, int met)
{
    const struct bench_request *q = res->req;
    struct evbuffer *b = evbuffer_new();

    evbuffer_add_printf(b, "{\"id\":%zu,\"group\":%d,\"session\":%d,\"turn\":%d,\"tag\":",
                        res->id, q->group, q->session, q->turn);
    if (q->tag)
        json_add_string(b, q->tag, strlen(q->tag));
    else
        evbuffer_add_printf(b, "null");
    evbuffer_add_printf(b, ",\"sched_s\":%.6f,\"send_s\":%.6f,\"status\":%d",
                        res->t_sched - r->t0, res->t_send - r->t0, res->status);
    add_ms(b, "ttft_ms", ttft);
    add_ms(b, "e2e_ms", e2e);
    add_ms(b, "tpot_ms", tpot);
    evbuffer_add_printf(b, ",\"prompt_tokens\":%ld,\"output_tokens\":%ld,\"chunks\":%ld",
                        res->prompt_tokens, res->output_tokens, res->chunks);
    evbuffer_add_printf(b, ",\"upstream\":");
    if (res->upstream)
        json_add_string(b, res->upstream, strlen(res->upstream));
    else
        evbuffer_add_printf(b, "null");
    evbuffer_add_printf(b, ",\"error\":");
    if (res->error)
        json_add_string(b, res->error, strlen(res->error));
    else
        evbuffer_add_printf(b, "null");
    evbuffer_add_printf(b, ",\"slo_met\":%s,\"itl_ms\":[", met ? "true" : "false");
    for (size_t i = 0; i < res->n_gaps; i++)
        evbuffer_add_printf(b, i ? ",%.3f" : "%.3f", (double) res->gaps[i]);
    evbuffer_add(b, "]}\n", 3);
    size_t len = evbuffer_get_length(b);

    fwrite(evbuffer_pullup(b, -1), 1, len, r->out);
    evbuffer_free(b);
}

void records_add(struct records *r, const struct request_result *res)
{
    struct tag_stats *t = tag_slot(r, res->req->tag);
    int ok = res->error == NULL;
    double ttft = res->t_first > 0 ? ms(res->t_first, res->t_send) : -1;
    double e2e = ms(res->t_done, res->t_send);
    double tpot = tpot_ms(res);
    int met = ok && (r->slo_ttft_ms <= 0 || (ttft >= 0 && ttft <= r->slo_ttft_ms))
                 && (r->slo_itl_ms <= 0 || tpot <= r->slo_itl_ms);

    t->requests++;
    if (res->t_done > r->t_end)
        r->t_end = res->t_done;
    float_vec_push(&r->lag, (float) ms(res->t_send, res->t_sched));
    count_upstream(r, res->upstream);
    if (ok) {
        t->ok++;
        t->met += met;
        t->output_tokens += res->output_tokens >= 0 ? res->output_tokens : res->chunks;
        if (ttft >= 0)
            float_vec_push(&t->ttft, (float) ttft);
        float_vec_push(&t->e2e, (float) e2e);
        if (tpot >= 0)
            float_vec_push(&t->tpot, (float) tpot);
        for (size_t i = 0; i < res->n_gaps; i++)
            float_vec_push(&t->itl, res->gaps[i]);
    }
    if (r->out)
        write_line(r, res, ttft, e2e, tpot, met);
}

void records_free(struct records *r)
{
    for (int i = 0; i < r->n_tags; i++) {
        free(r->tags[i].ttft.v);
        free(r->tags[i].e2e.v);
        free(r->tags[i].tpot.v);
        free(r->tags[i].itl.v);
    }
    for (size_t i = 0; i < r->n_upstreams; i++)
        free(r->upstreams[i].name);
    free(r->upstreams);
    free(r->lag.v);
}
