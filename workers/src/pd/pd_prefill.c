/*
 * Prefill side: the KV listener, one thread per paired decode worker, and
 * the page pushes the engine makes as layers are computed.
 *
 * Lifetimes.  A pd_source lives from its PREFILL until its pages are
 * released; a connection (pd_pconn) lives while its thread runs or any of
 * its sources does (a reference count).  Under pc->lock: the source list
 * and every source's `ended`.  The final frame of a source (DONE or FAILED)
 * is queued after all of its DATA, so when it has been written, or dropped
 * with the connection, no queued frame reads its pages any more.
 */

#include "pd_prefill.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "pd_engine.h"
#include "sched/prefix_claim.h"
#include "pd_conn.h"
#include "pd_transport.h"

struct pd_server {
    const struct pd_engine *engine;
    int                 listen_fd;
    char                addr[64];
    struct pd_layout    layout;
    uint64_t            layout_hash;
    char                worker_id[PD_ID_MAX];
    int                 lease_ms;
    atomic_uint_fast64_t next_id;
    pthread_t           thread;
};

struct pd_pconn {
    struct pd_server   *srv;
    struct pd_conn      conn;
    const struct pd_transport_ops *t;   /* chosen at the handshake */
    struct pd_link     *link;
    pthread_mutex_t     lock;
    struct pd_source   *sources;
    atomic_int          refs;
    char                peer_id[PD_ID_MAX];
};

struct pd_source {
    struct pd_source       *next;
    struct pd_pconn        *pc;
    struct worker_request  *r;
    uint64_t                xfer;
    uint32_t                first_block;
    uint32_t                n_dst;
    int32_t                *dst;
    double                  lease_end;
    bool                    ended;          /* pc->lock */
    bool                    cancel_sent;    /* connection thread */
    atomic_uint_fast64_t    bytes_written;
    uint64_t                bytes_queued;   /* engine thread */
    uint64_t                last_layer_ns;  /* engine thread: latest layer */
    struct prefix_claim    *claim;          /* gateway keys, or NULL */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void pc_unref(struct pd_pconn *pc)
{
    if (atomic_fetch_sub(&pc->refs, 1) != 1)
        return;
    /* the last source is gone: no push can reach the link any more */
    if (pc->t && pc->t->close && pc->link)
        pc->t->close(pc->link);
    pthread_mutex_destroy(&pc->lock);
    free(pc);
}

static void source_free(struct pd_source *src)
{
    struct pd_pconn *pc = src->pc;

    free(src->dst);
    prefix_claim_free(src->claim);
    free(src);
    pc_unref(pc);
}

/* under pc->lock */
static void unlink_source(struct pd_pconn *pc, struct pd_source *src)
{
    for (struct pd_source **p = &pc->sources; *p; p = &(*p)->next)
        if (*p == src) {
            *p = src->next;
            return;
        }
}

/* ------------------------------------------------------------------------ */
/* frames out: DATA built on the engine thread, written by the connection */

static void on_data_written(void *arg, struct pd_out *o, bool ok)
{
    struct pd_source *src = arg;
    const struct pd_engine *e = src->pc->srv->engine;

    if (ok) {
        uint64_t n = o->total - o->head_len;
        atomic_fetch_add(&src->bytes_written, n);
        atomic_fetch_add(&e->metrics->pd_bytes_out, n);
    }
}

/* The final frame is out (or dropped): the pages are free to go. */
static void on_final_written(void *arg, struct pd_out *o, bool ok)
{
    struct pd_source *src = arg;
    struct pd_pconn *pc = src->pc;
    const struct pd_engine *e = pc->srv->engine;
    bool done = ok && o->head[0] == PD_DONE;

    atomic_fetch_add(done ? &e->metrics->pd_served : &e->metrics->pd_served_failed, 1);
    pthread_mutex_lock(&pc->lock);
    unlink_source(pc, src);
    pthread_mutex_unlock(&pc->lock);
    pd_engine_release(e, src->r);
    source_free(src);
}

struct frame_builder {
    struct pd_source   *src;
    struct kv_manager  *kv;
    struct pd_seg       seg[PD_MAX_SEGS];
    struct iovec        iov[PD_MAX_SEGS];
    int                 n;
};

static void builder_flush(struct frame_builder *fb)
{
    struct pd_pconn *pc = fb->src->pc;
    long bytes;

    if (fb->n == 0)
        return;
    bytes = pc->t->push(pc->link, &pc->conn, fb->src->xfer, fb->seg, fb->iov,
                        fb->n, on_data_written, fb->src);
    /* on failure the decode worker sees a short transfer at DONE (its byte
     * count) rather than wrong pages; a closed connection ends it anyway */
    if (bytes > 0)
        fb->src->bytes_queued += (uint64_t) bytes;
    fb->n = 0;
}

/* Add the run src_ptr[0, len) -> dst block `dst_block` + offset, merged
 * with the previous run when both sides continue it. */
static void builder_add(struct frame_builder *fb, const uint8_t *src_ptr,
    uint32_t dst_block, size_t offset, size_t len)
{
    size_t bb = fb->kv->block_bytes;

    if (fb->n > 0) {
        struct pd_seg *p = &fb->seg[fb->n - 1];
        struct iovec *v = &fb->iov[fb->n - 1];
        size_t prev_end = (size_t) p->dst_block * bb + p->offset + p->len;

        if ((const uint8_t *) v->iov_base + v->iov_len == src_ptr
            && prev_end == (size_t) dst_block * bb + offset
            && p->len + len <= (64u << 20)) {
            p->len += (uint32_t) len;
            v->iov_len += len;
            return;
        }
    }
    if (fb->n == PD_MAX_SEGS)
        builder_flush(fb);
    fb->seg[fb->n] = (struct pd_seg) { dst_block, (uint32_t) offset, (uint32_t) len };
    fb->iov[fb->n].iov_base = (void *) src_ptr;
    fb->iov[fb->n].iov_len = len;
    fb->n++;
}

/* the engine thread's frame builder: too big for its stack */
static struct frame_builder *builder(struct pd_source *src,
    struct worker_request *r)
{
    static struct frame_builder fb;

