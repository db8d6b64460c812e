/*
 * Flow control in llmd_status: the saturation state, the queue's depth per
 * priority and fairness id, admission outcomes and wait-time histograms
 * per priority, in JSON and as Prometheus families.
 */

#include "ngx_llmd.h"


#define NGX_LLMD_DEPTHS_MAX     256     /* (priority, fairness id) pairs */


typedef struct {
    ngx_int_t           priority;
    ngx_uint_t          flow;
    ngx_uint_t          depth;
} ngx_llmd_depth_t;


/* Bytes the flow part of one upstream may take, in either format. */
size_t
ngx_llmd_flow_status_size(ngx_llmd_srv_conf_t *conf)
{
    size_t  per;

    if (!conf->flow) {
        return 0;
    }

    per = 200 + 2 * conf->upstream->host.len + 6 * NGX_LLMD_FLOW_NAME_LEN;

    return 1024 + NGX_LLMD_BANDS * (NGX_LLMD_ADMIT_NOUTCOMES
                                    + NGX_LLMD_WAIT_BUCKETS + 4) * per
           + (NGX_LLMD_FLOWS * 2 + NGX_LLMD_DEPTHS_MAX) * per;
}


/* The waiting requests grouped by priority and fairness id (a snapshot
 * under the zone lock). */
static ngx_uint_t
ngx_llmd_flow_depths(ngx_llmd_srv_conf_t *conf, ngx_llmd_depth_t *d)
{
    ngx_uint_t          i, k, n;
    ngx_llmd_qentry_t  *e;

    n = 0;

    ngx_shmtx_lock(&conf->shpool->mutex);

    for (i = 0; i < NGX_LLMD_QUEUE_MAX; i++) {
        e = &conf->sh->queue[i];

        if (e->state != NGX_LLMD_Q_WAITING) {
            continue;
        }

        for (k = 0; k < n; k++) {
            if (d[k].priority == e->priority && d[k].flow == e->flow) {
                break;
            }
        }

        if (k == n) {
            if (n == NGX_LLMD_DEPTHS_MAX) {
                continue;
            }

            d[n].priority = e->priority;
            d[n].flow = e->flow;
            d[n].depth = 0;
            n++;
        }

        d[k].depth++;
    }

    ngx_shmtx_unlock(&conf->shpool->mutex);

    return n;
}


static u_char *
ngx_llmd_flow_name(u_char *p, ngx_llmd_flow_t *f)
{
    return (u_char *) ngx_escape_json(p, f->name,
                                      ngx_min(f->name_len,
                                              NGX_LLMD_FLOW_NAME_LEN));
}


u_char *
ngx_llmd_flow_status_json(u_char *p, ngx_llmd_srv_conf_t *conf,
    ngx_pool_t *pool)
{
    ngx_uint_t         i, k, n;
    ngx_llmd_band_t   *b;
    ngx_llmd_flow_t   *f;
    ngx_llmd_depth_t  *d;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    d = ngx_palloc(pool, NGX_LLMD_DEPTHS_MAX * sizeof(ngx_llmd_depth_t));
    if (d == NULL) {
        return p;
    }

    n = ngx_llmd_flow_depths(conf, d);

    p = ngx_sprintf(p, "\"flow\":{\"saturated\":%s,\"queued\":%ui,"
                    "\"granted\":%ui,\"queue_size\":%ui,\"timeout_ms\":%M,"
                    "\"waiting\":[",
                    ngx_llmd_flow_saturated(conf, 0) ? "true" : "false",
                    sh->queued, sh->granted, conf->queue_size,
                    conf->queue_timeout);

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "%s{\"priority\":%i,\"fairness\":\"",
                        i ? "," : "", d[i].priority);
        p = ngx_llmd_flow_name(p, &sh->flows[d[i].flow]);
        p = ngx_sprintf(p, "\",\"depth\":%ui}", d[i].depth);
    }

    p = ngx_sprintf(p, "],\"priorities\":[");

    for (i = 0, n = 0; i < NGX_LLMD_BANDS; i++) {
        b = &sh->bands[i];
        if (!b->used) {
            continue;
        }

        p = ngx_sprintf(p, "%s{\"priority\":%i", n++ ? "," : "", b->priority);

        for (k = 1; k < NGX_LLMD_ADMIT_NOUTCOMES; k++) {
            p = ngx_sprintf(p, ",\"%s\":%uA", ngx_llmd_admissions[k],
                            b->outcomes[k]);
        }

        p = ngx_sprintf(p, ",\"wait_ms_le\":[");
        for (k = 0; k < NGX_LLMD_WAIT_BUCKETS; k++) {
            p = ngx_sprintf(p, "%s%uA", k ? "," : "", b->wait_le[k]);
        }

        p = ngx_sprintf(p, "],\"wait_ms_longer\":%uA,\"wait_ms_sum\":%uA}",
                        b->wait_le[NGX_LLMD_WAIT_BUCKETS], b->wait_sum_ms);
    }

    p = ngx_sprintf(p, "],\"fairness\":[");

    for (i = 0, n = 0; i < NGX_LLMD_FLOWS; i++) {
        f = &sh->flows[i];
        if (f->id == 0) {
            continue;
        }

        p = ngx_sprintf(p, "%s{\"id\":\"", n++ ? "," : "");
        p = ngx_llmd_flow_name(p, f);
        p = ngx_sprintf(p, "\",\"waiting\":%ui,\"admitted\":%uA,"
                        "\"refused\":%uA}", f->waiting, f->admitted, f->shed);
    }

    return ngx_sprintf(p, "]},");
}


