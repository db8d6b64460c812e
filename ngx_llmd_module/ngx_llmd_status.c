/*
 * llmd_status: the fleet as this gateway sees it, as JSON, or as
 * Prometheus text with ?format=prometheus.
 */

#include "ngx_llmd.h"


#define NGX_LLMD_STATUS_PEER_MAX    1600    /* bytes per peer, both formats */
#define NGX_LLMD_STATUS_HEAD_MAX    4096    /* bytes per upstream */

static const ngx_uint_t  ngx_llmd_staleness_le[NGX_LLMD_STALENESS_BUCKETS - 1]
    = { 1, 2, 5, 10, 20, 50, 100 };

static const char *ngx_llmd_redis_states[] = {
    "off", "waiting", "fresh", "stale"
};


static double
ngx_llmd_ratio(ngx_atomic_uint_t a, ngx_atomic_uint_t b)
{
    return b ? (double) a / (double) b : 0.0;
}


static ngx_msec_t
ngx_llmd_age(ngx_msec_t then)
{
    return then ? ngx_current_msec - then : 0;
}


static u_char *
ngx_llmd_status_json(u_char *p, ngx_str_t *name, ngx_llmd_srv_conf_t *conf,
    ngx_uint_t first)
{
    ngx_uint_t         i;
    ngx_llmd_peer_t   *pr;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    p = ngx_sprintf(p, "%s{\"name\":\"%V\",\"index\":{\"capacity\":%uD,"
                    "\"used\":%uD,\"evictions\":%uA},",
                    first ? "" : ",", name, sh->capacity, sh->used,
                    sh->evictions);

    if (conf->redis) {
        p = ngx_sprintf(p, "\"redis\":{\"state\":\"%s\",\"age_ms\":%M,"
                        "\"polls\":%uA,\"heartbeats\":%uA,"
                        "\"events_applied\":%uA,\"records_rejected\":%uA,"
                        "\"errors\":%uA,\"other_gateways\":%uA},",
                        ngx_llmd_redis_states[sh->redis_state & 3],
                        ngx_llmd_age(sh->redis_ok), sh->polls, sh->heartbeats,
                        sh->events_applied, sh->records_rejected,
                        sh->redis_errors, sh->remote_gateways);
    }

    p = ngx_sprintf(p, "\"peers\":[");

    for (i = 0; i < sh->npeers; i++) {
        pr = &sh->peers[i];

        p = ngx_sprintf(p, "%s{\"name\":\"%*s\",\"source\":\"%s\","
                        "\"inflight\":%uA,\"inflight_tokens\":%uA,"
                        "\"remote_inflight\":%uA,\"picks\":%uA,"
                        "\"affinity_picks\":%uA,\"balance_picks\":%uA,"
                        "\"predicted_picks\":%uA,\"failures\":%uA,"
                        "\"prefix_hit_rate\":%.3f,"
                        "\"header_time_ms\":%.1f,\"observed_ttft_ms\":%.1f",
                        i ? "," : "", pr->name_len, pr->name,
                        pr->dynamic ? "discovered" : "server",
                        pr->inflight, pr->inflight_tokens,
                        pr->remote_inflight, pr->picks, pr->affinity_picks,
                        pr->balance_picks, pr->predicted_picks, pr->failures,
                        ngx_llmd_ratio(pr->prefix_hit_blocks,
                                       pr->prefix_blocks),
                        (double) pr->header_time_ewma / 1000.0,
                        pr->observed_ttft_ms);

        if (pr->hb_seen) {
            p = ngx_sprintf(p, ",\"worker\":{\"id\":\"%s\",\"alive\":%s,"
                            "\"role\":\"%s\",\"state_age_ms\":%M,"
                            "\"running\":%ui,\"waiting\":%ui,"
                            "\"queued_prefill_tokens\":%uL,"
                            "\"kv_usage\":%.3f,\"prefill_tps\":%.1f,"
                            "\"decode_ms_base\":%.3f,"
                            "\"decode_ms_per_seq\":%.4f,\"events\":%s,"
                            "\"predicted_ttft_ms\":%.1f,"
                            "\"prediction_error_ms\":%.1f,"
                            "\"ttft_residual_ms\":%.1f}",
                            pr->worker_id, pr->alive ? "true" : "false",
                            llmd_role_name(pr->role), ngx_llmd_age(pr->hb_seen),
                            pr->running, pr->waiting,
                            (uint64_t) pr->queued_prefill_tokens,
                            ngx_llmd_ratio(pr->kv_used, pr->kv_total),
                            pr->prefill_tps, pr->decode_ms_base,
                            pr->decode_ms_per_seq,
                            pr->events ? "true" : "false",
                            pr->predicted_ttft_ms, pr->prediction_error_ms,
                            pr->ttft_residual_ms);
        }

        *p++ = '}';
    }

    return ngx_sprintf(p, "]}");
}