    (void) r;
    fb.src = src;
    fb.kv = src->pc->srv->engine->kv;
    fb.n = 0;
    return &fb;
}

void pd_source_begin(struct pd_source *src, struct worker_request *r,
    int cached_tokens)
{
    struct frame_builder *fb = builder(src, r);
    struct kv_manager *kv = fb->kv;
    int bt = kv->geo.block_tokens;

    /* blocks found in this worker's cache that the decode worker lacks */
    for (int k = (int) src->first_block; k < cached_tokens / bt; k++)
        builder_add(fb, kv->pool + (size_t) r->blocks[k] * kv->block_bytes,
                    (uint32_t) src->dst[k - (int) src->first_block], 0,
                    kv->block_bytes);
    builder_flush(fb);
}

void pd_source_layer(struct pd_source *src, struct worker_request *r,
    int layer, int start, int n_tokens)
{
    struct frame_builder *fb = builder(src, r);
    struct kv_manager *kv = fb->kv;
    int bt = kv->geo.block_tokens;
    size_t row = kv_row_bytes(kv), lb = kv->layer_bytes;
    int first = start / bt, last = (start + n_tokens - 1) / bt;

    src->last_layer_ns = mono_ns();

    for (int k = first > (int) src->first_block ? first : (int) src->first_block;
         k <= last; k++) {
        int a = (start > k * bt ? start : k * bt) - k * bt;
        int b = (start + n_tokens < (k + 1) * bt ? start + n_tokens : (k + 1) * bt) - k * bt;
        const uint8_t *base = kv->pool + (size_t) r->blocks[k] * kv->block_bytes
                              + (size_t) layer * lb;
        uint32_t dst = (uint32_t) src->dst[k - (int) src->first_block];
        size_t off = (size_t) layer * lb;

        if (a == 0 && b == bt) {
            builder_add(fb, base, dst, off, lb);       /* K and V together */
        } else {
            builder_add(fb, base + (size_t) a * row, dst,
                        off + (size_t) a * row, (size_t) (b - a) * row);
            builder_add(fb, base + (size_t) (bt + a) * row, dst,
                        off + (size_t) (bt + a) * row, (size_t) (b - a) * row);
        }
    }
    builder_flush(fb);
}

void pd_source_end(struct pd_source *src, struct worker_request *r, bool ok)
{
    struct pd_pconn *pc = src->pc;
    struct pd_out *o;
    int posted = -1;

    /* a transport copying out of band must be done before DONE says so */
    if (ok && pc->t && pc->t->fence
        && pc->t->fence(pc->link, pc->srv->lease_ms) != 0) {
        fprintf(stderr, "llmd-worker: kv transfer %016llx: the %s transport "
                "did not complete\n", (unsigned long long) src->xfer, pc->t->name);
        ok = false;
    }
    if (ok) {
        struct pd_done_msg m = {
            /* the moment the final step's last layer was computed */
            .last_layer_ns = src->last_layer_ns ? src->last_layer_ns : mono_ns(),
            .bytes = src->bytes_queued,
            .bytes_before_last = atomic_load(&src->bytes_written),
            .prefill_hit_tokens = (uint32_t) r->prefix_hit_tokens,
        };
        uint8_t buf[64];
        o = pd_out_control(PD_DONE, src->xfer, buf, pd_put_done(buf, &m));
    } else {
        static const char why[] = "the prefill was aborted (lease ended, "
                                  "or the prefill worker is shutting down)";
        o = pd_out_control(PD_FAILED, src->xfer, why, sizeof(why) - 1);
    }
    /* the prompt's blocks are cached here now: advertise them to the
     * gateways, for the next prefill of this prefix */
    if (ok && src->claim
        && pc->srv->engine->remote_prefilled(pc->srv->engine->ctx, src->claim)) {
        src->claim = NULL;
    }
    pthread_mutex_lock(&pc->lock);
    src->ended = true;
    if (o) {
        o->done = on_final_written;
        o->arg = src;
        posted = pd_conn_post(&pc->conn, o);
    }
    if (posted != 0)
        unlink_source(pc, src);
    pthread_mutex_unlock(&pc->lock);
    if (posted != 0) {
        /* the connection is closed: its frames are gone already */
        pd_out_free(o);
        atomic_fetch_add(&pc->srv->engine->metrics->pd_served_failed, 1);
        pd_engine_release(pc->srv->engine, r);
        source_free(src);
    }
}

/* ------------------------------------------------------------------------ */
/* the connection thread */

static int send_failed(struct pd_pconn *pc, uint64_t xfer, const char *why)
{
    struct pd_out *o = pd_out_control(PD_FAILED, xfer, why, strlen(why));

    if (o == NULL || pd_conn_post(&pc->conn, o) != 0) {
        pd_out_free(o);
        return -1;
    }
    return 0;
}

/* The decode worker's gateway keys, over this worker's own blocks of the
 * prompt (one token shorter than the decode worker's). */
static struct prefix_claim *claim_from(const struct pd_prefill_msg *m, int bt)
{
    struct prefix_claim *c = calloc(1, sizeof(*c));
    uint64_t parent = KV_HASH_SEED;

