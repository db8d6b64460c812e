/*
 * Transport choice, and the TCP transport: DATA frames on the pair
 * connection, written with scatter-gather writes from the pool.
 */

#include "pd_transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

static long tcp_push(struct pd_link *l, struct pd_conn *conn, uint64_t xfer,
    const struct pd_seg *seg, const struct iovec *src, int n, pd_sent_fn sent,
    void *arg)
{
    struct pd_out *o;
    size_t bytes = 0, head = 4 + 12 * (size_t) n;

    (void) l;
    if (n == 0)
        return 0;
    o = calloc(1, sizeof(*o));
    if (o == NULL || (o->head = malloc(PD_HDR_BYTES + head)) == NULL
        || (o->iov = malloc(sizeof(*o->iov) * (size_t) n)) == NULL) {
        pd_out_free(o);
        return -1;
    }
    for (int i = 0; i < n; i++)
        bytes += seg[i].len;
    pd_put_hdr(o->head, PD_DATA, (uint32_t) (head + bytes), xfer);
    pd_put32(o->head + PD_HDR_BYTES, (uint32_t) n);
    for (int i = 0; i < n; i++)
        pd_put_seg(o->head + PD_HDR_BYTES + 4 + 12 * (size_t) i, &seg[i]);
    memcpy(o->iov, src, sizeof(*o->iov) * (size_t) n);
    o->n_iov = n;
    o->head_len = PD_HDR_BYTES + head;
    o->total = o->head_len + bytes;
    o->xfer = xfer;
    o->done = sent;
    o->arg = arg;
    if (pd_conn_post(conn, o) != 0) {
        pd_out_free(o);
        return -1;
    }
    return (long) bytes;
}

/* DATA frames are written from the pages by the connection thread, and
 * the final frame follows them on the same connection: nothing to fence. */
const struct pd_transport_ops pd_transport_tcp = {
    .name = "tcp",
    .bit = PD_TRANSPORT_TCP,
    .push = tcp_push,
};

const struct pd_transport_ops *pd_transport_by_bit(uint32_t bit)
{
    switch (bit) {
    case PD_TRANSPORT_TCP:
        return &pd_transport_tcp;
#ifdef LLMD_HAVE_CUDA
    case PD_TRANSPORT_CUDA_IPC:
        return &pd_transport_cuda_ipc;
    case PD_TRANSPORT_NCCL:
        return &pd_transport_nccl;
#endif
    default:
        return NULL;
    }
}

uint32_t pd_transports_offered(const struct kv_manager *kv)
{
    if (kv->pool_release == NULL)
        return PD_TRANSPORT_TCP;        /* host pages */
#ifdef LLMD_HAVE_CUDA
    return PD_TRANSPORT_CUDA_IPC | PD_TRANSPORT_NCCL;
#else
    return 0;
#endif
}

/* The machine: its boot id names it across processes and containers that
 * share the kernel, which is what CUDA IPC needs. */
static uint64_t host_id(void)
{
    static uint64_t id;
    char buf[64] = "";
    FILE *f;

    if (id)
        return id;
    f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (fgets(buf, sizeof(buf), f) == NULL)
            buf[0] = '\0';
        fclose(f);
    }
    if (buf[0] == '\0')
        gethostname(buf, sizeof(buf) - 1);
    id = XXH3_64bits(buf, strlen(buf)) | 1;
    return id;
}

void pd_transport_identity(const struct kv_manager *kv, struct pd_hello *h)
{
    h->transports = pd_transports_offered(kv);
    h->host_id = host_id();
    h->on_device = 0;
    memset(h->device_uuid, 0, sizeof(h->device_uuid));
#ifdef LLMD_HAVE_CUDA
    if (kv->pool_release != NULL
        && pd_cuda_pool_device(kv->pool, h->device_uuid) == 0)
        h->on_device = 1;
#endif
}

const struct pd_transport_ops *pd_transport_choose(const struct pd_hello *ours,
    const struct pd_hello *theirs, char *why, size_t why_len)
{
    uint32_t common = ours->transports & theirs->transports;

    if (ours->on_device != theirs->on_device) {
        snprintf(why, why_len, "the prefill worker's pages are in %s memory, "
                 "the decode worker's in %s memory",
                 ours->on_device ? "device" : "host",
                 theirs->on_device ? "device" : "host");
        return NULL;
    }
    /* same GPU: NCCL refuses two ranks on one device, IPC is the way */
    if (ours->on_device && ours->host_id == theirs->host_id
        && memcmp(ours->device_uuid, theirs->device_uuid, 16) == 0) {
        if (common & PD_TRANSPORT_CUDA_IPC)
            return pd_transport_by_bit(PD_TRANSPORT_CUDA_IPC);
        snprintf(why, why_len, "both pools are on one GPU and CUDA IPC is "
                 "not offered by both sides");
        return NULL;
    }
    if (ours->on_device && (common & PD_TRANSPORT_NCCL))
        return pd_transport_by_bit(PD_TRANSPORT_NCCL);
    if (!ours->on_device && (common & PD_TRANSPORT_TCP))
        return pd_transport_by_bit(PD_TRANSPORT_TCP);
    snprintf(why, why_len, "no common transport (offered 0x%x, this worker "
             "has 0x%x)", theirs->transports, ours->transports);
    return NULL;
}
