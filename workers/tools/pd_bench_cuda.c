/*
 * llmd-pd-bench-cuda: the cuda-ipc transport's copy pattern against a
 * plain device-to-device copy on the same GPU, in the same run.
 *
 *   llmd-pd-bench-cuda [--tokens 1024,4096] [--layers 32 --kv-heads 8
 *                      --head-dim 128 --dtype-bytes 2 --block-tokens 16]
 *                      [--repeat 5] [--device 0]
 *
 * A child process allocates the destination pool and exports it with
 * cudaIpcGetMemHandle, as a decode worker does at pairing; the parent maps
 * it and copies, as a prefill worker does, one run per (layer, block) of
 * layer_bytes with cudaMemcpyAsync on its own stream, then synchronizes.
 * The baseline is one cudaMemcpy of the same bytes between two buffers of
 * the parent.  A "per layer" figure times the copies of the last layer
 * alone: what is left to move after a prefill's last layer (the exposed
 * time).  Prints one JSON line per size; SKIP without a device.
 */

#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static int check(cudaError_t rc, const char *what)
{
    if (rc != cudaSuccess) {
        fprintf(stderr, "llmd-pd-bench-cuda: %s: %s\n", what, cudaGetErrorString(rc));
        return -1;
    }
    return 0;
}

/* The decode worker's side, in a process of its own (exec'd: CUDA must not
 * be used in a child forked after the parent initialized it): allocate
 * the pool, export it, wait for the parent to finish. */
static int export_pool(size_t bytes, int device)
{
    cudaIpcMemHandle_t handle;
    uint8_t *pool;
    char go;

    cudaSetDevice(device);
    if (check(cudaMalloc((void **) &pool, bytes), "cudaMalloc (pool)")
        || check(cudaIpcGetMemHandle(&handle, pool), "cudaIpcGetMemHandle"))
        return 1;
    if (write(1, &handle, sizeof(handle)) != (ssize_t) sizeof(handle))
        return 1;
    if (read(0, &go, 1) < 0)
        return 1;
    cudaFree(pool);
    return 0;
}

/* One prompt size: a child process exports a pool by CUDA IPC, this one
 * copies a prefill's KV into it layer by layer and prints one JSON line. */
