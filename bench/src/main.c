/*
 * llmd-bench: an open-loop load generator for OpenAI-style streaming
 * endpoints.  Builds (or reads) a workload, sends it, writes one JSON line
 * per request and a summary.  See bench/README.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "flags.h"
#include "records.h"
#include "runner.h"
#include "summary.h"
#include "trace.h"
#include "workload.h"

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec * 1e-6
           + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec * 1e-6;
}

/* every connection is a descriptor: take all the process may have */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int die(const char *msg, int status)
{
    fprintf(stderr, "llmd-bench: %s\n", msg);
    return status;
}

int main(int argc, char **argv)
{
    struct bench_config cfg;
    struct workload wl;
    struct records rec;
    struct runner_stats stats;
    char err[512];
    FILE *out = NULL;
    int rc = flags_parse(argc, argv, &cfg, err, sizeof(err));

    if (rc > 0)
        return 0;
    if (rc < 0)
        return die(err, 2);
    if (cfg.trace ? trace_read(cfg.trace, &wl, err, sizeof(err))
                  : workload_generate(&cfg.wp, &wl)) {
        return die(cfg.trace ? err : "workload generation failed", 2);
    }
    if (wl.chained && cfg.run.burst > 0) {
        workload_free(&wl);
        return die("--concurrency-burst needs independent requests", 2);
    }
    if (cfg.dump_trace) {
        FILE *f = fopen(cfg.dump_trace, "w");

        if (f == NULL || trace_write(f, &wl, &cfg.run.body) != 0) {
            if (f)
                fclose(f);
            workload_free(&wl);
            return die("--dump-trace: cannot write the file", 1);
        }
        fclose(f);
        workload_free(&wl);
        return 0;
    }
    if (cfg.out && (out = fopen(cfg.out, "w")) == NULL) {
        workload_free(&wl);
        return die("--out: cannot open the file", 2);
    }
    raise_fd_limit();
    records_init(&rec, out, 0, cfg.slo_ttft_ms, cfg.slo_itl_ms);
    if (runner_run(&cfg.run, &wl, &rec, &stats, err, sizeof(err)) != 0) {
        records_free(&rec);
        workload_free(&wl);
        if (out)
            fclose(out);
        return die(err, 2);
    }
    if (out)
        fclose(out);

    struct summary_info info = {
        .workload = cfg.trace ? cfg.trace : cfg.wp.name,
        .seed = cfg.wp.seed, .rate = cfg.wp.rate, .burst = cfg.run.burst,
        .cpu_s = cpu_seconds(), .connections = stats.connections,
    };

    rc = 0;
    if (stats.interrupted)
        fprintf(stdout, "interrupted: %ld of %zu requests finished\n",
                stats.finished, wl.n);
    if (summary_write(&rec, &info, stdout, cfg.summary) != 0)
        rc = die("--summary: cannot write the file", 1);
    records_free(&rec);
    workload_free(&wl);
    return rc;
}
