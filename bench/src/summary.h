/* The run's summary: percentiles, throughput, SLO attainment and goodput,
 * requests per upstream; as text (stdout) and as JSON (--summary). */
#ifndef BENCH_SUMMARY_H
#define BENCH_SUMMARY_H

#include <stdio.h>

#include "records.h"

struct summary_info {
    const char *workload;           /* or the trace path */
    unsigned long long seed;
    double      rate;               /* 0 = none */
    long        burst;
    double      cpu_s;              /* the client's own CPU time */
    long        connections;
};

/* returns -1 if the JSON file cannot be written */
int summary_write(const struct records *r, const struct summary_info *info,
                  FILE *text, const char *json_path);

/* nearest-rank percentile of v (sorted in place); -1 when empty */
double percentile(struct float_vec *v, double p);

#endif
