/*
 * Decode side: one thread per prefill peer, connected and paired on first
 * use and then kept; the transfers of that peer run on it.
 *
 * Lifetimes.  Under c->lock: the peer list and each peer's `pending` queue
 * (transfers the engine started, not yet sent).  A peer's `active` list
 * belongs to its thread.  A pd_xfer is freed by the engine thread
 * (pd_client_forget) after the transfer has landed, so an abort racing the
 * landing only touches live memory.  A transfer ends exactly once: its
 * pages are never written after pd_engine_landed() — a DATA frame being
 * read into them is finished first (fail_pending).
 */

#include "pd_decode.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "pd_engine.h"
#include "pd_conn.h"
#include "pd_transport.h"

struct pd_client {
    const struct pd_engine *engine;
    pthread_mutex_t     lock;
    struct pd_peer     *peers;
    struct pd_layout    layout;
    uint64_t            layout_hash;
    char                worker_id[PD_ID_MAX];
    int                 timeout_ms;
};

struct pd_peer {
    struct pd_peer     *next;
    struct pd_client   *client;
    char                addr[64];
    int                 wake_fd;
    bool                dead;           /* c->lock: takes no more transfers */
    struct pd_xfer     *pending;        /* c->lock */
    struct pd_xfer     *active;         /* its thread only */
    struct pd_conn      conn;
    bool                connected;
    const struct pd_transport_ops *t;   /* chosen by the prefill worker */
    struct pd_link     *link;
};

struct pd_xfer {
    struct pd_xfer         *next;
    struct worker_request  *r;
    struct pd_peer         *peer;
    uint64_t                id;
    uint32_t                n_tokens;
    uint32_t                first_block;
    uint32_t                n_dst;
    int32_t                *dst_sorted;     /* the pages it may write */
    double                  deadline;
    double                  started;
    uint64_t                bytes;
    /* when each DATA frame was in (CLOCK_MONOTONIC ns) and the bytes by
     * then: what had arrived before the prefill's last layer is known only
     * at DONE */
    uint64_t               *arrived_ns;
    uint64_t               *arrived_bytes;
    int                     n_arrived;
    int                     cap_arrived;
    atomic_bool             abort;
    bool                    in_frame;       /* a DATA frame is being read */
    const char             *fail_pending;   /* end once that frame is read */
};

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *) a, y = *(const int32_t *) b;
    return (x > y) - (x < y);
}

struct pd_client *pd_client_new(const struct pd_engine *e, const struct worker_config *cfg)
{
    struct pd_client *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->engine = e;
    pthread_mutex_init(&c->lock, NULL);
    pd_layout_of(&c->layout, &e->kv->geo);
    c->layout_hash = pd_layout_hash(&c->layout);
    c->timeout_ms = cfg->pd_timeout_ms;
    if (cfg->worker_id[0])
        snprintf(c->worker_id, sizeof(c->worker_id), "%s", cfg->worker_id);
    else
        snprintf(c->worker_id, sizeof(c->worker_id), "%.50s:%d",
                 cfg->listen_host, cfg->listen_port);
    return c;
}

/* ------------------------------------------------------------------------ */
/* ending a transfer (the peer's thread) */

static void land(struct pd_xfer *x, bool ok, const char *why)
{
    struct worker_request *r = x->r;

    /* only the engine thread changes r->pd_state */
    r->pd_ok = ok;
    if (!ok)
        r->error = why;
    pd_engine_landed(x->peer->client->engine, r);
}

static void remove_active(struct pd_peer *p, struct pd_xfer *x)
{
    for (struct pd_xfer **q = &p->active; *q; q = &(*q)->next)
        if (*q == x) {
            *q = x->next;
            x->next = NULL;
            return;
        }
}

