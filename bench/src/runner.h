/*
 * The run: sends a workload's requests on time (open loop), in bursts, or
 * chained after their session's previous turn, streams the answers through
 * the SSE parser, and hands each finished request to the records.
 */
#ifndef BENCH_RUNNER_H
#define BENCH_RUNNER_H

#include "body.h"
#include "records.h"
#include "workload.h"

#define RUNNER_MAX_HEADERS 8

struct runner_opts {
    const char         *host, *port, *path;
    struct body_opts    body;
    int                 max_conns;
    double              timeout_s;
    long                burst;          /* > 0: burst mode */
    const char         *headers[RUNNER_MAX_HEADERS];   /* "Name: value" */
    int                 n_headers;
};

struct runner_stats {
    long    connections;
    long    sent, finished;
    int     interrupted;
};

/* records must be initialised; its t0 is set to the start of the run */
int runner_run(const struct runner_opts *o, const struct workload *wl,
               struct records *rec, struct runner_stats *stats,
               char *err, size_t errlen);

#endif
