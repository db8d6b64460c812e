/*
 * Pair connection I/O: scatter-gather writes, zero-copy reads into pages.
 */

#include "pd_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

/* iovecs per writev: the kernel's limit */
#define PD_WRITE_IOV    1024

static void tune_socket(int fd)
{
    int one = 1, buf = 8 << 20;

    /* frames are written whole by writev; Nagle would only delay the small
     * control frames behind them */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

int pd_conn_init(struct pd_conn *c, int fd, const char *peer)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->wake_fd < 0)
        return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    tune_socket(fd);
    pthread_mutex_init(&c->lock, NULL);
    return 0;
}

void pd_out_free(struct pd_out *o)
{
    if (o == NULL)
        return;
    free(o->head);
    free(o->iov);
    free(o);
}

void pd_conn_destroy(struct pd_conn *c)
{
    struct pd_out *o;

    pthread_mutex_lock(&c->lock);
    c->closed = true;
    o = c->out_head;
    c->out_head = c->out_tail = NULL;
    pthread_mutex_unlock(&c->lock);
    while (o) {
        struct pd_out *next = o->next;
        if (o->done)
            o->done(o->arg, o, false);
        pd_out_free(o);
        o = next;
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    c->fd = c->wake_fd = -1;
    free(c->payload);
    c->payload = NULL;
    pthread_mutex_destroy(&c->lock);
}

int pd_conn_post(struct pd_conn *c, struct pd_out *o)
{
    bool was_empty;

    o->next = NULL;
    o->sent = 0;
    pthread_mutex_lock(&c->lock);
    if (c->closed) {
        pthread_mutex_unlock(&c->lock);
        return -1;
    }
    was_empty = c->out_head == NULL;
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    pthread_mutex_unlock(&c->lock);
    if (was_empty)
        pd_conn_wake(c);
    return 0;
}

void pd_conn_wake(struct pd_conn *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->wake_fd, &one, sizeof(one));
    (void) n;
}

void pd_conn_drain_wake(struct pd_conn *c)
{
    uint64_t v;
    ssize_t n = read(c->wake_fd, &v, sizeof(v));
    (void) n;
}

bool pd_conn_has_output(struct pd_conn *c)
{
    bool r;

    pthread_mutex_lock(&c->lock);
    r = c->out_head != NULL;
    pthread_mutex_unlock(&c->lock);
    return r;
}

struct pd_out *pd_out_control(uint8_t type, uint64_t xfer, const void *payload,
    size_t len)
{
    struct pd_out *o = calloc(1, sizeof(*o));

    if (o == NULL || len > PD_MAX_CONTROL
        || (o->head = malloc(PD_HDR_BYTES + len)) == NULL) {
        free(o);
        return NULL;
    }
    pd_put_hdr(o->head, type, (uint32_t) len, xfer);
    if (len)
        memcpy(o->head + PD_HDR_BYTES, payload, len);
    o->head_len = o->total = PD_HDR_BYTES + len;
    o->xfer = xfer;
    return o;
}

/* ------------------------------------------------------------------------ */
/* writing */

/* The iovecs of frame o from byte `from` on, appended to iov[*n..max). */
static void frame_iov(const struct pd_out *o, size_t from, struct iovec *iov,
    int *n, int max)
{
    size_t pos = 0;

    if (from < o->head_len && *n < max) {
        iov[*n].iov_base = o->head + from;
        iov[*n].iov_len = o->head_len - from;
        (*n)++;
    }
    pos = o->head_len;
    for (int i = 0; i < o->n_iov && *n < max; i++) {
        size_t len = o->iov[i].iov_len;
        if (from < pos + len) {
            size_t skip = from > pos ? from - pos : 0;
            iov[*n].iov_base = (uint8_t *) o->iov[i].iov_base + skip;
            iov[*n].iov_len = len - skip;
            (*n)++;
        }
        pos += len;
    }
}

