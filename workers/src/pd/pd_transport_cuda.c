/*
 * KV transfer transports for pages in GPU memory (see pd/pd_transport.h):
 *
 *   cuda-ipc  prefill and decode worker on the same GPU.  At pairing the
 *             decode worker exports its pool (cudaIpcGetMemHandle); the
 *             prefill worker maps it once and copies each run device to
 *             device on a stream of its own.  NCCL cannot do this pairing:
 *             it refuses two ranks on one GPU.
 *   nccl      different GPUs.  One 2-rank communicator per pair, made once
 *             at pairing (the unique id travels over the pair connection,
 *             non-blocking init under a deadline, a 1-byte warm-up so no
 *             request pays for lazy setup); each batch of runs is one
 *             grouped ncclSend on the prefill side and, when its RUNS frame
 *             arrives, one grouped ncclRecv on the decode side.  An error
 *             or a missed deadline aborts the communicator (ncclCommAbort)
 *             and closes the pair; the next request pairs afresh.
 *
 * Both announce every batch with a RUNS frame, so the decode worker checks
 * and counts every run whatever the transport.  Pushes are issued after the
 * backend's step has completed on the device (the cuda backend's forward
 * returns after synchronizing its stream), so the source pages are final.
 */

#include <cuda_runtime.h>
#include <nccl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "pd_transport.h"

enum link_kind { LINK_IPC, LINK_NCCL };

struct pd_link {
    enum link_kind  kind;
    int             device;
    size_t          block_bytes;
    cudaStream_t    stream;
    uint8_t        *peer_pool;      /* ipc, prefill side: the mapped pool */
    uint64_t        peer_bytes;     /* and its size */
    ncclComm_t      comm;           /* nccl */
    int             rank;           /* 0 prefill, 1 decode */
    bool            broken;
};

int pd_cuda_pool_device(const void *pool, uint8_t uuid[16])
{
    struct cudaPointerAttributes a;
    struct cudaDeviceProp prop;

    if (cudaPointerGetAttributes(&a, pool) != cudaSuccess
        || a.type != cudaMemoryTypeDevice
        || cudaGetDeviceProperties(&prop, a.device) != cudaSuccess)
        return -1;
    memcpy(uuid, prop.uuid.bytes, 16);
    return 0;
}

static int pool_device(const struct kv_manager *kv)
{
    struct cudaPointerAttributes a;

    if (cudaPointerGetAttributes(&a, kv->pool) != cudaSuccess
        || a.type != cudaMemoryTypeDevice)
        return -1;
    return a.device;
}

static struct pd_link *link_new(enum link_kind kind, struct kv_manager *kv,
    char *why, size_t why_len)
{
    struct pd_link *l = calloc(1, sizeof(*l));
    cudaError_t rc;

    if (l == NULL) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    l->kind = kind;
    l->block_bytes = kv->block_bytes;
    l->device = pool_device(kv);
    if (l->device < 0) {
        snprintf(why, why_len, "the KV pool is not in device memory");
        free(l);
        return NULL;
    }
    if ((rc = cudaSetDevice(l->device)) != cudaSuccess
        || (rc = cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking))
           != cudaSuccess) {
        snprintf(why, why_len, "%s", cudaGetErrorString(rc));
        free(l);
        return NULL;
    }
    return l;
}

static void link_close(struct pd_link *l)
{
    if (l == NULL)
        return;
    cudaSetDevice(l->device);
    if (l->peer_pool)
        cudaIpcCloseMemHandle(l->peer_pool);
    if (l->comm) {
        if (l->broken)
            ncclCommAbort(l->comm);
        else
            ncclCommDestroy(l->comm);
    }
    cudaStreamDestroy(l->stream);
    free(l);
}

/* The RUNS frame announcing a batch: the DATA table without the bytes. */
static long post_runs(struct pd_conn *conn, uint64_t xfer,
    const struct pd_seg *seg, int n, pd_sent_fn sent, void *arg)
{
    size_t len = 4 + 12 * (size_t) n;
    uint8_t *table = malloc(len);
    struct pd_out *o;
    long bytes = 0;

    if (table == NULL)
        return -1;
    pd_put32(table, (uint32_t) n);
    for (int i = 0; i < n; i++) {
        pd_put_seg(table + 4 + 12 * (size_t) i, &seg[i]);
        bytes += seg[i].len;
    }
    o = pd_out_control(PD_RUNS, xfer, table, len);
    free(table);
    if (o == NULL)
        return -1;
    o->done = sent;
    o->arg = arg;
    if (pd_conn_post(conn, o) != 0) {
        pd_out_free(o);
        return -1;
    }
    return bytes;
}

/* Wait for the link's stream, polling so that a deadline holds even when
 * a peer never posts its half of an NCCL exchange. */
