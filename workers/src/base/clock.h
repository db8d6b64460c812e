#ifndef LLMD_CLOCK_H
#define LLMD_CLOCK_H

#include <time.h>

/* Monotonic seconds: every latency in the worker is measured on this. */
static inline double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

#endif
