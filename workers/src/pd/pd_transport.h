/*
 * KV transfer transports: how a prefill worker's pages reach a decode
 * worker's pages.  One is chosen per pair at the handshake, from what both
 * sides offer and where their pages live:
 *
 *   tcp       pages in host memory: DATA frames on the pair connection,
 *             scatter-gather writes straight from the pool (pd_conn.c)
 *   cuda-ipc  both pools on the same GPU: the prefill worker maps the
 *             decode worker's pool and copies device to device
 *   nccl      pools on different GPUs: one 2-rank communicator per pair,
 *             ncclSend / ncclRecv of each run
 *
 * The pair connection always carries the control frames (PREFILL, DONE,
 * FAILED, ABORT).  A transport that moves bytes out of band announces each
 * batch of runs with a RUNS frame (the DATA frame's run table without the
 * bytes), so the decode worker validates and counts every run whatever the
 * transport, and NCCL receives are posted in the order the sends were.
 */

#ifndef LLMD_PD_TRANSPORT_H
#define LLMD_PD_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "sched/kv_blocks.h"
#include "pd_conn.h"
#include "pd_wire.h"

struct pd_link;         /* a transport's state for one pair */

typedef void (*pd_sent_fn)(void *arg, struct pd_out *o, bool ok);

struct pd_transport_ops {
    const char *name;
    uint32_t    bit;                    /* PD_TRANSPORT_* */

    /* Pair setup, after HELLO / HELLO_OK, over the pair connection's
     * socket, still blocking: exchange what the transport needs (an IPC
     * handle of the decode pool, an NCCL unique id) and warm it up.  NULL
     * ops mean nothing to set up.  0, or -1 with a reason. */
    int  (*accept)(struct pd_link **out, int fd, struct kv_manager *kv,
                   const struct pd_hello *decode, int timeout_ms,
                   char *why, size_t why_len);
    int  (*connect)(struct pd_link **out, int fd, struct kv_manager *kv,
                    const struct pd_hello *prefill, int timeout_ms,
                    char *why, size_t why_len);

    /* Prefill side, engine thread: move runs src[i] -> seg[i] of transfer
     * xfer.  The source bytes may be read until fence() returns; frames for
     * the peer are posted on conn, with sent() called once each is out (or
     * dropped).  An out-of-band transport posts its RUNS frame first and,
     * when that fails (the pair is closed), moves nothing.  Returns the
     * bytes moved, or -1.  The link outlives every push: close() comes
     * after the pair's last transfer has ended. */
    long (*push)(struct pd_link *l, struct pd_conn *conn, uint64_t xfer,
                 const struct pd_seg *seg, const struct iovec *src, int n,
                 pd_sent_fn sent, void *arg);

    /* Decode side, connection thread: a RUNS frame announced these runs;
     * receive them into dst (already checked to be the transfer's pages).
     * NULL for transports whose writes need nothing from this side. */
    int  (*pull)(struct pd_link *l, uint64_t xfer, const struct pd_seg *seg,
                 uint8_t *const *dst, int n);

    /* Both sides: wait until every push or pull so far has completed: the
     * prefill side before DONE, the decode side before the pages are used.
     * NULL: nothing is ever outstanding.  0, or -1 (the pair is then
     * closed). */
    int  (*fence)(struct pd_link *l, int timeout_ms);

    void (*close)(struct pd_link *l);
};

/* Transports this build can use for pages in kv's pool. */
uint32_t pd_transports_offered(const struct kv_manager *kv);

/* What a HELLO says about this worker's pages (host, device). */
void pd_transport_identity(const struct kv_manager *kv, struct pd_hello *h);

/* The transport for a pair, or NULL with a reason: prefill side, from the
 * decode worker's HELLO and its own. */
const struct pd_transport_ops *pd_transport_choose(const struct pd_hello *ours,
    const struct pd_hello *theirs, char *why, size_t why_len);

/* The transport named by one PD_TRANSPORT_* bit, or NULL. */
const struct pd_transport_ops *pd_transport_by_bit(uint32_t bit);

extern const struct pd_transport_ops pd_transport_tcp;
#ifdef LLMD_HAVE_CUDA
extern const struct pd_transport_ops pd_transport_cuda_ipc;
extern const struct pd_transport_ops pd_transport_nccl;
/* the GPU identity of a device pool (pd/cuda/pd_transport_cuda.c) */
int pd_cuda_pool_device(const void *pool, uint8_t uuid[16]);
#endif

#endif