static u_char *
ngx_llmd_flow_label(u_char *p, ngx_llmd_flow_t *f)
{
    size_t   i, len;
    u_char   c;

    len = ngx_min(f->name_len, NGX_LLMD_FLOW_NAME_LEN);

    for (i = 0; i < len; i++) {
        c = f->name[i];

        if (c == '"' || c == '\\') {
            *p++ = '\\';

        } else if (c == '\n') {
            *p++ = '\\';
            c = 'n';
        }

        *p++ = c;
    }

    return p;
}


/* One band's queue wait, as a Prometheus histogram. */
static u_char *
ngx_llmd_flow_prom_wait(u_char *p, ngx_str_t *name, ngx_llmd_band_t *b)
{
    ngx_uint_t  k, cum;

    cum = 0;

    for (k = 0; k < NGX_LLMD_WAIT_BUCKETS; k++) {
        cum += b->wait_le[k];
        p = ngx_sprintf(p, "llmd_gateway_queue_wait_seconds_bucket"
                        "{upstream=\"%V\",priority=\"%i\","
                        "le=\"%.3f\"} %ui\n", name, b->priority,
                        (double) ngx_llmd_wait_le_ms[k] / 1000.0, cum);
    }

    cum += b->wait_le[NGX_LLMD_WAIT_BUCKETS];

    return ngx_sprintf(p, "llmd_gateway_queue_wait_seconds_bucket"
                       "{upstream=\"%V\",priority=\"%i\",le=\"+Inf\"} "
                       "%ui\nllmd_gateway_queue_wait_seconds_sum"
                       "{upstream=\"%V\",priority=\"%i\"} %.3f\n"
                       "llmd_gateway_queue_wait_seconds_count"
                       "{upstream=\"%V\",priority=\"%i\"} %ui\n",
                       name, b->priority, cum, name, b->priority,
                       (double) b->wait_sum_ms / 1000.0, name,
                       b->priority, cum);
}


/* The Prometheus families of every upstream with llmd_queue. */
u_char *
ngx_llmd_flow_status_prom(u_char *p, ngx_llmd_srv_conf_t **ups, ngx_uint_t n,
    ngx_pool_t *pool)
{
    ngx_str_t         *name;
    ngx_uint_t         i, j, k, nd;
    ngx_llmd_band_t   *b;
    ngx_llmd_depth_t  *d;
    ngx_llmd_shctx_t  *sh;

    d = ngx_palloc(pool, NGX_LLMD_DEPTHS_MAX * sizeof(ngx_llmd_depth_t));
    if (d == NULL) {
        return p;
    }

    p = ngx_sprintf(p, "# HELP llmd_gateway_saturated 1 while no candidate "
                    "has room: requests wait at the gateway.\n"
                    "# TYPE llmd_gateway_saturated gauge\n");
    for (i = 0; i < n; i++) {
        if (ups[i]->flow) {
            p = ngx_sprintf(p, "llmd_gateway_saturated{upstream=\"%V\"} %d\n",
                            &ups[i]->upstream->host,
                            ngx_llmd_flow_saturated(ups[i], 0) ? 1 : 0);
        }
    }

    p = ngx_sprintf(p, "# HELP llmd_gateway_queue_depth Requests waiting at "
                    "the gateway, by priority and fairness id.\n"
                    "# TYPE llmd_gateway_queue_depth gauge\n");
    for (i = 0; i < n; i++) {
        if (!ups[i]->flow) {
            continue;
        }

        nd = ngx_llmd_flow_depths(ups[i], d);

        for (j = 0; j < nd; j++) {
            p = ngx_sprintf(p, "llmd_gateway_queue_depth{upstream=\"%V\","
                            "priority=\"%i\",fairness=\"",
                            &ups[i]->upstream->host, d[j].priority);
            p = ngx_llmd_flow_label(p, &ups[i]->sh->flows[d[j].flow]);
            p = ngx_sprintf(p, "\"} %ui\n", d[j].depth);
        }
    }

    p = ngx_sprintf(p, "# HELP llmd_gateway_admissions_total What admission "
                    "control did with requests, by priority.\n"
                    "# TYPE llmd_gateway_admissions_total counter\n");
    for (i = 0; i < n; i++) {
        if (!ups[i]->flow) {
            continue;
        }

        for (j = 0; j < NGX_LLMD_BANDS; j++) {
            b = &ups[i]->sh->bands[j];
            if (!b->used) {
                continue;
            }

            for (k = 1; k < NGX_LLMD_ADMIT_NOUTCOMES; k++) {
                p = ngx_sprintf(p, "llmd_gateway_admissions_total{upstream="
                                "\"%V\",priority=\"%i\",outcome=\"%s\"} %uA\n",
                                &ups[i]->upstream->host, b->priority,
                                ngx_llmd_admissions[k], b->outcomes[k]);
            }
        }
    }

    p = ngx_sprintf(p, "# HELP llmd_gateway_queue_wait_seconds Time queued "
                    "requests waited at the gateway.\n"
                    "# TYPE llmd_gateway_queue_wait_seconds histogram\n");
    for (i = 0; i < n; i++) {
        if (!ups[i]->flow) {
            continue;
        }

        sh = ups[i]->sh;
        name = &ups[i]->upstream->host;

        for (j = 0; j < NGX_LLMD_BANDS; j++) {
            b = &sh->bands[j];
            if (!b->used) {
                continue;
            }

            p = ngx_llmd_flow_prom_wait(p, name, b);
        }
    }

    return p;
}
