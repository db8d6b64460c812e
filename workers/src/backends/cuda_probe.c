/*
 * Device checks and measurements: is there a device this build can run on,
 * and what do its memory and tensor cores deliver (for the benchmark's
 * physical limits).
 */

#include "cuda.h"

#include <stdio.h>

int cuda_device_probe(int device, char *err, int err_len)
{
    struct cudaDeviceProp prop;
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);

    if (rc != cudaSuccess || n < 1) {
        snprintf(err, (size_t) err_len, "no CUDA device visible (%s)",
                 rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices");
        cudaGetLastError();
        return -1;
    }
    if (device < 0 || device >= n) {
        snprintf(err, (size_t) err_len, "--device %d: only %d CUDA device%s visible",
                 device, n, n == 1 ? "" : "s");
        return -1;
    }
    rc = cudaGetDeviceProperties(&prop, device);
    if (rc != cudaSuccess) {
        snprintf(err, (size_t) err_len, "CUDA device %d: %s", device,
                 cudaGetErrorString(rc));
        return -1;
    }
    /* the kernels are built for sm_90 and compute_90 PTX (cuda.mk) */
    if (prop.major < 9) {
        snprintf(err, (size_t) err_len, "CUDA device %d (%s) has compute "
                 "capability %d.%d; this build needs 9.0 or newer", device,
                 prop.name, prop.major, prop.minor);
        return -1;
    }
    return 0;
}

/* Best of 5 timings of run(arg) on the default stream, in seconds. */
static double best_of_5(void (*run)(void *arg), void *arg)
{
    cudaEvent_t t0, t1;
    float best = 0;

    if (cudaEventCreate(&t0) != cudaSuccess || cudaEventCreate(&t1) != cudaSuccess)
        return 0;
    run(arg);                               /* warm up */
    for (int i = 0; i < 5; i++) {
        float ms;

        cudaEventRecord(t0, 0);
        run(arg);
        cudaEventRecord(t1, 0);
        if (cudaEventSynchronize(t1) != cudaSuccess
            || cudaEventElapsedTime(&ms, t0, t1) != cudaSuccess)
            ms = 0;
        if (ms > 0 && (best == 0 || ms < best))
            best = ms;
    }
    cudaEventDestroy(t0);
    cudaEventDestroy(t1);
    return best / 1e3;
}

struct copy_job {
    void   *dst, *src;
    size_t  bytes;
};

static void copy_once(void *arg)
{
    struct copy_job *j = arg;

    cudaMemcpyAsync(j->dst, j->src, j->bytes, cudaMemcpyDeviceToDevice, 0);
}

double cuda_copy_gbs(int device, size_t bytes)
{
    struct copy_job j = { NULL, NULL, bytes };
    double s = 0;

    if (cudaSetDevice(device) == cudaSuccess && cudaMalloc(&j.dst, bytes) == cudaSuccess
        && cudaMalloc(&j.src, bytes) == cudaSuccess
        && cudaMemset(j.src, 1, bytes) == cudaSuccess)
        s = best_of_5(copy_once, &j);
    cudaFree(j.dst);
    cudaFree(j.src);
    cudaGetLastError();
    return s > 0 ? 2.0 * (double) bytes / s / 1e9 : 0;
}

struct gemm_job {
    cublasHandle_t  h;
    void           *a, *b, *c;
    int             n;
};

static void gemm_once(void *arg)
{
    struct gemm_job *j = arg;
    const float one = 1, zero = 0;

    cublasGemmEx(j->h, CUBLAS_OP_T, CUBLAS_OP_N, j->n, j->n, j->n, &one,
                 j->a, CUDA_R_16BF, j->n, j->b, CUDA_R_16BF, j->n, &zero,
                 j->c, CUDA_R_32F, j->n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

double cuda_gemm_tflops(int device, int n)
{
    struct gemm_job j = { NULL, NULL, NULL, NULL, n };
    size_t elems = (size_t) n * (size_t) n;
    double s = 0;

    if (cudaSetDevice(device) == cudaSuccess && cublasCreate(&j.h) == CUBLAS_STATUS_SUCCESS
        && cudaMalloc(&j.a, elems * 2) == cudaSuccess
        && cudaMalloc(&j.b, elems * 2) == cudaSuccess
        && cudaMalloc(&j.c, elems * 4) == cudaSuccess
        && cudaMemset(j.a, 0x3c, elems * 2) == cudaSuccess
        && cudaMemset(j.b, 0x3c, elems * 2) == cudaSuccess)
        s = best_of_5(gemm_once, &j);
    if (j.h)
        cublasDestroy(j.h);
    cudaFree(j.a);
    cudaFree(j.b);
    cudaFree(j.c);
    cudaGetLastError();
    return s > 0 ? 2.0 * (double) elems * n / s / 1e12 : 0;
}
