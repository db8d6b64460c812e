/*
 * Redis URL parsing: a strict little parser, since a typo in --redis should
 * stop the worker at startup rather than leave it retrying forever.
 */

#include "redis_url.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into dst (size bytes with the NUL); -1 when it
 * does not fit or an escape is broken. */
static int decode(char *dst, size_t size, const char *s, size_t n)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char) (hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= size)
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return 0;
}

static int parse_int(const char *s, size_t n, long min, long max, int *out)
{
    char buf[16], *end;
    long v;

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    v = strtol(buf, &end, 10);
    if (errno || *end || buf[0] == '-' || buf[0] == '+' || v < min || v > max)
        return -1;
    *out = (int) v;
    return 0;
}

/* user:password or :password or password-less user. */
static int parse_userinfo(struct redis_url *u, const char *s, size_t n,
    char *err, size_t len)
{
    const char *colon = memchr(s, ':', n);

    if (colon == NULL)
        return fail(err, len, "credentials need the form user:password");
    if (decode(u->user, sizeof(u->user), s, (size_t) (colon - s)) != 0
        || decode(u->password, sizeof(u->password), colon + 1,
                  n - (size_t) (colon - s) - 1) != 0)
        return fail(err, len, "bad or too long user or password");
    if (u->password[0] == '\0')
        return fail(err, len, "empty password");
    return 0;
}

static int parse_tcp(struct redis_url *u, const char *s, char *err, size_t len)
{
    const char *at, *hostport, *slash, *end, *port_at = NULL;
    size_t hlen;

    slash = strchr(s, '/');
    end = slash ? slash : s + strlen(s);
    if (strchr(s, '?') || strchr(s, '#'))
        return fail(err, len, "query strings are only for unix:// URLs");
    at = memrchr(s, '@', (size_t) (end - s));
    if (at) {
        if (parse_userinfo(u, s, (size_t) (at - s), err, len) != 0)
            return -1;
        hostport = at + 1;
    } else {
        hostport = s;
    }

    if (*hostport == '[') {
        const char *close = memchr(hostport, ']', (size_t) (end - hostport));
        if (close == NULL)
            return fail(err, len, "unclosed '[' in the host");
        hostport++;
        hlen = (size_t) (close - hostport);
        if (close + 1 < end) {
            if (close[1] != ':')
                return fail(err, len, "expected ':' after ']'");
            port_at = close + 2;
        }
    } else {
        const char *colon = memchr(hostport, ':', (size_t) (end - hostport));
        hlen = (size_t) ((colon ? colon : end) - hostport);
        if (colon)
            port_at = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(u->host))
        return fail(err, len, "missing or too long host");
    memcpy(u->host, hostport, hlen);
    u->host[hlen] = '\0';
    if (strpbrk(u->host, "@/ "))
        return fail(err, len, "bad host '%s'", u->host);

    u->port = 6379;
    if (port_at && parse_int(port_at, (size_t) (end - port_at), 1, 65535,
                             &u->port) != 0)
        return fail(err, len, "bad port");
    if (slash && slash[1] != '\0'
        && parse_int(slash + 1, strlen(slash + 1), 0, 1 << 20, &u->db) != 0)
        return fail(err, len, "bad database number '%s'", slash + 1);
    return 0;
}

static int parse_query(struct redis_url *u, const char *q, char *err,
    size_t len)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t) (amp - q) : strlen(q);
        const char *eq = memchr(q, '=', n);
        size_t klen, vlen;

        if (eq == NULL)
            return fail(err, len, "bad query parameter");
        klen = (size_t) (eq - q);
        vlen = n - klen - 1;
        if (klen == 8 && memcmp(q, "password", 8) == 0) {
            if (vlen == 0 || decode(u->password, sizeof(u->password), eq + 1,
                                    vlen) != 0)
                return fail(err, len, "bad or too long password");
        } else if (klen == 4 && memcmp(q, "user", 4) == 0) {
            if (decode(u->user, sizeof(u->user), eq + 1, vlen) != 0)
                return fail(err, len, "bad or too long user");
        } else if (klen == 2 && memcmp(q, "db", 2) == 0) {
            if (parse_int(eq + 1, vlen, 0, 1 << 20, &u->db) != 0)
                return fail(err, len, "bad database number");
        } else {
            return fail(err, len, "unknown query parameter '%.*s'",
                        (int) klen, q);
        }
        q += n + (amp ? 1 : 0);
    }
    if (u->user[0] && !u->password[0])
        return fail(err, len, "a user needs a password");
    return 0;
}

static int parse_unix(struct redis_url *u, const char *s, char *err,
    size_t len)
{
    const char *q = strchr(s, '?');
    size_t n = q ? (size_t) (q - s) : strlen(s);

    if (n == 0 || s[0] != '/')
        return fail(err, len, "unix:// needs an absolute path (unix:///path)");
    if (n >= sizeof(u->path))
        return fail(err, len, "socket path longer than %zu bytes",
                    sizeof(u->path) - 1);
    memcpy(u->path, s, n);
    u->path[n] = '\0';
    return q ? parse_query(u, q + 1, err, len) : 0;
}

int redis_url_parse(const char *s, struct redis_url *u, char *err,
    size_t err_len)
{
    memset(u, 0, sizeof(*u));
    if (strncmp(s, "redis://", 8) == 0)
        return parse_tcp(u, s + 8, err, err_len);
    if (strncmp(s, "unix://", 7) == 0)
        return parse_unix(u, s + 7, err, err_len);
    return fail(err, err_len, "expected redis://HOST:PORT or unix:///PATH");
}

void redis_url_describe(const struct redis_url *u, char *buf, size_t size)
{
    if (u->path[0])
        snprintf(buf, size, "unix:%s", u->path);
    else if (strchr(u->host, ':'))
        snprintf(buf, size, "[%s]:%d", u->host, u->port);
    else
        snprintf(buf, size, "%s:%d", u->host, u->port);
}
