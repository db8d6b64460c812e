#include "summary.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;

    return (x > y) - (x < y);
}

double percentile(struct float_vec *v, double p)
{
    if (v->n == 0)
        return -1;
    qsort(v->v, v->n, sizeof(float), cmp_float);
    size_t rank = (size_t) ceil(p / 100.0 * (double) v->n);

    return v->v[rank > 0 ? rank - 1 : 0];
}

static json_t *num(double x)
{
    return x >= 0 ? json_real(round(x * 1000.0) / 1000.0) : json_null();
}

static double mean(const struct float_vec *v)
{
    double s = 0;

    for (size_t i = 0; i < v->n; i++)
        s += v->v[i];
    return v->n ? s / (double) v->n : -1;
}

static json_t *dist(struct float_vec *v)
{
    return json_pack("{s:o,s:o,s:o,s:o}", "p50", num(percentile(v, 50)),
                     "p90", num(percentile(v, 90)), "p99", num(percentile(v, 99)),
                     "mean", num(mean(v)));
}

static void concat(struct float_vec *dst, const struct float_vec *src)
{
    for (size_t i = 0; i < src->n; i++)
        float_vec_push(dst, src->v[i]);
}

/* the figures of one tag, or of all of them merged */
static json_t *stats(const struct tag_stats *t, double duration, const struct records *r)
{
    struct tag_stats s = *t;
    json_t *o;

    /* percentile() sorts; work on copies so the caller's vectors stay */
    s.ttft = s.e2e = s.tpot = s.itl = (struct float_vec) { 0 };
    concat(&s.ttft, &t->ttft);
    concat(&s.e2e, &t->e2e);
    concat(&s.tpot, &t->tpot);
    concat(&s.itl, &t->itl);
    o = json_pack("{s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
                  "requests", (json_int_t) s.requests,
                  "succeeded", (json_int_t) s.ok,
                  "failed", (json_int_t) (s.requests - s.ok),
                  "success_rate", num(s.requests ? (double) s.ok / (double) s.requests : 0),
                  "throughput_rps", num(duration > 0 ? (double) s.ok / duration : 0),
                  "output_tokens_per_s",
                  num(duration > 0 ? (double) s.output_tokens / duration : 0),
                  "ttft_ms", dist(&s.ttft), "itl_ms", dist(&s.itl),
                  "tpot_ms", dist(&s.tpot), "e2e_ms", dist(&s.e2e));
    json_object_set_new(o, "output_tokens", json_integer(s.output_tokens));
    json_object_set_new(o, "slo", json_pack("{s:o,s:o,s:I,s:o,s:o}",
        "ttft_ms", r->slo_ttft_ms > 0 ? json_real(r->slo_ttft_ms) : json_null(),
        "itl_ms", r->slo_itl_ms > 0 ? json_real(r->slo_itl_ms) : json_null(),
        "met", (json_int_t) s.met,
        "attainment", num(s.requests ? (double) s.met / (double) s.requests : 0),
        "goodput_rps", num(duration > 0 ? (double) s.met / duration : 0)));
    free(s.ttft.v);
    free(s.e2e.v);
    free(s.tpot.v);
    free(s.itl.v);
    return o;
}

static void merge(struct tag_stats *all, const struct records *r)
{
    memset(all, 0, sizeof(*all));
    for (int i = 0; i < r->n_tags; i++) {
        const struct tag_stats *t = &r->tags[i];

        all->requests += t->requests;
        all->ok += t->ok;
        all->met += t->met;
        all->output_tokens += t->output_tokens;
        concat(&all->ttft, &t->ttft);
        concat(&all->e2e, &t->e2e);
        concat(&all->tpot, &t->tpot);
        concat(&all->itl, &t->itl);
    }
}

static double get(json_t *o, const char *a, const char *b)
{
    json_t *v = b ? json_object_get(json_object_get(o, a), b) : json_object_get(o, a);

    return json_is_number(v) ? json_number_value(v) : -1;
}