static int bench_size(const char *argv0, int tokens, int layers, int bt,
    int repeat, int device, size_t layer_bytes, size_t block_bytes)
{
    int blocks = (tokens + bt - 1) / bt;
    size_t total = (size_t) blocks * block_bytes;
    int to_child[2], to_parent[2];
    cudaIpcMemHandle_t handle;
    pid_t pid;
    int status = 0;
    uint8_t *src, *own_dst, *peer;
    cudaStream_t stream;
    double ipc[50], d2d[50], last[50];
    char go = 0;
    (void) status;

    if (pipe(to_child) || pipe(to_parent))
        return 1;
    pid = fork();
    if (pid == 0) {
        char bytes[32], dev[16];
        snprintf(bytes, sizeof(bytes), "%zu", total);
        snprintf(dev, sizeof(dev), "%d", device);
        dup2(to_child[0], 0);
        dup2(to_parent[1], 1);
        execl("/proc/self/exe", argv0, "--export-pool", bytes, dev, (char *) NULL);
        _exit(127);
    }
    if (read(to_parent[0], &handle, sizeof(handle)) != (ssize_t) sizeof(handle)) {
        waitpid(pid, &status, 0);
        fprintf(stderr, "llmd-pd-bench-cuda: the exporting process failed\n");
        return 1;
    }
    cudaSetDevice(device);
    if (check(cudaMalloc((void **) &src, total), "cudaMalloc")
        || check(cudaMalloc((void **) &own_dst, total), "cudaMalloc")
        || check(cudaMemset(src, 7, total), "cudaMemset")
        || check(cudaStreamCreate(&stream), "cudaStreamCreate")
        || check(cudaIpcOpenMemHandle((void **) &peer, handle,
                                      cudaIpcMemLazyEnablePeerAccess),
                 "cudaIpcOpenMemHandle"))
        return 1;
    for (int k = 0; k < repeat; k++) {
        double t0 = now_seconds(), t1;

        cudaMemcpy(own_dst, src, total, cudaMemcpyDeviceToDevice);
        cudaDeviceSynchronize();
        d2d[k] = (double) total / (now_seconds() - t0) / 1e9;

        t0 = now_seconds();
        for (int l = 0; l < layers; l++)
            for (int b = 0; b < blocks; b++) {
                size_t off = (size_t) b * block_bytes + (size_t) l * layer_bytes;
                cudaMemcpyAsync(peer + off, src + off, layer_bytes,
                                cudaMemcpyDeviceToDevice, stream);
            }
        cudaStreamSynchronize(stream);
        t1 = now_seconds();
        ipc[k] = (double) total / (t1 - t0) / 1e9;

        /* the last layer alone: the exposed part of a streamed prefill */
        t0 = now_seconds();
        for (int b = 0; b < blocks; b++) {
            size_t off = (size_t) b * block_bytes + (size_t) (layers - 1) * layer_bytes;
            cudaMemcpyAsync(peer + off, src + off, layer_bytes,
                            cudaMemcpyDeviceToDevice, stream);
        }
        cudaStreamSynchronize(stream);
        last[k] = (now_seconds() - t0) * 1e3;
    }
    qsort(ipc, (size_t) repeat, sizeof(double), cmp_d);
    qsort(d2d, (size_t) repeat, sizeof(double), cmp_d);
    qsort(last, (size_t) repeat, sizeof(double), cmp_d);
    printf("{\"tokens\":%d,\"bytes\":%zu,\"d2d_gbps\":%.1f,\"ipc_gbps\":%.1f,"
           "\"ratio\":%.3f,\"last_layer_ms\":%.4f,\"last_layer_ms_per_1k_tokens\":%.4f}\n",
           tokens, total, d2d[repeat / 2], ipc[repeat / 2],
           ipc[repeat / 2] / d2d[repeat / 2], last[repeat / 2],
           last[repeat / 2] * 1000.0 / tokens);
    fflush(stdout);
    cudaIpcCloseMemHandle(peer);
    cudaFree(src);
    cudaFree(own_dst);
    cudaStreamDestroy(stream);
    if (write(to_child[1], &go, 1) != 1)
        return 1;
    waitpid(pid, NULL, 0);
    close(to_child[0]); close(to_child[1]);
    close(to_parent[0]); close(to_parent[1]);
    return 0;
}

int main(int argc, char **argv)
{
    int layers = 32, kv_heads = 8, head_dim = 128, dtype = 2, bt = 16, repeat = 5, device = 0;
    char tokens_list[256] = "1024,4096";
    int count = 0;

    if (argc == 4 && !strcmp(argv[1], "--export-pool"))
        return export_pool((size_t) strtoull(argv[2], NULL, 10), atoi(argv[3]));
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens")) snprintf(tokens_list, sizeof(tokens_list), "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-heads")) kv_heads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--head-dim")) head_dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype-bytes")) dtype = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--block-tokens")) bt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--device")) device = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "llmd-pd-bench-cuda: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device) {
        printf("SKIP: llmd-pd-bench-cuda: no CUDA device visible\n");
        return 0;
    }
    if (repeat < 1 || repeat > 50)
        return 2;

    size_t row = (size_t) kv_heads * head_dim * dtype;
    size_t layer_bytes = 2 * (size_t) bt * row, block_bytes = layer_bytes * layers;

    for (char *tok = strtok(tokens_list, ","); tok; tok = strtok(NULL, ","))
        if (bench_size(argv[0], atoi(tok), layers, bt, repeat, device,
                       layer_bytes, block_bytes) != 0)
            return 1;
    return 0;
}