static u_char *
ngx_llmd_status_prometheus(u_char *p, ngx_str_t *name,
    ngx_llmd_srv_conf_t *conf)
{
    ngx_uint_t         i, b, cum;
    ngx_llmd_peer_t   *pr;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    for (i = 0; i < sh->npeers; i++) {
        pr = &sh->peers[i];

#define L  "{upstream=\"%V\",peer=\"%*s\""
#define LA name, pr->name_len, pr->name

        p = ngx_sprintf(p,
            "llmd_gateway_requests_total" L "} %uA\n"
            "llmd_gateway_picks_total" L ",reason=\"affinity\"} %uA\n"
            "llmd_gateway_picks_total" L ",reason=\"balance\"} %uA\n"
            "llmd_gateway_picks_total" L ",reason=\"predicted\"} %uA\n"
            "llmd_gateway_picks_total" L ",reason=\"load\"} %uA\n"
            "llmd_gateway_inflight_requests" L "} %uA\n"
            "llmd_gateway_inflight_tokens" L "} %uA\n"
            "llmd_gateway_failures_total" L "} %uA\n"
            "llmd_gateway_prefix_hit_blocks_total" L "} %uA\n"
            "llmd_gateway_prefix_blocks_total" L "} %uA\n"
            "llmd_gateway_observed_ttft_ms" L "} %.1f\n"
            "llmd_gateway_prediction_error_ms" L "} %.1f\n",
            LA, pr->picks,
            LA, pr->affinity_picks,
            LA, pr->balance_picks,
            LA, pr->predicted_picks,
            LA, pr->picks - pr->affinity_picks - pr->balance_picks
                - pr->predicted_picks,
            LA, pr->inflight,
            LA, pr->inflight_tokens,
            LA, pr->failures,
            LA, pr->prefix_hit_blocks,
            LA, pr->prefix_blocks,
            LA, pr->observed_ttft_ms,
            LA, pr->prediction_error_ms);

        if (pr->hb_seen) {
            p = ngx_sprintf(p,
                "llmd_gateway_peer_up" L "} %d\n"
                "llmd_gateway_peer_state_age_seconds" L "} %.3f\n",
                LA, pr->alive ? 1 : 0,
                LA, (double) ngx_llmd_age(pr->hb_seen) / 1000.0);
        }

#undef L
#undef LA
    }

    p = ngx_sprintf(p, "llmd_gateway_prefix_index_entries{upstream=\"%V\"} "
                    "%uD\n"
                    "llmd_gateway_prefix_index_evictions_total"
                    "{upstream=\"%V\"} %uA\n",
                    name, sh->used, name, sh->evictions);

    if (conf->redis) {
        p = ngx_sprintf(p,
            "llmd_gateway_redis_state_age_seconds{upstream=\"%V\"} %.3f\n"
            "llmd_gateway_redis_fresh{upstream=\"%V\"} %d\n"
            "llmd_gateway_redis_rejected_records_total{upstream=\"%V\"} %uA\n"
            "llmd_gateway_redis_errors_total{upstream=\"%V\"} %uA\n"
            "llmd_gateway_redis_events_total{upstream=\"%V\"} %uA\n"
            "llmd_gateway_redis_heartbeats_total{upstream=\"%V\"} %uA\n",
            name, (double) ngx_llmd_age(sh->redis_ok) / 1000.0,
            name, ngx_llmd_redis_fresh(conf) ? 1 : 0,
            name, sh->records_rejected,
            name, sh->redis_errors,
            name, sh->events_applied,
            name, sh->heartbeats);

        for (b = 0, cum = 0; b < NGX_LLMD_STALENESS_BUCKETS; b++) {
            cum += sh->staleness[b];

            if (b < NGX_LLMD_STALENESS_BUCKETS - 1) {
                p = ngx_sprintf(p, "llmd_gateway_event_staleness_ms_bucket"
                                "{upstream=\"%V\",le=\"%ui\"} %ui\n",
                                name, ngx_llmd_staleness_le[b], cum);
            } else {
                p = ngx_sprintf(p, "llmd_gateway_event_staleness_ms_bucket"
                                "{upstream=\"%V\",le=\"+Inf\"} %ui\n"
                                "llmd_gateway_event_staleness_ms_sum"
                                "{upstream=\"%V\"} %uA\n"
                                "llmd_gateway_event_staleness_ms_count"
                                "{upstream=\"%V\"} %ui\n",
                                name, cum, name, sh->staleness_sum_ms,
                                name, cum);
            }
        }
    }

    return p;
}