int pd_conn_flush(struct pd_conn *c)
{
    struct iovec iov[PD_WRITE_IOV];

    for (;;) {
        struct pd_out *o, *done_list = NULL, **done_tail = &done_list;
        int n = 0;
        ssize_t w;

        /* frames are only ever removed by this thread, so the list can be
         * walked after the lock is dropped; only new tails appear */
        pthread_mutex_lock(&c->lock);
        o = c->out_head;
        pthread_mutex_unlock(&c->lock);
        if (o == NULL)
            return 0;
        for (struct pd_out *f = o; f && n < PD_WRITE_IOV; ) {
            struct pd_out *next;
            frame_iov(f, f->sent, iov, &n, PD_WRITE_IOV);
            pthread_mutex_lock(&c->lock);
            next = f->next;
            pthread_mutex_unlock(&c->lock);
            f = next;
        }
        w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->writes++;
        c->bytes_out += (uint64_t) w;
        /* advance over whole frames, collecting the finished ones */
        pthread_mutex_lock(&c->lock);
        while (w > 0 && c->out_head) {
            struct pd_out *f = c->out_head;
            size_t left = f->total - f->sent;
            if ((size_t) w < left) {
                f->sent += (size_t) w;
                w = 0;
                break;
            }
            w -= (ssize_t) left;
            f->sent = f->total;
            c->out_head = f->next;
            if (c->out_head == NULL)
                c->out_tail = NULL;
            f->next = NULL;
            *done_tail = f;
            done_tail = &f->next;
        }
        pthread_mutex_unlock(&c->lock);
        while (done_list) {
            struct pd_out *f = done_list;
            done_list = f->next;
            if (f->done)
                f->done(f->arg, f, true);
            pd_out_free(f);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* reading */

static void reset_frame(struct pd_conn *c)
{
    c->hdr_got = 0;
    free(c->payload);
    c->payload = NULL;
    c->payload_len = c->payload_got = 0;
    c->n_segs = c->seg_i = 0;
    c->seg_got = 0;
    c->seg_dst = NULL;
    c->data_bytes = 0;
    c->table_ok = false;
}

/* 1: got all wanted, 0: would block, -1: EOF or error */
static int read_some(int fd, uint8_t *dst, size_t want, size_t *got)
{
    while (*got < want) {
        ssize_t r = read(fd, dst + *got, want - *got);
        if (r > 0) {
            *got += (size_t) r;
            continue;
        }
        if (r == 0)
            return -1;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
    return 1;
}

/* the DATA frame's runs, read straight into the pages */
static int read_runs(struct pd_conn *c, const struct pd_reader_ops *ops,
    void *arg, const char **why)
{
    const uint8_t *table = c->payload + 4;

    while (c->seg_i < c->n_segs) {
        struct pd_seg seg;
        int rc;

        pd_get_seg(table + (size_t) c->seg_i * 12, &seg);
        if (c->seg_got == 0 && c->seg_dst == NULL) {
            bool bad = false;
            c->seg_dst = ops->data_dest(arg, c->cur.xfer, &seg, &bad);
            if (bad) {
                *why = "a DATA run outside the transfer's pages";
                return -1;
            }
        }
        if (c->seg_dst) {
            rc = read_some(c->fd, c->seg_dst, seg.len, &c->seg_got);
        } else {
            /* discard, through the scratch buffer */
            size_t want = seg.len - c->seg_got, got = 0;
            if (want > sizeof(c->scratch))
                want = sizeof(c->scratch);
            rc = read_some(c->fd, c->scratch, want, &got);
            c->seg_got += got;
            if (rc == 1 && c->seg_got < seg.len)
                continue;
        }
        if (rc < 0) {
            *why = "connection closed";
            return -1;
        }
        if (rc == 0 && c->seg_got < seg.len)
            return 0;
        c->bytes_in += seg.len;
        c->data_bytes += seg.len;
        c->seg_i++;
        c->seg_got = 0;
        c->seg_dst = NULL;
    }
    return 1;
}

int pd_conn_read(struct pd_conn *c, const struct pd_reader_ops *ops,
    void *arg, const char **why)
{
    for (;;) {
        int rc;

        if (c->hdr_got < PD_HDR_BYTES) {
            rc = read_some(c->fd, c->hdr, PD_HDR_BYTES, &c->hdr_got);
            if (rc < 0) {
                *why = c->hdr_got == 0 ? "connection closed by the peer"
                                       : "connection closed mid-frame";
                return -1;
            }
            if (rc == 0)
                return 0;
            pd_get_hdr(c->hdr, &c->cur);
            if (c->cur.type < PD_HELLO || c->cur.type > PD_RUNS) {
                *why = "unknown frame type";
                return -1;
            }
            if (c->cur.type == PD_DATA) {
                c->payload_len = 4;     /* n_segs first, then the table */
            } else {
                if (c->cur.len > PD_MAX_CONTROL) {
                    *why = "control frame too large";
                    return -1;
                }
                c->payload_len = c->cur.len;
            }
            c->payload = malloc(c->payload_len ? c->payload_len : 1);
            if (c->payload == NULL) {
                *why = "out of memory";
                return -1;
            }
        }
        rc = read_some(c->fd, c->payload, c->payload_len, &c->payload_got);
        if (rc < 0) {
            *why = "connection closed mid-frame";
            return -1;
        }
        if (rc == 0)
            return 0;
        if (c->cur.type != PD_DATA) {
            c->bytes_in += PD_HDR_BYTES + c->payload_len;
            rc = ops->frame(arg, &c->cur, c->payload);
            reset_frame(c);
            if (rc != 0) {
                *why = "protocol error";
                return -1;
            }
            continue;
        }
        if (c->n_segs == 0) {
            /* the run count is in: now the segment table */
            uint8_t *p;

            c->n_segs = pd_le32(c->payload);
            if (c->n_segs == 0 || c->n_segs > PD_MAX_SEGS
                || c->cur.len < 4 + 12 * (uint64_t) c->n_segs) {
                *why = "malformed DATA frame";
                return -1;
            }
            c->payload_len = 4 + 12 * (size_t) c->n_segs;
            p = realloc(c->payload, c->payload_len);
            if (p == NULL) {
                *why = "out of memory";
                return -1;
            }
            c->payload = p;
            continue;
        }
        if (!c->table_ok) {
            uint64_t sum = 0;

            for (uint32_t i = 0; i < c->n_segs; i++)
                sum += pd_le32(c->payload + 4 + 12 * (size_t) i + 8);
            if (sum + c->payload_len != c->cur.len) {
                *why = "DATA frame length does not match its runs";
                return -1;
            }
            c->table_ok = true;
        }
        rc = read_runs(c, ops, arg, why);
        if (rc <= 0)
            return rc;
        c->bytes_in += PD_HDR_BYTES + c->payload_len;
        ops->data_end(arg, c->cur.xfer, c->data_bytes);
        reset_frame(c);
    }
}

/* ------------------------------------------------------------------------ */
/* blocking helpers for setup */

static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int ms = (int) ((deadline - now_seconds()) * 1000);
        int rc;

        if (ms < 0)
            return -1;
        rc = poll(&p, 1, ms);
        if (rc > 0)
            return 0;
        if (rc == 0 || errno != EINTR)
            return -1;
    }
}

int pd_conn_write_all(int fd, const void *buf, size_t len, int timeout_ms)
{
    double deadline = now_seconds() + timeout_ms / 1000.0;
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w > 0) {
            p += w;
            len -= (size_t) w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
            && wait_fd(fd, POLLOUT, deadline) == 0)
            continue;
        return -1;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t len, double deadline)
{
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r > 0) {
            p += r;
            len -= (size_t) r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
            && wait_fd(fd, POLLIN, deadline) == 0)
            continue;
        return -1;
    }
    return 0;
}