    if (c == NULL)
        return NULL;
    c->nkeys = m->nkeys;
    c->nblocks = m->n_tokens / (uint32_t) bt;
    c->keys = malloc(sizeof(uint64_t) * m->nkeys);
    c->cover = malloc(sizeof(uint32_t) * m->nkeys);
    c->blocks = malloc(sizeof(uint64_t) * (c->nblocks ? c->nblocks : 1));
    if (!c->keys || !c->cover || !c->blocks || c->nblocks == 0) {
        prefix_claim_free(c);
        return NULL;
    }
    for (uint32_t i = 0; i < m->nkeys; i++) {
        uint32_t cover = pd_le32(m->keys_raw + 8 * (size_t) m->nkeys + 4 * (size_t) i);
        c->keys[i] = pd_le64(m->keys_raw + 8 * (size_t) i);
        c->cover[i] = cover < c->nblocks ? cover : c->nblocks;
    }
    for (uint32_t i = 0; i < c->nblocks; i++) {
        c->blocks[i] = kv_block_hash(parent, m->tokens + (size_t) i * bt, bt);
        parent = c->blocks[i];
    }
    return c;
}

static int on_prefill(struct pd_pconn *pc, uint64_t xfer, uint8_t *payload,
    uint32_t len)
{
    const struct pd_engine *e = pc->srv->engine;
    int bt = e->kv->geo.block_tokens;
    struct pd_prefill_msg m;
    struct gen_params params = { .max_tokens = 1, .top_p = 1.0 };
    struct pd_source *src;
    struct worker_request *r;

    if (pd_get_prefill(payload, len, &m) != 0)
        return -1;
    if ((int) m.n_tokens >= e->max_model_len
        || m.first_block > (m.n_tokens + (uint32_t) bt - 1) / (uint32_t) bt
        || m.n_dst != (m.n_tokens + (uint32_t) bt - 1) / (uint32_t) bt - m.first_block)
        return send_failed(pc, xfer, "PREFILL does not fit this worker");
    for (struct pd_source *s = pc->sources; s; s = s->next)
        if (s->xfer == xfer)
            return send_failed(pc, xfer, "duplicate transfer id");

    src = calloc(1, sizeof(*src));
    r = request_new(m.tokens, (int) m.n_tokens, &params, bt);
    if (src == NULL || r == NULL
        || (src->dst = malloc(sizeof(int32_t) * (m.n_dst ? m.n_dst : 1))) == NULL) {
        free(src);
        request_free(r);
        return send_failed(pc, xfer, "out of memory");
    }
    memcpy(src->dst, m.dst_blocks, sizeof(int32_t) * m.n_dst);
    if (m.nkeys)
        src->claim = claim_from(&m, bt);
    src->pc = pc;
    src->r = r;
    src->xfer = xfer;
    src->first_block = m.first_block;
    src->n_dst = m.n_dst;
    {
        int lease = pc->srv->lease_ms;
        if (m.deadline_ms > 0 && (int) m.deadline_ms < lease)
            lease = (int) m.deadline_ms;
        src->lease_end = now_seconds() + lease / 1000.0;
    }
    r->id = atomic_fetch_add(&pc->srv->next_id, 1);
    r->arrival = now_seconds();
    r->pd_src = src;
    r->pd_xfer = xfer;
    atomic_fetch_add(&pc->refs, 1);
    pthread_mutex_lock(&pc->lock);
    src->next = pc->sources;
    pc->sources = src;
    pthread_mutex_unlock(&pc->lock);
    pd_engine_submit(e, r);
    return 0;
}

static int on_frame(void *arg, const struct pd_frame_hdr *h, uint8_t *payload)
{
    struct pd_pconn *pc = arg;

    if (h->type == PD_PREFILL)
        return on_prefill(pc, h->xfer, payload, h->len);
    if (h->type == PD_ABORT) {
        pthread_mutex_lock(&pc->lock);
        for (struct pd_source *s = pc->sources; s; s = s->next)
            if (s->xfer == h->xfer && !s->ended && !s->cancel_sent) {
                s->cancel_sent = true;
                pd_engine_cancel(pc->srv->engine, s->r);
            }
        pthread_mutex_unlock(&pc->lock);
        return 0;
    }
    return -1;      /* nothing else travels decode -> prefill after HELLO */
}

static uint8_t *no_data(void *arg, uint64_t xfer, const struct pd_seg *seg,
    bool *bad)
{
    (void) arg; (void) xfer; (void) seg;
    *bad = true;
    return NULL;
}

static void no_data_end(void *arg, uint64_t xfer, size_t bytes)
{
    (void) arg; (void) xfer; (void) bytes;
}

static const struct pd_reader_ops reader_ops = { on_frame, no_data, no_data_end };

/* Leases: a source not finished by its lease end is cancelled; one whose
 * pages still cannot be written a second later ends the connection, which
 * frees them.  0, or -1 to close. */
static int check_leases(struct pd_pconn *pc)
{
    double now = now_seconds();
    int rc = 0;

    pthread_mutex_lock(&pc->lock);
    for (struct pd_source *s = pc->sources; s; s = s->next) {
        if (now < s->lease_end)
            continue;
        if (!s->ended && !s->cancel_sent) {
            s->cancel_sent = true;
            fprintf(stderr, "llmd-worker: kv transfer %016llx to %s: lease "
                    "ended before the prefill did; aborting it\n",
                    (unsigned long long) s->xfer, pc->peer_id);
            pd_engine_cancel(pc->srv->engine, s->r);
        } else if (now > s->lease_end + 1.0) {
            fprintf(stderr, "llmd-worker: kv transfer %016llx to %s: pages "
                    "not taken a second after the lease ended; closing the "
                    "pair connection\n", (unsigned long long) s->xfer,
                    pc->peer_id);
            rc = -1;
        }
    }
    pthread_mutex_unlock(&pc->lock);
    return rc;
}

static int handshake(struct pd_pconn *pc)
{
    struct pd_server *srv = pc->srv;
    uint8_t buf[512], out[PD_HDR_BYTES + 512];
    struct pd_frame_hdr h;
    struct pd_hello theirs, ours = {
        .version = PD_VERSION, .layout_hash = srv->layout_hash,
        .layout = srv->layout,
    };
    char why[400] = "";
    size_t n;

    pd_transport_identity(srv->engine->kv, &ours);

    if (pd_conn_read_frame(pc->conn.fd, &h, buf, sizeof(buf), 5000) != 0
        || h.type != PD_HELLO || pd_get_hello(buf, h.len, &theirs) != 0) {
        fprintf(stderr, "llmd-worker: kv transfer: no valid HELLO from %s\n",
                pc->conn.peer);
        return -1;
    }
    snprintf(pc->peer_id, sizeof(pc->peer_id), "%s", theirs.worker_id);
    if (theirs.version != PD_VERSION) {
        snprintf(why, sizeof(why), "protocol version %u, this worker speaks %u",
                 theirs.version, PD_VERSION);
    } else if (theirs.layout_hash != srv->layout_hash
               || pd_layout_hash(&theirs.layout) != theirs.layout_hash) {
        char a[160], b[160];
        pd_layout_str(&srv->layout, a, sizeof(a));
        pd_layout_str(&theirs.layout, b, sizeof(b));
        snprintf(why, sizeof(why), "KV layout mismatch: prefill has %s, "
                 "decode has %s", a, b);
    } else {
        pc->t = pd_transport_choose(&ours, &theirs, why, sizeof(why));
    }
    if (why[0]) {
        fprintf(stderr, "llmd-worker: kv transfer: refusing decode worker %s "
                "(%s): %s\n", theirs.worker_id, pc->conn.peer, why);
        n = strlen(why);
        pd_put_hdr(out, PD_HELLO_REFUSED, (uint32_t) n, 0);
        memcpy(out + PD_HDR_BYTES, why, n);
        pd_conn_write_all(pc->conn.fd, out, PD_HDR_BYTES + n, 1000);
        return -1;
    }
    snprintf(ours.worker_id, sizeof(ours.worker_id), "%s", srv->worker_id);
    ours.transports = pc->t->bit;
    n = pd_put_hello(out + PD_HDR_BYTES, &ours);
    pd_put_hdr(out, PD_HELLO_OK, (uint32_t) n, 0);
    if (pd_conn_write_all(pc->conn.fd, out, PD_HDR_BYTES + n, 5000) != 0)
        return -1;
    if (pc->t->accept) {
        /* the socket is non-blocking: the setup helpers poll with deadlines */
        if (pc->t->accept(&pc->link, pc->conn.fd, srv->engine->kv, &theirs,
                          10000, why, sizeof(why)) != 0) {
            fprintf(stderr, "llmd-worker: kv transfer: %s setup with decode "
                    "worker %s failed: %s\n", pc->t->name, theirs.worker_id, why);
            return -1;
        }
    }
    fprintf(stderr, "llmd-worker: kv transfer: paired with decode worker %s "
            "(%s, %s)\n", theirs.worker_id, pc->conn.peer, pc->t->name);
    return 0;
}

static void *conn_main(void *arg)
{
    struct pd_pconn *pc = arg;
    const char *why = "closed";

    if (handshake(pc) == 0) {
        for (;;) {
            struct pollfd p[2] = {
                { .fd = pc->conn.fd, .events = POLLIN },
                { .fd = pc->conn.wake_fd, .events = POLLIN },
            };
            if (pd_conn_has_output(&pc->conn))
                p[0].events |= POLLOUT;
            if (poll(p, 2, 100) < 0 && errno != EINTR)
                break;
            if (p[1].revents)
                pd_conn_drain_wake(&pc->conn);
            if ((p[0].revents & (POLLIN | POLLHUP | POLLERR))
                && pd_conn_read(&pc->conn, &reader_ops, pc, &why) != 0)
                break;
            if (pd_conn_flush(&pc->conn) != 0) {
                why = "write failed";
                break;
            }
            if (check_leases(pc) != 0) {
                why = "lease ended";
                break;
            }
        }
        fprintf(stderr, "llmd-worker: kv transfer: decode worker %s (%s) "
                "disconnected: %s\n", pc->peer_id, pc->conn.peer, why);
    }
    /* queued frames are dropped (the ended sources release their pages);
     * the others are cancelled and release theirs when the engine ends
     * them */
    pd_conn_destroy(&pc->conn);
    pthread_mutex_lock(&pc->lock);
    for (struct pd_source *s = pc->sources; s; s = s->next)
        if (!s->ended && !s->cancel_sent) {
            s->cancel_sent = true;
            pd_engine_cancel(pc->srv->engine, s->r);
        }
    pthread_mutex_unlock(&pc->lock);
    pc_unref(pc);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct pd_server *srv = arg;

    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        char host[NI_MAXHOST], port[NI_MAXSERV], peer[96];
        struct pd_pconn *pc;
        pthread_t t;
        int fd = accept4(srv->listen_fd, (struct sockaddr *) &sa, &len,
                         SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE
                || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (errno != EINTR && errno != ECONNABORTED)
                    sleep(1);
                continue;
            }
            break;
        }
        if (getnameinfo((struct sockaddr *) &sa, len, host, sizeof(host), port,
                        sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
            strcpy(host, "?"), strcpy(port, "?");
        snprintf(peer, sizeof(peer), "%.64s:%.16s", host, port);
        pc = calloc(1, sizeof(*pc));
        if (pc == NULL || pd_conn_init(&pc->conn, fd, peer) != 0) {
            close(fd);
            free(pc);
            continue;
        }
        pc->srv = srv;
        pthread_mutex_init(&pc->lock, NULL);
        atomic_init(&pc->refs, 1);
        if (pthread_create(&t, NULL, conn_main, pc) != 0) {
            pd_conn_destroy(&pc->conn);
            pthread_mutex_destroy(&pc->lock);
            free(pc);
            continue;
        }
        pthread_detach(t);
    }
    return NULL;
}

int pd_server_start(struct pd_server **out, const struct pd_engine *e,
    const struct worker_config *cfg, char *err, int err_len)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *res;
    struct pd_server *srv = calloc(1, sizeof(*srv));
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    char port[16], host[NI_MAXHOST], bound[NI_MAXSERV];
    int one = 1;

