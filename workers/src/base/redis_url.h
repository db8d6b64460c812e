/*
 * Redis connection URLs, as --redis takes them:
 *
 *   redis://[user:password@]host[:port][/db]     (port 6379, db 0 by default)
 *   redis://[user:password@][::1]:port[/db]
 *   unix:///path/redis.sock[?password=P&user=U&db=N]
 *
 * User and password may be percent-encoded (%40 for '@' and so on).
 */

#ifndef LLMD_REDIS_URL_H
#define LLMD_REDIS_URL_H

#include <stddef.h>

#define REDIS_URL_HOST_MAX  256
#define REDIS_URL_PATH_MAX  108     /* sun_path */
#define REDIS_URL_CRED_MAX  256

struct redis_url {
    char    host[REDIS_URL_HOST_MAX];       /* "" for a unix socket */
    int     port;
    char    path[REDIS_URL_PATH_MAX];       /* unix socket, "" for TCP */
    char    user[REDIS_URL_CRED_MAX];       /* "" : AUTH with the password only */
    char    password[REDIS_URL_CRED_MAX];   /* "" : no AUTH */
    int     db;
};

/* 0, or -1 with a short reason in err. */
int redis_url_parse(const char *s, struct redis_url *u, char *err,
    size_t err_len);

/* "host:port" or the socket path, for log lines (never the password). */
void redis_url_describe(const struct redis_url *u, char *buf, size_t size);

#endif