static int link_fence(struct pd_link *l, int timeout_ms)
{
    double deadline = now_seconds() + timeout_ms / 1000.0;

    if (l == NULL || l->broken)
        return -1;
    cudaSetDevice(l->device);
    for (;;) {
        cudaError_t rc = cudaStreamQuery(l->stream);
        if (rc == cudaSuccess)
            return 0;
        if (rc != cudaErrorNotReady)
            break;
        if (l->comm) {
            ncclResult_t async = ncclSuccess;
            ncclCommGetAsyncError(l->comm, &async);
            if (async != ncclSuccess && async != ncclInProgress)
                break;
        }
        if (now_seconds() > deadline)
            break;
        {
            struct timespec ts = { 0, 50000 };
            nanosleep(&ts, NULL);
        }
    }
    l->broken = true;
    if (l->comm) {
        ncclCommAbort(l->comm);
        l->comm = NULL;
    }
    return -1;
}

/* ---- cuda-ipc ---- */

struct ipc_offer {
    cudaIpcMemHandle_t  handle;
    uint64_t            pool_bytes;
};

static int ipc_connect(struct pd_link **out, int fd, struct kv_manager *kv,
    const struct pd_hello *prefill, int timeout_ms, char *why, size_t why_len)
{
    struct pd_link *l = link_new(LINK_IPC, kv, why, why_len);
    struct ipc_offer offer;
    cudaError_t rc;

    (void) prefill;
    if (l == NULL)
        return -1;
    memset(&offer, 0, sizeof(offer));
    offer.pool_bytes = (uint64_t) kv->geo.num_blocks * kv->block_bytes;
    if ((rc = cudaIpcGetMemHandle(&offer.handle, kv->pool)) != cudaSuccess) {
        snprintf(why, why_len, "cudaIpcGetMemHandle: %s", cudaGetErrorString(rc));
        link_close(l);
        return -1;
    }
    if (pd_conn_write_all(fd, &offer, sizeof(offer), timeout_ms) != 0) {
        snprintf(why, why_len, "the pool handle could not be sent");
        link_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

static int ipc_accept(struct pd_link **out, int fd, struct kv_manager *kv,
    const struct pd_hello *decode, int timeout_ms, char *why, size_t why_len)
{
    struct pd_link *l = link_new(LINK_IPC, kv, why, why_len);
    struct ipc_offer offer;
    cudaError_t rc;

    (void) decode;
    if (l == NULL)
        return -1;
    if (pd_conn_read_exact(fd, &offer, sizeof(offer), timeout_ms) != 0) {
        snprintf(why, why_len, "no pool handle from the decode worker");
        link_close(l);
        return -1;
    }
    /* the pools may differ in block count (same layout); runs are kept
     * inside the mapped pool here, and the decode worker checks that each
     * names one of the transfer's blocks */
    l->peer_bytes = offer.pool_bytes;
    rc = cudaIpcOpenMemHandle((void **) &l->peer_pool, offer.handle,
                              cudaIpcMemLazyEnablePeerAccess);
    if (rc != cudaSuccess) {
        snprintf(why, why_len, "cudaIpcOpenMemHandle: %s", cudaGetErrorString(rc));
        l->peer_pool = NULL;
        link_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

static long ipc_push(struct pd_link *l, struct pd_conn *conn, uint64_t xfer,
    const struct pd_seg *seg, const struct iovec *src, int n, pd_sent_fn sent,
    void *arg)
{
    long bytes;

    if (l->broken)
        return -1;
    for (int i = 0; i < n; i++)
        if ((uint64_t) seg[i].dst_block * l->block_bytes + seg[i].offset
            + seg[i].len > l->peer_bytes)
            return -1;
    bytes = post_runs(conn, xfer, seg, n, sent, arg);
    if (bytes < 0)
        return -1;
    cudaSetDevice(l->device);
    for (int i = 0; i < n; i++) {
        uint8_t *dst = l->peer_pool + (size_t) seg[i].dst_block * l->block_bytes
                       + seg[i].offset;
        if (cudaMemcpyAsync(dst, src[i].iov_base, src[i].iov_len,
                            cudaMemcpyDeviceToDevice, l->stream) != cudaSuccess) {
            l->broken = true;
            return -1;
        }
    }
    return bytes;
}

const struct pd_transport_ops pd_transport_cuda_ipc = {
    .name = "cuda-ipc",
    .bit = PD_TRANSPORT_CUDA_IPC,
    .accept = ipc_accept,
    .connect = ipc_connect,
    .push = ipc_push,
    .pull = NULL,               /* the prefill worker writes our pages */
    .fence = link_fence,
    .close = link_close,
};

/* ---- nccl ---- */

/* Non-blocking init under a deadline, then a 1-byte exchange so that the
 * first request does not pay for NCCL's lazy connection setup. */
static int nccl_pair(struct pd_link *l, const ncclUniqueId *id, int timeout_ms,
    char *why, size_t why_len)
{
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    double deadline = now_seconds() + timeout_ms / 1000.0;
    ncclResult_t rc, state = ncclInProgress;
    void *byte;

    config.blocking = 0;
    rc = ncclCommInitRankConfig(&l->comm, 2, *id, l->rank, &config);
    while ((rc == ncclSuccess || rc == ncclInProgress) && state == ncclInProgress) {
        ncclCommGetAsyncError(l->comm, &state);
        if (state == ncclInProgress && now_seconds() > deadline) {
            snprintf(why, why_len, "NCCL communicator not ready within %d ms",
                     timeout_ms);
            goto fail;
        }
    }
    if (rc != ncclSuccess && rc != ncclInProgress) {
        snprintf(why, why_len, "ncclCommInitRankConfig: %s", ncclGetErrorString(rc));
        goto fail;
    }
    if (state != ncclSuccess) {
        snprintf(why, why_len, "NCCL init: %s", ncclGetErrorString(state));
        goto fail;
    }
    if (cudaMalloc(&byte, 1) != cudaSuccess) {
        snprintf(why, why_len, "cudaMalloc of the warm-up byte failed");
        goto fail;
    }
    rc = l->rank == 0 ? ncclSend(byte, 1, ncclUint8, 1, l->comm, l->stream)
                      : ncclRecv(byte, 1, ncclUint8, 0, l->comm, l->stream);
    if ((rc != ncclSuccess && rc != ncclInProgress) || link_fence(l, timeout_ms) != 0) {
        cudaFree(byte);
        snprintf(why, why_len, "NCCL warm-up exchange failed");
        return -1;              /* link_fence aborted the communicator */
    }
    cudaFree(byte);
    return 0;

fail:
    if (l->comm) {
        ncclCommAbort(l->comm);
        l->comm = NULL;
    }
    return -1;
}

static int nccl_accept(struct pd_link **out, int fd, struct kv_manager *kv,
    const struct pd_hello *decode, int timeout_ms, char *why, size_t why_len)
{
    struct pd_link *l = link_new(LINK_NCCL, kv, why, why_len);
    ncclUniqueId id;
    ncclResult_t rc;

    (void) decode;
    if (l == NULL)
        return -1;
    l->rank = 0;
    if ((rc = ncclGetUniqueId(&id)) != ncclSuccess) {
        snprintf(why, why_len, "ncclGetUniqueId: %s", ncclGetErrorString(rc));
        link_close(l);
        return -1;
    }
    if (pd_conn_write_all(fd, &id, sizeof(id), timeout_ms) != 0) {
        snprintf(why, why_len, "the NCCL id could not be sent");
        link_close(l);
        return -1;
    }
    if (nccl_pair(l, &id, timeout_ms, why, why_len) != 0) {
        link_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

static int nccl_connect(struct pd_link **out, int fd, struct kv_manager *kv,
    const struct pd_hello *prefill, int timeout_ms, char *why, size_t why_len)
{
    struct pd_link *l = link_new(LINK_NCCL, kv, why, why_len);
    ncclUniqueId id;

    (void) prefill;
    if (l == NULL)
        return -1;
    l->rank = 1;
    if (pd_conn_read_exact(fd, &id, sizeof(id), timeout_ms) != 0) {
        snprintf(why, why_len, "no NCCL id from the prefill worker");
        link_close(l);
        return -1;
    }
    if (nccl_pair(l, &id, timeout_ms, why, why_len) != 0) {
        link_close(l);
        return -1;
    }
    *out = l;
    return 0;
}

static long nccl_push(struct pd_link *l, struct pd_conn *conn, uint64_t xfer,
    const struct pd_seg *seg, const struct iovec *src, int n, pd_sent_fn sent,
    void *arg)
{
    long bytes;
    ncclResult_t rc;

    if (l->broken || l->comm == NULL)
        return -1;
    /* the RUNS frame first: the decode side posts its receives in the
     * order the frames arrive, which is the order of these sends */
    bytes = post_runs(conn, xfer, seg, n, sent, arg);
    if (bytes < 0)
        return -1;
    cudaSetDevice(l->device);
    ncclGroupStart();
    for (int i = 0; i < n; i++)
        ncclSend(src[i].iov_base, src[i].iov_len, ncclUint8, 1, l->comm, l->stream);
    rc = ncclGroupEnd();
    if (rc != ncclSuccess && rc != ncclInProgress) {
        l->broken = true;
        return -1;
    }
    return bytes;
}

static int nccl_pull(struct pd_link *l, uint64_t xfer, const struct pd_seg *seg,
    uint8_t *const *dst, int n)
{
    ncclResult_t rc;

    (void) xfer;
    if (l->broken || l->comm == NULL)
        return -1;
    cudaSetDevice(l->device);
    ncclGroupStart();
    for (int i = 0; i < n; i++)
        ncclRecv(dst[i], seg[i].len, ncclUint8, 0, l->comm, l->stream);
    rc = ncclGroupEnd();
    if (rc != ncclSuccess && rc != ncclInProgress) {
        l->broken = true;
        return -1;
    }
    return 0;
}

const struct pd_transport_ops pd_transport_nccl = {
    .name = "nccl",
    .bit = PD_TRANSPORT_NCCL,
    .accept = nccl_accept,
    .connect = nccl_connect,
    .push = nccl_push,
    .pull = nccl_pull,
    .fence = link_fence,
    .close = link_close,
};