static struct pd_xfer *find_active(struct pd_peer *p, uint64_t id)
{
    for (struct pd_xfer *x = p->active; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

/* Fail x now, or as soon as the DATA frame being read into it is done. */
static void fail_xfer(struct pd_peer *p, struct pd_xfer *x, const char *why,
    bool tell_peer)
{
    if (tell_peer && p->connected) {
        struct pd_out *o = pd_out_control(PD_ABORT, x->id, NULL, 0);
        if (o && pd_conn_post(&p->conn, o) != 0)
            pd_out_free(o);
    }
    if (x->in_frame) {
        x->fail_pending = why;
        return;
    }
    remove_active(p, x);
    land(x, false, why);
}

/* ------------------------------------------------------------------------ */
/* reading: the pages, then DONE or FAILED */

/* The bytes a run goes to, if every block it touches is one of the
 * transfer's; NULL otherwise. */
static uint8_t *run_dest(const struct pd_peer *p, const struct pd_xfer *x,
    const struct pd_seg *seg)
{
    struct kv_manager *kv = p->client->engine->kv;
    size_t bb = kv->block_bytes;
    size_t start = (size_t) seg->dst_block * bb + seg->offset;
    size_t end = start + seg->len;

    if (seg->len == 0 || seg->dst_block >= (uint32_t) kv->geo.num_blocks
        || end > (size_t) kv->geo.num_blocks * bb)
        return NULL;
    for (size_t b = start / bb; b <= (end - 1) / bb; b++) {
        int32_t key = (int32_t) b;
        if (!bsearch(&key, x->dst_sorted, x->n_dst, sizeof(int32_t), cmp_i32))
            return NULL;
    }
    return kv->pool + start;
}

static uint8_t *data_dest(void *arg, uint64_t id, const struct pd_seg *seg,
    bool *bad)
{
    struct pd_peer *p = arg;
    struct pd_xfer *x = find_active(p, id);
    uint8_t *dst;

    if (x == NULL || x->fail_pending)
        return NULL;                    /* aborted: read and dropped */
    x->in_frame = true;
    dst = run_dest(p, x, seg);
    if (dst == NULL)
        *bad = true;
    return dst;
}

static void note_arrival(struct pd_xfer *x, size_t bytes);

static void data_end(void *arg, uint64_t id, size_t bytes)
{
    struct pd_peer *p = arg;
    struct pd_xfer *x = find_active(p, id);

    if (x == NULL)
        return;
    x->in_frame = false;
    note_arrival(x, bytes);
    if (x->fail_pending) {
        remove_active(p, x);
        land(x, false, x->fail_pending);
    }
}

/* RUNS: a transport moving the bytes out of band announced these runs */
static int on_runs(struct pd_peer *p, struct pd_xfer *x, const uint8_t *payload,
    uint32_t len)
{
    struct pd_seg seg[PD_MAX_SEGS];
    uint8_t *dst[PD_MAX_SEGS];
    uint32_t n = len >= 4 ? pd_le32(payload) : 0;
    size_t bytes = 0;

    if (n == 0 || n > PD_MAX_SEGS || len != 4 + 12 * (size_t) n)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        pd_get_seg(payload + 4 + 12 * (size_t) i, &seg[i]);
        if ((dst[i] = run_dest(p, x, &seg[i])) == NULL)
            return -1;
        bytes += seg[i].len;
    }
    if (p->t->pull && p->t->pull(p->link, x->id, seg, dst, (int) n) != 0) {
        fail_xfer(p, x, "the transport could not receive the pages", true);
        return 0;
    }
    note_arrival(x, bytes);
    return 0;
}

static void note_arrival(struct pd_xfer *x, size_t bytes)
{
    x->bytes += bytes;
    if (x->n_arrived == x->cap_arrived) {
        int cap = x->cap_arrived ? 2 * x->cap_arrived : 64;
        uint64_t *a = realloc(x->arrived_ns, sizeof(uint64_t) * (size_t) cap);
        uint64_t *b = a ? realloc(x->arrived_bytes, sizeof(uint64_t) * (size_t) cap) : NULL;
        if (a)
            x->arrived_ns = a;
        if (b) {
            x->arrived_bytes = b;
            x->cap_arrived = cap;
        }
    }
    if (x->n_arrived < x->cap_arrived) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x->arrived_ns[x->n_arrived] = (uint64_t) ts.tv_sec * 1000000000ull
                                      + (uint64_t) ts.tv_nsec;
        x->arrived_bytes[x->n_arrived++] = x->bytes;
    }
}

