/*
 * llmd-pd-bench: the KV transfer's TCP transport against raw loopback TCP,
 * measured in the same run on the same socket settings.
 *
 *   llmd-pd-bench [--tokens 1024,4096] [--layers 32 --kv-heads 8
 *                 --head-dim 128 --dtype-bytes 2 --block-tokens 16]
 *                 [--repeat 3]
 *
 * transport: a sender posts DATA frames exactly as a prefill worker does
 * (one frame per layer: one run per block of K and V together, i.e.
 * layer_bytes per run) from a source pool, and a receiver reads them with
 * the worker's frame parser straight into the pages of a destination pool.
 * raw: the same number of bytes written with write() from the source pool
 * and read with read() into the destination pool, in 1 MiB and in 16 MiB
 * pieces (the latter non-blocking with poll(), as the transport drives its
 * sockets).  Each size alternates the three, --repeat times, and reports the
 * median GB/s of each and the transport's ratio to the faster raw one.
 * Prints one JSON line per size.
 */

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "pd/pd_conn.h"

struct geometry {
    int layers, kv_heads, head_dim, dtype_bytes, block_tokens;
    size_t row, layer_bytes, block_bytes;
};

struct run {
    const struct geometry *g;
    size_t      chunk;          /* raw: bytes per write() and read() */
    uint8_t    *src, *dst;
    int         n_blocks;
    int         fd;
    size_t      total;
    double      done_at;
};

static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *) &sa, sizeof(sa)) != 0 || listen(l, 1) != 0
        || getsockname(l, (struct sockaddr *) &sa, &len) != 0) {
        perror("listen");
        exit(1);
    }
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*a, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        perror("connect");
        exit(1);
    }
    *b = accept(l, NULL, NULL);
    close(l);
}