int pd_conn_read_exact(int fd, void *buf, size_t len, int timeout_ms)
{
    return read_all(fd, buf, len, now_seconds() + timeout_ms / 1000.0);
}

int pd_conn_read_frame(int fd, struct pd_frame_hdr *h, uint8_t *payload,
    size_t cap, int timeout_ms)
{
    double deadline = now_seconds() + timeout_ms / 1000.0;
    uint8_t hdr[PD_HDR_BYTES];

    if (read_all(fd, hdr, sizeof(hdr), deadline) != 0)
        return -1;
    pd_get_hdr(hdr, h);
    if (h->len > cap)
        return -1;
    return read_all(fd, payload, h->len, deadline);
}

int pd_connect(const char *hostport, int timeout_ms, const char **why)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    size_t hlen;
    int fd = -1;

    *why = "bad address";
    if (colon == NULL || colon == hostport)
        return -1;
    hlen = (size_t) (colon - hostport);
    if (hostport[0] == '[' && hlen >= 2 && colon[-1] == ']') {
        hostport++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host))
        return -1;
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
        *why = "cannot resolve the host";
        return -1;
    }
    *why = "connection refused";
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        double deadline = now_seconds() + timeout_ms / 1000.0;
        int err = 0;
        socklen_t elen = sizeof(err);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) != 0) {
                *why = errno == EINPROGRESS ? "connect timed out"
                                            : "connection refused";
                close(fd);
                fd = -1;
                continue;
            }
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
            if (err != 0) {
                close(fd);
                fd = -1;
            }
        }
    }
    freeaddrinfo(res);
    return fd;
}
