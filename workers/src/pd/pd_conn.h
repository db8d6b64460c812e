/*
 * One pair connection of the KV transfer: a non-blocking TCP socket, a
 * queue of outgoing frames written with scatter-gather writes straight
 * from the KV pool, and an incoming-frame parser that reads DATA payloads
 * straight into the destination pages.  Used by both sides; each side runs
 * one thread per connection that polls the socket and a wakeup eventfd.
 *
 * Frames may be queued from any thread (pd_conn_post); everything else is
 * called only from the connection's own thread.
 */

#ifndef LLMD_PD_CONN_H
#define LLMD_PD_CONN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "pd_wire.h"

/* one frame to write: head (header + control payload or segment table,
 * owned) then iov (pages, not owned) */
struct pd_out {
    struct pd_out  *next;
    uint8_t        *head;
    size_t          head_len;
    struct iovec   *iov;            /* owned array; the bytes are not */
    int             n_iov;
    size_t          total;
    size_t          sent;
    uint64_t        xfer;
    /* runs on the connection thread once the frame is written (ok) or
     * dropped because the connection failed (!ok) */
    void          (*done)(void *arg, struct pd_out *o, bool ok);
    void           *arg;
};

struct pd_conn;

/* what the reader hands to its side */
struct pd_reader_ops {
    /* a complete control frame (not DATA) */
    int  (*frame)(void *arg, const struct pd_frame_hdr *h, uint8_t *payload);
    /* where a DATA run goes: a pointer to seg->len writable bytes, or NULL
     * to discard them (an aborted transfer); -1 (via *bad) for a run that
     * is not the transfer's, which fails the connection */
    uint8_t *(*data_dest)(void *arg, uint64_t xfer, const struct pd_seg *seg,
                          bool *bad);
    /* a DATA frame was read completely */
    void (*data_end)(void *arg, uint64_t xfer, size_t bytes);
};

struct pd_conn {
    int                 fd;
    int                 wake_fd;            /* eventfd */
    char                peer[96];

    pthread_mutex_t     lock;
    struct pd_out      *out_head;
    struct pd_out      *out_tail;
    bool                closed;             /* no more posts accepted */

    /* reader state */
    uint8_t             hdr[PD_HDR_BYTES];
    size_t              hdr_got;
    struct pd_frame_hdr cur;
    uint8_t            *payload;            /* control payload / seg table */
    size_t              payload_len;
    size_t              payload_got;
    uint32_t            n_segs;
    bool                table_ok;           /* DATA: table read and checked */
    uint32_t            seg_i;              /* DATA: run being read */
    size_t              seg_got;
    uint8_t            *seg_dst;
    size_t              data_bytes;
    uint8_t             scratch[65536];     /* discarded DATA bytes */

    uint64_t            bytes_out;
    uint64_t            bytes_in;
    uint64_t            writes;             /* writev calls */
};

/* Takes ownership of fd (made non-blocking).  0, or -1. */
int pd_conn_init(struct pd_conn *c, int fd, const char *peer);
/* Drops every queued frame (done(!ok)) and closes the sockets. */
void pd_conn_destroy(struct pd_conn *c);

/* Queue a frame (any thread).  -1 when the connection is closed: the
 * frame is not queued and done() is not called. */
int pd_conn_post(struct pd_conn *c, struct pd_out *o);
void pd_conn_wake(struct pd_conn *c);
void pd_conn_drain_wake(struct pd_conn *c);
bool pd_conn_has_output(struct pd_conn *c);

/* A control frame whose payload is copied: the common small case. */
struct pd_out *pd_out_control(uint8_t type, uint64_t xfer, const void *payload,
    size_t len);
void pd_out_free(struct pd_out *o);

/* Write what the socket takes now.  0, or -1 on a socket error. */
int pd_conn_flush(struct pd_conn *c);
/* Read and dispatch what has arrived.  0, or -1 on EOF, a socket error or
 * a malformed frame (*why says which). */
int pd_conn_read(struct pd_conn *c, const struct pd_reader_ops *ops,
    void *arg, const char **why);

/* Blocking helpers for the handshake, with a deadline in milliseconds. */
int pd_conn_write_all(int fd, const void *buf, size_t len, int timeout_ms);
int pd_conn_read_frame(int fd, struct pd_frame_hdr *h, uint8_t *payload,
    size_t cap, int timeout_ms);
int pd_conn_read_exact(int fd, void *buf, size_t len, int timeout_ms);

/* connect to host:port with a deadline; the fd or -1 with *why */
int pd_connect(const char *hostport, int timeout_ms, const char **why);

#endif
