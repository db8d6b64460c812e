/*
 * Trace files, one JSON object per line:
 *   {"t":0.52,"id":3,"group":1,"session":7,"turn":0,"tag":"long",
 *    "body":{"model":..,"messages":[..],"max_tokens":..,...}}
 * "t" is the arrival offset in seconds.  A line with "after" is a later
 * turn: it is sent that many seconds after the previous line of the same
 * session finished, and its messages follow that turn's history and answer.
 * --dump-trace writes this format and --trace reads it; bodies are
 * re-rendered on replay (messages or prompt, max_tokens), other body
 * fields are not replayed.
 */
#ifndef BENCH_TRACE_H
#define BENCH_TRACE_H

#include <stdio.h>

#include "body.h"
#include "workload.h"

int trace_write(FILE *f, const struct workload *wl, const struct body_opts *o);
/* on error writes a one-line message (with the line number) to err */
int trace_read(const char *path, struct workload *wl, char *err, size_t errlen);

#endif
