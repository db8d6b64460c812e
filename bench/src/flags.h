/* Command-line flags of llmd-bench.  A bad flag or value prints one line
 * and exits with status 2. */
#ifndef BENCH_FLAGS_H
#define BENCH_FLAGS_H

#include "runner.h"
#include "workload.h"

struct bench_config {
    struct workload_params  wp;
    struct runner_opts      run;
    const char             *url, *trace, *out, *summary, *dump_trace;
    double                  slo_ttft_ms, slo_itl_ms;
    char                    host[256], port[16], path[1024];
};

/* fills cfg; on a bad flag writes one line to err and returns -1; returns
 * 1 after printing --help */
int flags_parse(int argc, char **argv, struct bench_config *cfg,
                char *err, size_t errlen);

#endif
