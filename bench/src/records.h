/*
 * Per-request records: one JSONL line per finished request, and the
 * figures the summary needs, kept per tag (mixed: short / long).
 */
#ifndef BENCH_RECORDS_H
#define BENCH_RECORDS_H

#include <stddef.h>
#include <stdio.h>

#include "workload.h"

struct request_result {
    size_t                      id;
    const struct bench_request *req;
    double                      t_sched, t_send;   /* absolute, seconds */
    double                      t_first, t_last, t_done; /* 0 = never */
    const float                *gaps;              /* ms between text chunks */
    size_t                      n_gaps;
    long                        chunks;            /* text chunks */
    long                        prompt_tokens;     /* usage; -1 = none */
    long                        output_tokens;
    int                         status;            /* 0 = no response */
    const char                 *upstream;
    const char                 *error;             /* NULL = success */
};

struct float_vec {
    float  *v;
    size_t  n, cap;
};

#define RECORDS_MAX_TAGS 8

struct tag_stats {
    const char         *tag;                /* NULL: untagged */
    long                requests, ok, met;
    long                output_tokens;
    struct float_vec    ttft, e2e, tpot, itl;
};

struct upstream_count {
    char   *name;
    long    count;
};

struct records {
    FILE                   *out;            /* JSONL, or NULL */
    double                  t0;             /* the run's start */
    double                  slo_ttft_ms, slo_itl_ms;    /* 0 = none */
    double                  t_end;          /* the last completion */
    struct tag_stats        tags[RECORDS_MAX_TAGS];
    int                     n_tags;
    struct upstream_count  *upstreams;
    size_t                  n_upstreams;
    struct float_vec        lag;            /* send time - scheduled, ms */
};

void records_init(struct records *r, FILE *out, double t0,
                  double slo_ttft_ms, double slo_itl_ms);
void records_add(struct records *r, const struct request_result *res);
void records_free(struct records *r);

void float_vec_push(struct float_vec *v, float x);

#endif