static int on_frame(void *arg, const struct pd_frame_hdr *h, uint8_t *payload)
{
    struct pd_peer *p = arg;
    struct pd_xfer *x = find_active(p, h->xfer);

    if (h->type != PD_DONE && h->type != PD_FAILED && h->type != PD_RUNS)
        return -1;
    if (x == NULL)
        return 0;                       /* ended here already */
    if (h->type == PD_RUNS)
        return x->fail_pending ? 0 : on_runs(p, x, payload, h->len);
    if (h->type == PD_FAILED) {
        fprintf(stderr, "llmd-worker: kv transfer %016" PRIx64 ": prefill "
                "worker %s failed it: %.*s\n", x->id, p->addr,
                (int) (h->len < PD_REASON_MAX ? h->len : PD_REASON_MAX),
                (const char *) payload);
        fail_xfer(p, x, "the prefill worker reported a failure", false);
        return 0;
    }
    {
        struct pd_done_msg m;
        struct timespec ts;
        uint64_t now_ns;
        struct worker_request *r = x->r;

        if (pd_get_done(payload, h->len, &m) != 0)
            return -1;
        if (m.bytes != x->bytes) {
            fprintf(stderr, "llmd-worker: kv transfer %016" PRIx64 ": %" PRIu64
                    " bytes announced, %" PRIu64 " received\n", x->id, m.bytes,
                    x->bytes);
            fail_xfer(p, x, "pages missing from the transfer", false);
            return 0;
        }
        if (p->t->fence && p->t->fence(p->link, p->client->timeout_ms) != 0) {
            fail_xfer(p, x, "the transport did not complete", false);
            return -1;                  /* the pair is unusable: close it */
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now_ns = (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
        /* the two workers share a monotonic clock only on one machine:
         * elsewhere the exposed time is not defined and is left at 0 */
        r->pd_exposed = now_ns > m.last_layer_ns
                        && now_ns - m.last_layer_ns < 60000000000ull
                        ? (double) (now_ns - m.last_layer_ns) * 1e-9 : 0;
        r->pd_bytes = x->bytes;
        r->pd_bytes_early = 0;
        for (int i = 0; i < x->n_arrived && x->arrived_ns[i] <= m.last_layer_ns; i++)
            r->pd_bytes_early = x->arrived_bytes[i];
        remove_active(p, x);
        land(x, true, NULL);
    }
    return 0;
}

static const struct pd_reader_ops reader_ops = { on_frame, data_dest, data_end };

/* ------------------------------------------------------------------------ */
/* the peer's thread */

static int pair(struct pd_peer *p, const char **why)
{
    static char refused[PD_REASON_MAX + 1];
    struct pd_client *c = p->client;
    struct pd_hello ours = {
        .version = PD_VERSION, .layout_hash = c->layout_hash,
        .layout = c->layout,
    }, theirs;
    char setup_why[256];
    uint8_t buf[PD_HDR_BYTES + 512];
    struct pd_frame_hdr h;
    size_t n;
    int fd = pd_connect(p->addr, 2000, why);

    if (fd < 0)
        return -1;
    snprintf(ours.worker_id, sizeof(ours.worker_id), "%s", c->worker_id);
    pd_transport_identity(c->engine->kv, &ours);
    n = pd_put_hello(buf + PD_HDR_BYTES, &ours);
    pd_put_hdr(buf, PD_HELLO, (uint32_t) n, 0);
    if (pd_conn_write_all(fd, buf, PD_HDR_BYTES + n, 2000) != 0
        || pd_conn_read_frame(fd, &h, buf, sizeof(buf) - 1, 5000) != 0) {
        *why = "no answer to HELLO";
        close(fd);
        return -1;
    }
    if (h.type == PD_HELLO_REFUSED) {
        size_t len = h.len < PD_REASON_MAX ? h.len : PD_REASON_MAX;
        memcpy(refused, buf, len);
        refused[len] = '\0';
        fprintf(stderr, "llmd-worker: kv transfer: prefill worker %s refused "
                "the handshake: %s\n", p->addr, refused);
        *why = "the prefill worker refused the handshake";
        close(fd);
        return -1;
    }
    if (h.type != PD_HELLO_OK || pd_get_hello(buf, h.len, &theirs) != 0
        || theirs.layout_hash != c->layout_hash
        || (p->t = pd_transport_by_bit(theirs.transports)) == NULL
        || !(ours.transports & p->t->bit)) {
        *why = "bad HELLO_OK";
        close(fd);
        return -1;
    }
    if (p->t->connect && p->t->connect(&p->link, fd, c->engine->kv, &theirs,
                                       10000, setup_why, sizeof(setup_why)) != 0) {
        fprintf(stderr, "llmd-worker: kv transfer: %s setup with prefill "
                "worker %s failed: %s\n", p->t->name, p->addr, setup_why);
        *why = "transport setup failed";
        close(fd);
        return -1;
    }
    if (pd_conn_init(&p->conn, fd, p->addr) != 0) {
        *why = "out of file descriptors";
        close(fd);
        return -1;
    }
    p->connected = true;
    fprintf(stderr, "llmd-worker: kv transfer: paired with prefill worker %s "
            "(%s, %s)\n", theirs.worker_id, p->addr, p->t->name);
    return 0;
}

/* Send the PREFILL of each newly started transfer. */
static void take_pending(struct pd_peer *p)
{
    struct pd_client *c = p->client;
    int bt = c->engine->kv->geo.block_tokens;
    struct pd_xfer *list;

    pthread_mutex_lock(&c->lock);
    list = p->pending;
    p->pending = NULL;
    pthread_mutex_unlock(&c->lock);
    while (list) {
        struct pd_xfer *x = list;
        struct worker_request *r = x->r;
        struct pd_prefill_msg m = {
            .n_tokens = x->n_tokens, .first_block = x->first_block,
            .n_dst = x->n_dst, .deadline_ms = (uint32_t) c->timeout_ms,
            .tokens = r->tokens, .dst_blocks = r->blocks + x->first_block,
            .nkeys = r->pd_nkeys, .keys = r->pd_keys, .cover = r->pd_cover,
        };
        size_t len = pd_prefill_size(m.n_tokens, m.n_dst, m.nkeys);
        uint8_t *buf = malloc(len);
        struct pd_out *o = NULL;

        (void) bt;
        list = x->next;
        x->next = p->active;
        p->active = x;
        if (buf) {
            pd_put_prefill(buf, &m);
            o = pd_out_control(PD_PREFILL, x->id, buf, len);
            free(buf);
        }
        if (o == NULL || pd_conn_post(&p->conn, o) != 0) {
            pd_out_free(o);
            fail_xfer(p, x, "out of memory", false);
        }
    }
}

/* Deadlines and aborts; the poll timeout until the next deadline (ms). */
static int check_transfers(struct pd_peer *p)
{
    double now = now_seconds(), next = now + 1.0;
    struct pd_xfer *x = p->active;

    while (x) {
        struct pd_xfer *nx = x->next;
        if (!x->fail_pending) {
            if (atomic_load(&x->abort)) {
                fail_xfer(p, x, "the request was cancelled", true);
            } else if (now >= x->deadline) {
                fprintf(stderr, "llmd-worker: kv transfer %016" PRIx64 " from "
                        "%s: no DONE within %d ms\n", x->id, p->addr,
                        p->client->timeout_ms);
                fail_xfer(p, x, "the transfer deadline passed", true);
            } else if (x->deadline < next) {
                next = x->deadline;
            }
        }
        x = nx;
    }
    return (int) ((next - now) * 1000) + 1;
}

static void *peer_main(void *arg)
{
    struct pd_peer *p = arg;
    struct pd_client *c = p->client;
    const char *why = NULL;
    struct pd_xfer *left;

    if (pair(p, &why) == 0) {
        for (;;) {
            struct pollfd fds[2] = {
                { .fd = p->conn.fd, .events = POLLIN },
                { .fd = p->wake_fd, .events = POLLIN },
            };
            int timeout;

            take_pending(p);
            timeout = check_transfers(p);
            if (pd_conn_has_output(&p->conn))
                fds[0].events |= POLLOUT;
            if (poll(fds, 2, timeout) < 0 && errno != EINTR) {
                why = "poll failed";
                break;
            }
            if (fds[1].revents) {
                uint64_t v;
                ssize_t n = read(p->wake_fd, &v, sizeof(v));
                (void) n;
            }
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR))
                && pd_conn_read(&p->conn, &reader_ops, p, &why) != 0)
                break;
            if (pd_conn_flush(&p->conn) != 0) {
                why = "write failed";
                break;
            }
        }
        fprintf(stderr, "llmd-worker: kv transfer: connection to prefill "
                "worker %s lost: %s\n", p->addr, why);
        why = "the connection to the prefill worker was lost";
    } else {
        fprintf(stderr, "llmd-worker: kv transfer: cannot pair with prefill "
                "worker %s: %s\n", p->addr, why);
        why = "cannot reach the prefill worker";
    }

    /* no new transfers; then end every one this peer had */
    pthread_mutex_lock(&c->lock);
    p->dead = true;
    for (struct pd_peer **q = &c->peers; *q; q = &(*q)->next)
        if (*q == p) {
            *q = p->next;
            break;
        }
    left = p->pending;
    p->pending = NULL;
    pthread_mutex_unlock(&c->lock);
    while (p->active) {
        struct pd_xfer *x = p->active;
        p->active = x->next;
        land(x, false, why);
    }
    while (left) {
        struct pd_xfer *x = left;
        left = x->next;
        land(x, false, why);
    }
    if (p->connected)
        pd_conn_destroy(&p->conn);
    /* every transfer has landed: nothing writes through the link now */
    if (p->t && p->t->close && p->link)
        p->t->close(p->link);
    close(p->wake_fd);
    free(p);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* the engine's side */