    if (srv == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    srv->engine = e;
    srv->lease_ms = cfg->pd_lease_ms;
    pd_layout_of(&srv->layout, &e->kv->geo);
    srv->layout_hash = pd_layout_hash(&srv->layout);
    atomic_init(&srv->next_id, 1ull << 62);
    if (cfg->worker_id[0])
        snprintf(srv->worker_id, sizeof(srv->worker_id), "%s", cfg->worker_id);
    else
        snprintf(srv->worker_id, sizeof(srv->worker_id), "%.50s:%d",
                 cfg->listen_host, cfg->listen_port);

    snprintf(port, sizeof(port), "%d", cfg->kv_listen_port);
    if (getaddrinfo(cfg->kv_listen_host, port, &hints, &res) != 0) {
        snprintf(err, (size_t) err_len, "--kv-listen: cannot resolve '%s'",
                 cfg->kv_listen_host);
        free(srv);
        return -1;
    }
    srv->listen_fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (srv->listen_fd >= 0)
        setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (srv->listen_fd < 0 || bind(srv->listen_fd, res->ai_addr, res->ai_addrlen) != 0
        || listen(srv->listen_fd, 64) != 0
        || getsockname(srv->listen_fd, (struct sockaddr *) &sa, &len) != 0
        || getnameinfo((struct sockaddr *) &sa, len, host, sizeof(host), bound,
                       sizeof(bound), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(err, (size_t) err_len, "--kv-listen %s:%d: %s",
                 cfg->kv_listen_host, cfg->kv_listen_port, strerror(errno));
        freeaddrinfo(res);
        if (srv->listen_fd >= 0)
            close(srv->listen_fd);
        free(srv);
        return -1;
    }
    freeaddrinfo(res);

    /* the host decode workers use: the advertised one, else the bound one
     * (the machine's name when bound to every address) */
    if (cfg->advertise[0]) {
        const char *colon = strrchr(cfg->advertise, ':');
        snprintf(srv->addr, sizeof(srv->addr), "%.*s:%s",
                 (int) (colon - cfg->advertise), cfg->advertise, bound);
    } else if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
        char name[64] = "localhost";
        gethostname(name, sizeof(name) - 1);
        snprintf(srv->addr, sizeof(srv->addr), "%.40s:%.8s", name, bound);
    } else if (strchr(host, ':')) {
        snprintf(srv->addr, sizeof(srv->addr), "[%.40s]:%.8s", host, bound);
    } else {
        snprintf(srv->addr, sizeof(srv->addr), "%.40s:%.8s", host, bound);
    }
    if (pthread_create(&srv->thread, NULL, accept_main, srv) != 0) {
        snprintf(err, (size_t) err_len, "cannot start the KV listener thread");
        close(srv->listen_fd);
        free(srv);
        return -1;
    }
    pthread_detach(srv->thread);
    *out = srv;
    return 0;
}

const char *pd_server_addr(const struct pd_server *s)
{
    return s->addr;
}
