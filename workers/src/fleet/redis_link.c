/*
 * The publisher's link to Redis.
 *
 * Link states: DOWN (a retry timer is armed) -> CONNECTING -> HANDSHAKE
 * (AUTH, SELECT, PING in flight) -> READY.  hiredis 0.14 has no timeouts
 * of its own, so a watchdog on the tick drops a connection whose connect
 * or replies take too long.  Every reply callback first checks that its
 * context is still the current one: when a connection is dropped, hiredis
 * calls the callbacks still pending with a NULL reply.
 */

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "publisher_internal.h"

static void went_up(struct publisher *p)
{
    if (p->reported != REPORT_UP)
        fprintf(stderr, "llmd-worker: redis connected (%s)\n", p->where);
    p->reported = REPORT_UP;
}

static void went_down(struct publisher *p, const char *why)
{
    if (p->reported != REPORT_DOWN)
        fprintf(stderr, "llmd-worker: redis unreachable: %s (%s)\n", why,
                p->where);
    p->reported = REPORT_DOWN;
}

static void schedule_retry(struct publisher *p)
{
    struct timeval tv = ms_to_tv(p->backoff_ms);

    p->state = LINK_DOWN;
    if (p->stopping)
        return;
    evtimer_add(p->retry, &tv);
    p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                        : p->backoff_ms * 2;
}

/* Forget the current connection, log, and retry later.  The context is
 * detached first, so the callbacks hiredis runs while freeing it see that
 * they belong to a dead connection. */
void link_drop(struct publisher *p, const char *why)
{
    redisAsyncContext *ac = p->ac;

    p->ac = NULL;
    p->pending = 0;
    p->resync = true;
    went_down(p, why);
    schedule_retry(p);
    if (ac)
        redisAsyncFree(ac);
}

/* A reply for the current connection: counted, and proof of progress.
 * One for a dropped connection (hiredis hands those back NULL) is not. */
static bool reply_counts(struct publisher *p, redisAsyncContext *ac,
    redisReply *reply)
{
    if (ac != p->ac || reply == NULL)
        return false;
    p->pending--;
    p->progress_at = now_seconds();
    return true;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct publisher *p = privdata;
    redisReply *reply = r;

    if (!reply_counts(p, ac, reply))
        return;
    if (reply->type == REDIS_REPLY_ERROR && !p->error_logged) {
        /* a bad reply is not a dead link: say it once, keep going */
        fprintf(stderr, "llmd-worker: redis error: %s\n", reply->str);
        p->error_logged = true;
    }
}

int link_command(struct publisher *p, redisCallbackFn *cb,
    const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (p->ac == NULL)
        return -1;
    va_start(ap, fmt);
    rc = redisvAsyncCommand(p->ac, cb ? cb : on_reply, p, fmt, ap);
    va_end(ap);
    if (rc == REDIS_OK)
        p->pending++;
    return rc == REDIS_OK ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* connection */

static void on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    struct publisher *p = privdata;
    redisReply *reply = r;
    char why[300];

    if (!reply_counts(p, ac, reply))
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "%s", reply->str);
        link_drop(p, why);
    }
}

static void on_ready(redisAsyncContext *ac, void *r, void *privdata)
{
    struct publisher *p = privdata;
    redisReply *reply = r;

    if (!reply_counts(p, ac, reply))
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        link_drop(p, reply->str);
        return;
    }
    p->state = LINK_READY;
    p->backoff_ms = BACKOFF_MIN_MS;
    went_up(p);
    publisher_link_ready(p);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct publisher *p = ac->data;

    if (ac != p->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        p->ac = NULL;
        p->pending = 0;
        went_down(p, ac->errstr[0] ? ac->errstr : "connect failed");
        schedule_retry(p);
        return;
    }
    p->state = LINK_HANDSHAKE;
    p->progress_at = now_seconds();
    if (p->url.password[0]) {
        if (p->url.user[0])
            link_command(p, on_handshake, "AUTH %s %s", p->url.user, p->url.password);
        else
            link_command(p, on_handshake, "AUTH %s", p->url.password);
    }
    if (p->url.db)
        link_command(p, on_handshake, "SELECT %d", p->url.db);
    link_command(p, on_ready, "PING");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct publisher *p = ac->data;

    (void) status;
    if (ac != p->ac)
        return;     /* we dropped it ourselves */
    /* hiredis frees the context after this callback */
    p->ac = NULL;
    p->pending = 0;
    p->resync = true;
    went_down(p, ac->err && ac->errstr[0] ? ac->errstr : "connection closed");
    schedule_retry(p);
}

void link_connect(struct publisher *p)
{
    redisAsyncContext *ac;

    if (p->url.path[0])
        ac = redisAsyncConnectUnix(p->url.path);
    else
        ac = redisAsyncConnect(p->url.host, p->url.port);
    if (ac == NULL || ac->err) {
        char why[256];
        snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        went_down(p, why);
        schedule_retry(p);
        return;
    }
    ac->data = p;
    if (redisLibeventAttach(ac, p->base) != REDIS_OK) {
        redisAsyncFree(ac);
        went_down(p, "cannot attach to the event loop");
        schedule_retry(p);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    p->ac = ac;
    p->state = LINK_CONNECTING;
    p->pending = 0;
    p->error_logged = false;
    p->progress_at = now_seconds();
}

void link_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    link_connect(arg);
}
