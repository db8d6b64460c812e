/*
 * llmd_redis: parsing the directive, the Redis key names, and the
 * placeholder server that lets an upstream{} hold discovered peers only.
 */

#include "ngx_llmd.h"


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

    u_char                 *colon;
    ngx_str_t              *value, s;
    ngx_uint_t              i;
    ngx_cidr_t             *cidr;
    ngx_llmd_redis_conf_t  *rc;

    if (lcf->redis) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_llmd_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "unix:", 5) == 0) {
        rc->host.data = value[1].data + 5;
        rc->host.len = value[1].len - 5;

    } else {
        colon = ngx_strlchr(value[1].data, value[1].data + value[1].len, ':');
        rc->port = colon ? ngx_atoi(colon + 1,
                                    value[1].data + value[1].len - colon - 1)
                         : 6379;
        if (rc->port == NGX_ERROR || rc->port < 1 || rc->port > 65535) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid redis address \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
        rc->host.data = value[1].data;
        rc->host.len = colon ? (size_t) (colon - value[1].data) : value[1].len;
    }

    if (rc->host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis address \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&rc->prefix, LLMD_KEY_PREFIX_DEFAULT);
    ngx_str_set(&rc->pool, LLMD_KEY_POOL_DEFAULT);
    rc->interval = 100;
    rc->stale = 5000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rc->password.data = value[i].data + 9;
            rc->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rc->user.data = value[i].data + 5;
            rc->user.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rc->prefix.data = value[i].data + 7;
            rc->prefix.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "pool=", 5) == 0) {
            rc->pool.data = value[i].data + 5;
            rc->pool.len = value[i].len - 5;
            if (rc->pool.len == 0) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
            rc->interval = ngx_parse_time(&s, 0);
            if (rc->interval == (ngx_msec_t) NGX_ERROR || rc->interval < 10) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "stale=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;
            rc->stale = ngx_parse_time(&s, 0);
            if (rc->stale == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        if (ngx_strncmp(value[i].data, "allow=", 6) == 0) {
            if (rc->allow == NULL) {
                rc->allow = ngx_array_create(cf->pool, 2, sizeof(ngx_cidr_t));
                if (rc->allow == NULL) {
                    return NGX_CONF_ERROR;
                }
            }

            cidr = ngx_array_push(rc->allow);
            if (cidr == NULL) {
                return NGX_CONF_ERROR;
            }

            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (ngx_ptocidr(&s, cidr) == NGX_ERROR) {
                goto invalid;
            }
            continue;
        }

        goto invalid;
    }

    if (rc->stale < 2 * rc->interval) {
        rc->stale = 2 * rc->interval;
    }

    rc->hb_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_HB);
    rc->events_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_EVENTS);
    rc->gw_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_GW);
    rc->placements_key = ngx_llmd_redis_key(cf, rc, LLMD_KEY_PLACEMENTS);
    rc->snap_prefix = ngx_llmd_redis_key(cf, rc, ":snap:");

    if (rc->hb_key == NULL || rc->events_key == NULL || rc->gw_key == NULL
        || rc->placements_key == NULL || rc->snap_prefix == NULL)
    {
        return NGX_CONF_ERROR;
    }

    lcf->redis = rc;

    /* nginx insists on a server line in every upstream{}; discovered peers
     * need none, so a placeholder that is always down stands in */
    if (ngx_llmd_redis_placeholder(cf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}
