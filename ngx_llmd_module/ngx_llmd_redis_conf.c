/*
 * llmd_redis: parsing the directive, the Redis key names, and the
 * placeholder server that lets an upstream{} hold discovered peers only.
 */

#include "ngx_llmd.h"


static ngx_int_t ngx_llmd_redis_parse_addr(ngx_llmd_redis_conf_t *rc,
    ngx_str_t *addr);
static ngx_int_t ngx_llmd_redis_param(ngx_conf_t *cf,
    ngx_llmd_redis_conf_t *rc, ngx_str_t *v);
static ngx_int_t ngx_llmd_redis_keys(ngx_conf_t *cf,
    ngx_llmd_redis_conf_t *rc);


static char *
ngx_llmd_redis_key(ngx_conf_t *cf, ngx_llmd_redis_conf_t *rc,
    const char *suffix)
{
    u_char  *p;
    size_t   len;

    len = rc->prefix.len + rc->pool.len + ngx_strlen(suffix) + 1;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NULL;
    }

    *ngx_sprintf(p, "%V%V%s", &rc->prefix, &rc->pool, suffix) = '\0';
    return (char *) p;
}


static ngx_int_t
ngx_llmd_redis_placeholder(ngx_conf_t *cf)
{
    ngx_addr_t                    *addr;
    struct sockaddr_in            *sin;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    us = ngx_array_push(uscf->servers);
    addr = ngx_pcalloc(cf->pool, sizeof(ngx_addr_t));
    sin = ngx_pcalloc(cf->pool, sizeof(struct sockaddr_in));
    if (us == NULL || addr == NULL || sin == NULL) {
        return NGX_ERROR;
    }

    sin->sin_family = AF_INET;
    sin->sin_port = htons(9);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    addr->sockaddr = (struct sockaddr *) sin;
    addr->socklen = sizeof(struct sockaddr_in);
    ngx_str_set(&addr->name, NGX_LLMD_PLACEHOLDER);

    ngx_memzero(us, sizeof(ngx_http_upstream_server_t));
    us->name = addr->name;
    us->addrs = addr;
    us->naddrs = 1;
    us->weight = 1;
    us->down = 1;

    return NGX_OK;
}


/* llmd_redis unix:/path|host:port [password=] [user=] [prefix=] [pool=]
 *            [interval=] [stale=] [allow=CIDR]... */
char *
ngx_llmd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ngx_int_t               rc;
    ngx_str_t              *value;
    ngx_uint_t              i;
    ngx_llmd_redis_conf_t  *redis;

    if (lcf->redis) {
        return "is duplicate";
    }

    redis = ngx_pcalloc(cf->pool, sizeof(ngx_llmd_redis_conf_t));
    if (redis == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (ngx_llmd_redis_parse_addr(redis, &value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&redis->prefix, LLMD_KEY_PREFIX_DEFAULT);
    ngx_str_set(&redis->pool, LLMD_KEY_POOL_DEFAULT);
    redis->interval = 100;
    redis->stale = 5000;

    for (i = 2; i < cf->args->nelts; i++) {
        rc = ngx_llmd_redis_param(cf, redis, &value[i]);

        if (rc == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }

        if (rc == NGX_DECLINED) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }
    }

    if (redis->stale < 2 * redis->interval) {
        redis->stale = 2 * redis->interval;
    }

    if (ngx_llmd_redis_keys(cf, redis) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    lcf->redis = redis;

    /* nginx insists on a server line in every upstream{}; discovered peers
     * need none, so a placeholder that is always down stands in */
    if (ngx_llmd_redis_placeholder(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "unix:/path", "host" or "host:port" (6379 by default) */
static ngx_int_t
ngx_llmd_redis_parse_addr(ngx_llmd_redis_conf_t *rc, ngx_str_t *addr)
{
    u_char  *colon;

    if (ngx_strncmp(addr->data, "unix:", 5) == 0) {
        rc->host.data = addr->data + 5;
        rc->host.len = addr->len - 5;

        return rc->host.len ? NGX_OK : NGX_ERROR;
    }

    colon = ngx_strlchr(addr->data, addr->data + addr->len, ':');
    rc->port = colon ? ngx_atoi(colon + 1, addr->data + addr->len - colon - 1)
                     : 6379;

    if (rc->port == NGX_ERROR || rc->port < 1 || rc->port > 65535) {
        return NGX_ERROR;
    }

    rc->host.data = addr->data;
    rc->host.len = colon ? (size_t) (colon - addr->data) : addr->len;

    return rc->host.len ? NGX_OK : NGX_ERROR;
}


/* v is "name=...": s gets the value. */
static ngx_uint_t
ngx_llmd_redis_param_value(ngx_str_t *v, char *name, ngx_str_t *s)
{
    size_t  n;

    n = ngx_strlen(name);

    if (v->len < n || ngx_strncmp(v->data, name, n) != 0) {
        return 0;
    }

    s->data = v->data + n;
    s->len = v->len - n;

    return 1;
}


/* One name=value parameter: NGX_DECLINED when it is unknown or invalid. */
static ngx_int_t
ngx_llmd_redis_param(ngx_conf_t *cf, ngx_llmd_redis_conf_t *rc, ngx_str_t *v)
{
    ngx_str_t    s;
    ngx_cidr_t  *cidr;

    if (ngx_llmd_redis_param_value(v, "password=", &s)) {
        rc->password = s;
        return NGX_OK;
    }

    if (ngx_llmd_redis_param_value(v, "user=", &s)) {
        rc->user = s;
        return NGX_OK;
    }

    if (ngx_llmd_redis_param_value(v, "prefix=", &s)) {
        rc->prefix = s;
        return NGX_OK;
    }

    if (ngx_llmd_redis_param_value(v, "pool=", &s)) {
        rc->pool = s;
        return s.len ? NGX_OK : NGX_DECLINED;
    }

    if (ngx_llmd_redis_param_value(v, "interval=", &s)) {
        rc->interval = ngx_parse_time(&s, 0);
        return (rc->interval == (ngx_msec_t) NGX_ERROR || rc->interval < 10)
               ? NGX_DECLINED : NGX_OK;
    }

    if (ngx_llmd_redis_param_value(v, "stale=", &s)) {
        rc->stale = ngx_parse_time(&s, 0);
        return rc->stale == (ngx_msec_t) NGX_ERROR ? NGX_DECLINED : NGX_OK;
    }

    if (ngx_llmd_redis_param_value(v, "allow=", &s)) {
        if (rc->allow == NULL) {
            rc->allow = ngx_array_create(cf->pool, 2, sizeof(ngx_cidr_t));
            if (rc->allow == NULL) {
                return NGX_ERROR;
            }
        }

        cidr = ngx_array_push(rc->allow);
        if (cidr == NULL) {
            return NGX_ERROR;
        }

        return ngx_ptocidr(&s, cidr) == NGX_ERROR ? NGX_DECLINED : NGX_OK;
    }

    return NGX_DECLINED;
}


/* The Redis keys of this pool: PREFIX POOL suffix (common/llmd_wire.h). */
static ngx_int_t
ngx_llmd_redis_keys(ngx_conf_t *cf, ngx_llmd_redis_conf_t *rc)
{
    rc->hb_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_HB);
    rc->events_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_EVENTS);
    rc->gw_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_GW);
    rc->placements_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_PLACEMENTS);
    rc->snap_prefix = ngx_llmd_redis_key(cf, rc, LLMD_KEY_SNAP);

    if (rc->hb_key == NULL || rc->events_key == NULL || rc->gw_key == NULL
        || rc->placements_key == NULL || rc->snap_prefix == NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