static void print_text(FILE *f, json_t *o, const char *label)
{
    fprintf(f, "%-8s requests %lld  ok %.2f%%  %.2f req/s  %.1f out tok/s\n", label,
            (long long) json_integer_value(json_object_get(o, "requests")),
            100 * get(o, "success_rate", NULL), get(o, "throughput_rps", NULL),
            get(o, "output_tokens_per_s", NULL));
    fprintf(f, "         TTFT ms p50 %.1f p90 %.1f p99 %.1f | ITL ms p50 %.2f p90 %.2f "
            "p99 %.2f | e2e ms p50 %.1f p90 %.1f\n",
            get(o, "ttft_ms", "p50"), get(o, "ttft_ms", "p90"), get(o, "ttft_ms", "p99"),
            get(o, "itl_ms", "p50"), get(o, "itl_ms", "p90"), get(o, "itl_ms", "p99"),
            get(o, "e2e_ms", "p50"), get(o, "e2e_ms", "p90"));
    fprintf(f, "         SLO attainment %.2f%%  goodput %.2f req/s\n",
            100 * get(o, "slo", "attainment"), get(o, "slo", "goodput_rps"));
}

int summary_write(const struct records *r, const struct summary_info *info,
                  FILE *text, const char *json_path)
{
    double duration = r->t_end > r->t0 ? r->t_end - r->t0 : 0;
    struct tag_stats all;
    struct float_vec lag = { 0 };
    json_t *o, *ups = json_object(), *tags = json_object();
    int rc = 0;

    merge(&all, r);
    o = stats(&all, duration, r);
    concat(&lag, &r->lag);
    json_object_set_new(o, "workload", json_string(info->workload));
    json_object_set_new(o, "seed", json_integer((json_int_t) info->seed));
    json_object_set_new(o, "rate", info->rate > 0 ? json_real(info->rate) : json_null());
    json_object_set_new(o, "concurrency_burst",
                        info->burst > 0 ? json_integer(info->burst) : json_null());
    json_object_set_new(o, "duration_s", num(duration));
    for (size_t i = 0; i < r->n_upstreams; i++)
        json_object_set_new(ups, r->upstreams[i].name[0] ? r->upstreams[i].name : "none",
                            json_integer(r->upstreams[i].count));
    json_object_set_new(o, "upstreams", ups);
    json_object_set_new(o, "send_lag_ms", json_pack("{s:o,s:o}",
                        "p99", num(percentile(&lag, 99)), "max", num(percentile(&lag, 100))));
    json_object_set_new(o, "client", json_pack("{s:o,s:I}", "cpu_s", num(info->cpu_s),
                        "connections_opened", (json_int_t) info->connections));
    if (r->n_tags > 1 || (r->n_tags == 1 && r->tags[0].tag)) {
        for (int i = 0; i < r->n_tags; i++)
            json_object_set_new(tags, r->tags[i].tag ? r->tags[i].tag : "none",
                                stats(&r->tags[i], duration, r));
        json_object_set_new(o, "by_tag", tags);
    } else {
        json_decref(tags);
    }

    if (text) {
        fprintf(text, "llmd-bench %s: %.2f s\n", info->workload, duration);
        print_text(text, o, "all");
        const char *key;
        json_t *v;

        json_object_foreach(json_object_get(o, "by_tag"), key, v)
            print_text(text, v, key);
        fprintf(text, "upstreams:");
        json_object_foreach(ups, key, v)
            fprintf(text, " %s=%lld", key, (long long) json_integer_value(v));
        fprintf(text, "\nsend lag ms p99 %.2f max %.2f, client CPU %.2f s\n",
                get(o, "send_lag_ms", "p99"), get(o, "send_lag_ms", "max"), info->cpu_s);
    }
    if (json_path && json_dump_file(o, json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0)
        rc = -1;
    json_decref(o);
    free(lag.v);
    free(all.ttft.v);
    free(all.e2e.v);
    free(all.tpot.v);
    free(all.itl.v);
    return rc;
}