static void tune(int fd)
{
    int buf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

/* ---- raw ---- */

static void *raw_send(void *arg)
{
    struct run *r = arg;
    size_t off = 0;

    while (off < r->total) {
        size_t n = r->total - off < r->chunk ? r->total - off : r->chunk;
        ssize_t w = write(r->fd, r->src + off, n);
        if (w <= 0)
            break;
        off += (size_t) w;
    }
    return NULL;
}

/* raw, the way the transport drives its sockets: non-blocking, poll() */
static void *raw_send_nb(void *arg)
{
    struct run *r = arg;
    size_t off = 0;

    while (off < r->total) {
        size_t n = r->total - off < r->chunk ? r->total - off : r->chunk;
        ssize_t w = write(r->fd, r->src + off, n);
        if (w > 0) {
            off += (size_t) w;
        } else {
            struct pollfd p = { .fd = r->fd, .events = POLLOUT };
            poll(&p, 1, 100);
        }
    }
    return NULL;
}

static double raw_run_nb(struct run *r)
{
    int a, b;
    pthread_t t;
    size_t got = 0;
    double t0;

    tcp_pair(&a, &b);
    tune(a);
    tune(b);
    fcntl(a, F_SETFL, O_NONBLOCK);
    fcntl(b, F_SETFL, O_NONBLOCK);
    r->fd = a;
    t0 = now_seconds();
    pthread_create(&t, NULL, raw_send_nb, r);
    while (got < r->total) {
        ssize_t n = read(b, r->dst + got, r->total - got < r->chunk
                                          ? r->total - got : r->chunk);
        if (n > 0) {
            got += (size_t) n;
        } else {
            struct pollfd p = { .fd = b, .events = POLLIN };
            poll(&p, 1, 100);
        }
    }
    r->done_at = now_seconds();
    pthread_join(t, NULL);
    close(a);
    close(b);
    return (double) got / (r->done_at - t0) / 1e9;
}

static double raw_run(struct run *r)
{
    int a, b;
    pthread_t t;
    size_t got = 0;
    double t0;

    tcp_pair(&a, &b);
    tune(a);
    tune(b);
    r->fd = a;
    t0 = now_seconds();
    pthread_create(&t, NULL, raw_send, r);
    while (got < r->total) {
        ssize_t n = read(b, r->dst + got, r->total - got < r->chunk
                                          ? r->total - got : r->chunk);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    r->done_at = now_seconds();
    pthread_join(t, NULL);
    close(a);
    close(b);
    return (double) got / (r->done_at - t0) / 1e9;
}

/* ---- the transport ---- */

struct rx {
    struct run *r;
    size_t      bytes;
};

static int rx_frame(void *arg, const struct pd_frame_hdr *h, uint8_t *payload)
{
    (void) arg; (void) h; (void) payload;
    return 0;
}

static uint8_t *rx_dest(void *arg, uint64_t xfer, const struct pd_seg *seg,
    bool *bad)
{
    struct rx *x = arg;
    size_t start = (size_t) seg->dst_block * x->r->g->block_bytes + seg->offset;

    (void) xfer;
    if (start + seg->len > (size_t) x->r->n_blocks * x->r->g->block_bytes) {
        *bad = true;
        return NULL;
    }
    return x->r->dst + start;
}

static void rx_end(void *arg, uint64_t xfer, size_t bytes)
{
    (void) xfer;
    ((struct rx *) arg)->bytes += bytes;
}

static const struct pd_reader_ops rx_ops = { rx_frame, rx_dest, rx_end };

static struct pd_conn tx_conn;

/* the frames a prefill worker posts: per layer, a run per block */
static void *pd_send(void *arg)
{
    struct run *r = arg;
    const struct geometry *g = r->g;

    for (int layer = 0; layer < g->layers; layer++) {
        for (int b0 = 0; b0 < r->n_blocks; b0 += PD_MAX_SEGS) {
            int n = r->n_blocks - b0 < PD_MAX_SEGS ? r->n_blocks - b0 : PD_MAX_SEGS;
            struct pd_out *o = calloc(1, sizeof(*o));
            size_t head = 4 + 12 * (size_t) n, bytes = (size_t) n * g->layer_bytes;

            o->head = malloc(PD_HDR_BYTES + head);
            o->iov = malloc(sizeof(*o->iov) * (size_t) n);
            pd_put_hdr(o->head, PD_DATA, (uint32_t) (head + bytes), 1);
            pd_put32(o->head + PD_HDR_BYTES, (uint32_t) n);
            for (int i = 0; i < n; i++) {
                struct pd_seg s = { (uint32_t) (b0 + i),
                                    (uint32_t) (layer * g->layer_bytes),
                                    (uint32_t) g->layer_bytes };
                pd_put_seg(o->head + PD_HDR_BYTES + 4 + 12 * (size_t) i, &s);
                o->iov[i].iov_base = r->src + (size_t) (b0 + i) * g->block_bytes
                                     + (size_t) layer * g->layer_bytes;
                o->iov[i].iov_len = g->layer_bytes;
            }
            o->n_iov = n;
            o->head_len = PD_HDR_BYTES + head;
            o->total = o->head_len + bytes;
            pd_conn_post(&tx_conn, o);
        }
    }
    while (pd_conn_has_output(&tx_conn)) {
        struct pollfd p = { .fd = tx_conn.fd, .events = POLLOUT };
        poll(&p, 1, 100);
        if (pd_conn_flush(&tx_conn) != 0)
            break;
    }
    return NULL;
}

static double pd_run(struct run *r, uint64_t *writes)
{
    struct pd_conn rx_conn;
    struct rx x = { r, 0 };
    int a, b;
    pthread_t t;
    double t0;
    const char *why = "";

    tcp_pair(&a, &b);
    pd_conn_init(&tx_conn, a, "tx");
    pd_conn_init(&rx_conn, b, "rx");
    t0 = now_seconds();
    pthread_create(&t, NULL, pd_send, r);
    while (x.bytes < r->total) {
        struct pollfd p = { .fd = b, .events = POLLIN };
        poll(&p, 1, 1000);
        if (pd_conn_read(&rx_conn, &rx_ops, &x, &why) != 0)
            break;
    }
    r->done_at = now_seconds();
    pthread_join(t, NULL);
    *writes = tx_conn.writes;
    pd_conn_destroy(&tx_conn);
    pd_conn_destroy(&rx_conn);
    if (x.bytes < r->total)
        fprintf(stderr, "llmd-pd-bench: transfer ended early: %s\n", why);
    return (double) x.bytes / (r->done_at - t0) / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    struct geometry g = { 32, 8, 128, 2, 16, 0, 0, 0 };
    char tokens_list[256] = "1024,4096";
    int repeat = 3;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens"))
            snprintf(tokens_list, sizeof(tokens_list), "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) g.layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-heads")) g.kv_heads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--head-dim")) g.head_dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype-bytes")) g.dtype_bytes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--block-tokens")) g.block_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "llmd-pd-bench: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (repeat < 1 || repeat > 50 || g.layers < 1 || g.block_tokens < 1) {
        fprintf(stderr, "llmd-pd-bench: bad values\n");
        return 2;
    }
    g.row = (size_t) g.kv_heads * g.head_dim * g.dtype_bytes;
    g.layer_bytes = 2 * (size_t) g.block_tokens * g.row;
    g.block_bytes = g.layer_bytes * (size_t) g.layers;

    for (char *tok = strtok(tokens_list, ","); tok; tok = strtok(NULL, ",")) {
        int tokens = atoi(tok);
        struct run r = { .g = &g };
        double raw[50], raw16[50], pd[50], best;
        uint64_t writes = 0;

        r.n_blocks = (tokens + g.block_tokens - 1) / g.block_tokens;
        r.total = (size_t) r.n_blocks * g.block_bytes;
        r.src = malloc(r.total);
        r.dst = malloc(r.total);
        if (!r.src || !r.dst) {
            fprintf(stderr, "llmd-pd-bench: out of memory for %d tokens\n", tokens);
            return 1;
        }
        for (size_t i = 0; i < r.total; i++)
            r.src[i] = (uint8_t) (i * 31 + 7);
        memset(r.dst, 0, r.total);
        for (int k = 0; k < repeat; k++) {
            r.chunk = 1u << 20;
            raw[k] = raw_run(&r);
            r.chunk = 16u << 20;
            raw16[k] = raw_run_nb(&r);
            memset(r.dst, 0, r.total);
            pd[k] = pd_run(&r, &writes);
            if (memcmp(r.src, r.dst, r.total) != 0) {
                fprintf(stderr, "llmd-pd-bench: pages differ after the transfer\n");
                return 1;
            }
        }
        qsort(raw, (size_t) repeat, sizeof(double), cmp_d);
        qsort(raw16, (size_t) repeat, sizeof(double), cmp_d);
        qsort(pd, (size_t) repeat, sizeof(double), cmp_d);
        best = raw[repeat / 2] > raw16[repeat / 2] ? raw[repeat / 2] : raw16[repeat / 2];
        printf("{\"tokens\":%d,\"bytes\":%zu,\"raw_1mib_gbps\":%.3f,"
               "\"raw_16mib_gbps\":%.3f,\"transport_gbps\":%.3f,"
               "\"ratio_to_best_raw\":%.3f,\"writev_calls\":%llu,\"avg_write_mib\":%.2f,"
               "\"pages_identical\":true}\n", tokens, r.total, raw[repeat / 2],
               raw16[repeat / 2], pd[repeat / 2], pd[repeat / 2] / best,
               (unsigned long long) writes,
               writes ? (double) r.total / (double) writes / 1048576.0 : 0);
        fflush(stdout);
        free(r.src);
        free(r.dst);
    }
    return 0;
}