static u_char *
ngx_llmd_status_types(u_char *p)
{
    static const char *counters[] = {
        "requests_total", "picks_total", "failures_total",
        "prefix_hit_blocks_total", "prefix_blocks_total",
        "prefix_index_evictions_total", "redis_rejected_records_total",
        "redis_errors_total", "redis_events_total",
        "redis_heartbeats_total", NULL
    };
    static const char *gauges[] = {
        "inflight_requests", "inflight_tokens", "observed_ttft_ms",
        "prediction_error_ms", "peer_up", "peer_state_age_seconds",
        "prefix_index_entries", "redis_state_age_seconds", "redis_fresh",
        NULL
    };
    ngx_uint_t  i;

    for (i = 0; counters[i]; i++) {
        p = ngx_sprintf(p, "# TYPE llmd_gateway_%s counter\n", counters[i]);
    }

    for (i = 0; gauges[i]; i++) {
        p = ngx_sprintf(p, "# TYPE llmd_gateway_%s gauge\n", gauges[i]);
    }

    return ngx_sprintf(p, "# TYPE llmd_gateway_event_staleness_ms "
                       "histogram\n");
}


static ngx_int_t
ngx_llmd_status_handler(ngx_http_request_t *r)
{
    size_t                  size;
    u_char                 *p;
    ngx_int_t               rc;
    ngx_str_t               fmt;
    ngx_buf_t              *b;
    ngx_uint_t              i, prom;
    ngx_chain_t             out;
    ngx_llmd_srv_conf_t   **ups;
    ngx_llmd_main_conf_t   *lmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    prom = ngx_http_arg(r, (u_char *) "format", 6, &fmt) == NGX_OK
           && fmt.len == 10 && ngx_strncmp(fmt.data, "prometheus", 10) == 0;

    lmcf = ngx_http_get_module_main_conf(r, ngx_llmd_module);
    ups = lmcf->upstreams.elts;

    size = 4096;
    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        size += NGX_LLMD_STATUS_HEAD_MAX + ups[i]->upstream->host.len * 40
                + ups[i]->sh->npeers * (NGX_LLMD_STATUS_PEER_MAX
                                        + 20 * ups[i]->upstream->host.len);
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    if (prom) {
        p = ngx_llmd_status_types(p);
    } else {
        p = ngx_sprintf(p, "{\"upstreams\":[");
    }

    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        if (ups[i]->sh == NULL) {
            continue;
        }

        p = prom ? ngx_llmd_status_prometheus(p, &ups[i]->upstream->host,
                                              ups[i])
                 : ngx_llmd_status_json(p, &ups[i]->upstream->host, ups[i],
                                        i == 0);
    }

    if (!prom) {
        p = ngx_sprintf(p, "]}\n");
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;

    if (prom) {
        ngx_str_set(&r->headers_out.content_type,
                    "text/plain; version=0.0.4");
    } else {
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


char *
ngx_llmd_status_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_llmd_status_handler;

    return NGX_CONF_OK;
}