void pd_client_start(struct pd_client *c, struct worker_request *r)
{
    const struct pd_engine *e = c->engine;
    int bt = e->kv->geo.block_tokens;
    struct pd_xfer *x = calloc(1, sizeof(*x));
    struct pd_peer *p;
    pthread_t t;

    if (x == NULL) {
        r->error = "out of memory";
        pd_engine_landed(e, r);
        return;
    }
    x->r = r;
    x->id = r->pd_xfer;
    x->n_tokens = (uint32_t) r->n_tokens - 1;
    x->first_block = (uint32_t) (r->prefix_hit_tokens / bt);
    x->n_dst = (x->n_tokens + (uint32_t) bt - 1) / (uint32_t) bt - x->first_block;
    x->started = now_seconds();
    x->deadline = x->started + c->timeout_ms / 1000.0;
    atomic_init(&x->abort, false);
    x->dst_sorted = malloc(sizeof(int32_t) * (x->n_dst ? x->n_dst : 1));
    if (x->dst_sorted == NULL) {
        free(x);
        r->error = "out of memory";
        pd_engine_landed(e, r);
        return;
    }
    memcpy(x->dst_sorted, r->blocks + x->first_block, sizeof(int32_t) * x->n_dst);
    qsort(x->dst_sorted, x->n_dst, sizeof(int32_t), cmp_i32);
    r->pd_dst = x;

    pthread_mutex_lock(&c->lock);
    for (p = c->peers; p; p = p->next)
        if (!p->dead && strcmp(p->addr, r->pd_peer) == 0)
            break;
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL || (p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
            pthread_mutex_unlock(&c->lock);
            free(p);
            r->error = "out of memory";
            pd_engine_landed(e, r);
            return;
        }
        p->client = c;
        snprintf(p->addr, sizeof(p->addr), "%s", r->pd_peer);
        if (pthread_create(&t, NULL, peer_main, p) != 0) {
            pthread_mutex_unlock(&c->lock);
            close(p->wake_fd);
            free(p);
            r->error = "cannot start a transfer thread";
            pd_engine_landed(e, r);
            return;
        }
        pthread_detach(t);
        p->next = c->peers;
        c->peers = p;
    }
    x->peer = p;
    x->next = p->pending;
    p->pending = x;
    {
        uint64_t one = 1;
        ssize_t n = write(p->wake_fd, &one, sizeof(one));
        (void) n;
    }
    pthread_mutex_unlock(&c->lock);
}

