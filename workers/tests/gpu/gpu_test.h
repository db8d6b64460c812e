/*
 * Helpers shared by the GPU tests: skip without a device, count failed
 * checks, report.  Header-only: each test is one program.
 */

#ifndef LLMD_GPU_TEST_H
#define LLMD_GPU_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

static int gpu_failures, gpu_checks;

/* Exit 0 with a SKIP line when no device can run the tests (none visible,
 * or older than this build's kernels); with --probe as the only argument,
 * just tell (exit 0: a device, 1: none). */
static void gpu_require_device(const char *name, int argc, char **argv)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    int probe = argc > 1 && strcmp(argv[1], "--probe") == 0;

    if (rc == cudaSuccess && n > 0) {
        struct cudaDeviceProp prop;

        /* the kernels are sm_90 code and compute_90 PTX (cuda.mk) */
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major < 9) {
            if (probe)
                exit(1);
            printf("SKIP: device 0 (%s) has compute capability %d.%d; the kernels "
                   "need 9.0 or newer: %s\n", prop.name, prop.major, prop.minor, name);
            exit(0);
        }
        if (probe)
            exit(0);
        return;
    }
    if (probe)
        exit(1);
    printf("SKIP: no CUDA device visible (%s): %s\n",
           rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices", name);
    exit(0);
}

__attribute__((format(printf, 2, 3)))
static void gpu_check(int ok, const char *fmt, ...)
{
    va_list ap;

    gpu_checks++;
    if (ok)
        return;
    gpu_failures++;
    printf("FAIL: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

#define GPU_OK(call) do { cudaError_t rc_ = (call); \
    if (rc_ != cudaSuccess) { printf("FAIL: %s: %s\n", #call, cudaGetErrorString(rc_)); \
                              exit(1); } } while (0)

static int gpu_report(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, gpu_checks, gpu_failures);
    return gpu_failures ? 1 : 0;
}

#endif