void pd_client_abort(struct pd_client *c, struct worker_request *r)
{
    struct pd_xfer *x = r->pd_dst;

    if (x == NULL)
        return;
    atomic_store(&x->abort, true);
    pthread_mutex_lock(&c->lock);
    for (struct pd_peer *p = c->peers; p; p = p->next)
        if (p == x->peer && !p->dead) {
            uint64_t one = 1;
            ssize_t n = write(p->wake_fd, &one, sizeof(one));
            (void) n;
        }
    pthread_mutex_unlock(&c->lock);
}

void pd_client_forget(struct worker_request *r)
{
    if (r->pd_dst) {
        free(r->pd_dst->dst_sorted);
        free(r->pd_dst->arrived_ns);
        free(r->pd_dst->arrived_bytes);
        free(r->pd_dst);
        r->pd_dst = NULL;
    }
}

int pd_parse_headers(const char *peer, const char *xfer_id,
    struct worker_request *r)
{
    const char *colon;
    char *end;
    unsigned long long id;
    long port;

    if (peer == NULL || peer[0] == '\0')
        return 0;                       /* prefill here */
    colon = strrchr(peer, ':');
    if (colon == NULL || colon == peer || strlen(peer) >= sizeof(r->pd_peer)
        || strpbrk(peer, " \t\r\n/") != NULL)
        return -1;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno || *end || port < 1 || port > 65535)
        return -1;
    if (xfer_id == NULL || xfer_id[0] == '\0' || strlen(xfer_id) > 16)
        return -1;
    errno = 0;
    id = strtoull(xfer_id, &end, 16);
    if (errno || *end)
        return -1;
    strcpy(r->pd_peer, peer);
    r->pd_xfer = id;
    r->pd_state = PD_PENDING;
    return 0;
}
