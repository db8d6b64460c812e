/*
 * llmd_status: the fleet as this gateway sees it, as JSON, or as
 * Prometheus text with ?format=prometheus.
 */

#include "ngx_llmd.h"


#define NGX_LLMD_STATUS_PEER_MAX    4096    /* bytes per peer, both formats */
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
    return then ? ngx_llmd_since(then) : 0;
}


static u_char *ngx_llmd_prom_redis(u_char *p, ngx_llmd_srv_conf_t **ups,
    ngx_uint_t n);
static u_char *ngx_llmd_prom_pd(u_char *p, ngx_llmd_srv_conf_t **ups,
    ngx_uint_t n);
static u_char *ngx_llmd_prom_staleness(u_char *p, ngx_llmd_srv_conf_t **ups,
    ngx_uint_t n);
static u_char *ngx_llmd_status_json_redis(u_char *p, ngx_llmd_shctx_t *sh);
static u_char *ngx_llmd_status_json_peer(u_char *p, ngx_llmd_srv_conf_t *conf,
    ngx_uint_t i);
static u_char *ngx_llmd_status_json_worker(u_char *p,
    ngx_llmd_srv_conf_t *conf, ngx_uint_t i);


static u_char *
ngx_llmd_status_json(u_char *p, ngx_str_t *name, ngx_llmd_srv_conf_t *conf,
    ngx_uint_t first, ngx_pool_t *pool)
{
    ngx_uint_t         i;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;

    p = ngx_sprintf(p, "%s{\"name\":\"%V\",\"index\":{\"capacity\":%uD,"
                    "\"used\":%uD,\"evictions\":%uA},",
                    first ? "" : ",", name, sh->capacity, sh->used,
                    sh->evictions);

    if (conf->redis) {
        p = ngx_llmd_status_json_redis(p, sh);
    }

    if (conf->pd == 1) {
        p = ngx_sprintf(p, "\"pd\":{\"threshold\":%ui,\"max_queue\":%ui,"
                        "\"remote\":%uA,\"local\":{\"no_prefill_peer\":%uA,"
                        "\"under_threshold\":%uA,\"queue_full\":%uA},"
                        "\"transfers\":%uA},",
                        conf->pd_threshold, conf->pd_max_queue,
                        sh->pd_decisions[NGX_LLMD_PD_REMOTE],
                        sh->pd_decisions[NGX_LLMD_PD_NO_PREFILL],
                        sh->pd_decisions[NGX_LLMD_PD_UNDER],
                        sh->pd_decisions[NGX_LLMD_PD_QUEUE_FULL],
                        sh->transfer_seq);
    }

    if (conf->flow) {
        p = ngx_llmd_flow_status_json(p, conf, pool);
    }

    p = ngx_sprintf(p, "\"peers\":[");

    for (i = 0; i < sh->npeers; i++) {
        p = ngx_llmd_status_json_peer(p, conf, i);
    }

    return ngx_sprintf(p, "]}");
}


/* The mirror of Redis: its state and counters, and the TTFT model's. */
static u_char *
ngx_llmd_status_json_redis(u_char *p, ngx_llmd_shctx_t *sh)
{
    p = ngx_sprintf(p, "\"redis\":{\"state\":\"%s\",\"age_ms\":%M,"
                    "\"polls\":%uA,\"heartbeats\":%uA,"
                    "\"events_applied\":%uA,\"records_rejected\":%uA,"
                    "\"errors\":%uA,\"other_gateways\":%uA,"
                    "\"owner_pid\":%uA,\"staleness_ms_le\":[%uA,%uA,"
                    "%uA,%uA,%uA,%uA,%uA,%uA]},",
                    ngx_llmd_redis_states[sh->redis_state & 3],
                    ngx_llmd_age(sh->redis_ok), sh->polls, sh->heartbeats,
                    sh->events_applied, sh->records_rejected,
                    sh->redis_errors, sh->remote_gateways, sh->owner_pid,
                    sh->staleness[0], sh->staleness[1], sh->staleness[2],
                    sh->staleness[3], sh->staleness[4], sh->staleness[5],
                    sh->staleness[6], sh->staleness[7]);

    p = ngx_sprintf(p, "\"ttft_residual_ms\":%.1f,"
                    "\"ttft_spread_ms\":%.1f,\"ttft_samples\":%uA,",
                    sh->ttft_residual_ms, sh->ttft_spread_ms,
                    sh->ttft_samples);

    return p;
}


/* One peer: the gateway's counters, its model, and what its worker said. */
static u_char *
ngx_llmd_status_json_peer(u_char *p, ngx_llmd_srv_conf_t *conf, ngx_uint_t i)
{
    size_t            len;
    ngx_llmd_peer_t  *pr;

    pr = &conf->sh->peers[i];

    p = ngx_sprintf(p, "%s{\"name\":\"%*s\",\"source\":\"%s\","
                    "\"inflight\":%uA,\"inflight_tokens\":%uA,"
                    "\"inflight_work\":%uA,\"prefilling_tokens\":%uA,"
                    "\"remote_inflight\":%uA,\"picks\":%uA,"
                    "\"affinity_picks\":%uA,\"home_picks\":%uA,"
                    "\"balance_picks\":%uA,"
                    "\"predicted_picks\":%uA,\"failures\":%uA,"
                    "\"prefix_hit_rate\":%.3f,"
                    "\"header_time_ms\":%.1f,\"observed_ttft_ms\":%.1f",
                    i ? "," : "", pr->name_len, pr->name,
                    pr->dynamic ? "discovered" : "server",
                    pr->inflight, pr->inflight_tokens, pr->inflight_work,
                    pr->prefilling, pr->remote_inflight, pr->picks, pr->affinity_picks,
                    pr->home_picks, pr->balance_picks, pr->predicted_picks, pr->failures,
                    ngx_llmd_ratio(pr->prefix_hit_blocks,
                                   pr->prefix_blocks),
                    (double) pr->header_time_ewma / 1000.0,
                    pr->observed_ttft_ms);

    len = pr->model_len;
    ngx_memory_barrier();

    if (len) {
        p = ngx_cpymem(p, ",\"model\":\"", 10);
        p = (u_char *) ngx_escape_json(p, pr->model, len);
        *p++ = '"';
    }

    if (pr->hb_seen) {
        p = ngx_llmd_status_json_worker(p, conf, i);
    }

    *p++ = '}';

    return p;
}


/* The worker behind a peer, from its heartbeats. */
static u_char *
ngx_llmd_status_json_worker(u_char *p, ngx_llmd_srv_conf_t *conf, ngx_uint_t i)
{
    ngx_llmd_peer_t  *pr;

    pr = &conf->sh->peers[i];

    p = ngx_sprintf(p, ",\"worker\":{\"id\":\"%s\",\"alive\":%s,"
                    "\"role\":\"%s\",\"kv_addr\":\"%*s\","
                    "\"prefill_assigned\":%uA,"
                    "\"prefill_inflight_tokens\":%uA,"
                    "\"state_age_ms\":%M,"
                    "\"running\":%ui,\"waiting\":%ui,"
                    "\"max_batch\":%ui,\"mean_output\":%.1f,"
                    "\"queued_prefill_tokens\":%uL,"
                    "\"kv_usage\":%.3f,\"prefill_tps\":%.1f,"
                    "\"decode_ms_base\":%.3f,"
                    "\"decode_ms_per_seq\":%.4f,"
                    "\"bytes_per_token\":%.2f,\"events\":%s,"
                    "\"predicted_ttft_ms\":%.1f,"
                    "\"prediction_error_ms\":%.1f,"
                    "\"ttft_residual_ms\":%.1f,"
                    "\"ttft_spread_ms\":%.1f,"
                    "\"ttft_samples\":%uA,"
                    "\"ttft_correction_ms\":%.1f}",
                    pr->worker_id, pr->alive ? "true" : "false",
                    llmd_role_name(pr->role),
                    ngx_min(pr->kv_addr_len, LLMD_WIRE_ADDR_MAX),
                    pr->kv_addr, pr->pd_assigned,
                    pr->pd_inflight_tokens, ngx_llmd_age(pr->hb_seen),
                    pr->running, pr->waiting, pr->max_batch,
                    pr->mean_output,
                    (uint64_t) pr->queued_prefill_tokens,
                    ngx_llmd_ratio(pr->kv_used, pr->kv_total),
                    pr->prefill_tps, pr->decode_ms_base,
                    pr->decode_ms_per_seq, pr->bytes_per_token,
                    pr->events ? "true" : "false",
                    pr->predicted_ttft_ms, pr->prediction_error_ms,
                    pr->ttft_residual_ms, pr->ttft_spread_ms,
                    pr->ttft_samples,
                    ngx_llmd_predict_correction(conf, i));

    return p;
}


/* Prometheus text: one family at a time, over every llmd upstream. */

typedef enum {
    F_REQUESTS, F_PICKS, F_INFLIGHT, F_INFLIGHT_TOKENS, F_INFLIGHT_WORK,
    F_FAILURES,
    F_HIT_BLOCKS, F_BLOCKS, F_OBSERVED, F_PRED_ERR, F_UP, F_AGE,
    F_PD_ASSIGNED, F_PD_INFLIGHT, F_NFAMILIES
} ngx_llmd_family_e;

static const char  *ngx_llmd_families[F_NFAMILIES][3] = {
    { "requests_total", "counter", "Requests sent to the peer." },
    { "picks_total", "counter", "Picks of the peer by reason." },
    { "inflight_requests", "gauge", "Requests in flight to the peer." },
    { "inflight_tokens", "gauge",
      "Estimated tokens (prompt + max_tokens) in flight to the peer." },
    { "inflight_work_tokens", "gauge",
      "Estimated uncached prompt tokens + max_tokens in flight to the peer." },
    { "failures_total", "counter", "Failed attempts on the peer." },
    { "prefix_hit_blocks_total", "counter",
      "Prefix blocks the peer was believed to hold when picked." },
    { "prefix_blocks_total", "counter",
      "Prefix blocks of the requests sent to the peer." },
    { "observed_ttft_seconds", "gauge",
      "Time to first token this gateway observed (EWMA)." },
    { "prediction_error_seconds", "gauge",
      "Mean absolute error of predicted time to first token (EWMA)." },
    { "peer_up", "gauge", "1 while the peer's heartbeat is fresh." },
    { "peer_state_age_seconds", "gauge",
      "Age of the peer's last heartbeat change." },
    { "pd_prefill_assigned_total", "counter",
      "Prefills this gateway assigned to the prefill-role peer." },
    { "pd_prefill_inflight_tokens", "gauge",
      "Prompt tokens assigned to the prefill-role peer, not yet answered." }
};


static u_char *
ngx_llmd_prom_peer(u_char *p, ngx_uint_t f, ngx_str_t *up,
    ngx_llmd_peer_t *pr)
{
    ngx_uint_t  other;

#define L  "llmd_gateway_%s{upstream=\"%V\",peer=\"%*s\"%s"
#define LA ngx_llmd_families[f][0], up, pr->name_len, pr->name

    switch (f) {

    case F_REQUESTS:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->picks);

    case F_PICKS:
        other = pr->picks - pr->affinity_picks - pr->home_picks
                - pr->balance_picks - pr->predicted_picks;
        p = ngx_sprintf(p, L "} %uA\n", LA, ",reason=\"affinity\"",
                        pr->affinity_picks);
        p = ngx_sprintf(p, L "} %uA\n", LA, ",reason=\"home\"",
                        pr->home_picks);
        p = ngx_sprintf(p, L "} %uA\n", LA, ",reason=\"balance\"",
                        pr->balance_picks);
        p = ngx_sprintf(p, L "} %uA\n", LA, ",reason=\"predicted\"",
                        pr->predicted_picks);
        return ngx_sprintf(p, L "} %ui\n", LA, ",reason=\"load\"", other);

    case F_INFLIGHT:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->inflight);

    case F_INFLIGHT_TOKENS:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->inflight_tokens);

    case F_INFLIGHT_WORK:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->inflight_work);

    case F_FAILURES:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->failures);

    case F_HIT_BLOCKS:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->prefix_hit_blocks);

    case F_BLOCKS:
        return ngx_sprintf(p, L "} %uA\n", LA, "", pr->prefix_blocks);

    case F_OBSERVED:
        return ngx_sprintf(p, L "} %.4f\n", LA, "",
                           pr->observed_ttft_ms / 1000.0);

    case F_PRED_ERR:
        return ngx_sprintf(p, L "} %.4f\n", LA, "",
                           pr->prediction_error_ms / 1000.0);

    case F_UP:
        return pr->hb_seen ? ngx_sprintf(p, L "} %d\n", LA, "",
                                         pr->alive ? 1 : 0)
                           : p;

    case F_PD_ASSIGNED:
        return (pr->hb_seen && pr->role == LLMD_ROLE_PREFILL)
               ? ngx_sprintf(p, L "} %uA\n", LA, "", pr->pd_assigned)
               : p;

    case F_PD_INFLIGHT:
        return (pr->hb_seen && pr->role == LLMD_ROLE_PREFILL)
               ? ngx_sprintf(p, L "} %uA\n", LA, "", pr->pd_inflight_tokens)
               : p;

    default: /* F_AGE */
        return pr->hb_seen
               ? ngx_sprintf(p, L "} %.3f\n", LA, "",
                             (double) ngx_llmd_age(pr->hb_seen) / 1000.0)
               : p;
    }

#undef L
#undef LA
}


#define ngx_llmd_prom_head(p, name, type, help)                              \
    ngx_sprintf(p, "# HELP llmd_gateway_%s %s\n# TYPE llmd_gateway_%s %s\n", \
                name, help, name, type)

static u_char *
ngx_llmd_status_prometheus(u_char *p, ngx_llmd_srv_conf_t **ups,
    ngx_uint_t n)
{
    ngx_uint_t  f, i, k;

    for (f = 0; f < F_NFAMILIES; f++) {
        p = ngx_llmd_prom_head(p, ngx_llmd_families[f][0],
                               ngx_llmd_families[f][1],
                               ngx_llmd_families[f][2]);

        for (i = 0; i < n; i++) {
            for (k = 0; k < ups[i]->sh->npeers; k++) {
                p = ngx_llmd_prom_peer(p, f, &ups[i]->upstream->host,
                                       &ups[i]->sh->peers[k]);
            }
        }
    }

    p = ngx_llmd_prom_head(p, "prefix_index_entries", "gauge",
                           "Prefix keys in the shared index.");
    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "llmd_gateway_prefix_index_entries"
                        "{upstream=\"%V\"} %uD\n",
                        &ups[i]->upstream->host, ups[i]->sh->used);
    }

    p = ngx_llmd_prom_head(p, "prefix_index_evictions_total", "counter",
                           "Prefix keys evicted from the shared index.");
    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "llmd_gateway_prefix_index_evictions_total"
                        "{upstream=\"%V\"} %uA\n",
                        &ups[i]->upstream->host, ups[i]->sh->evictions);
    }

    p = ngx_llmd_prom_redis(p, ups, n);
    p = ngx_llmd_prom_pd(p, ups, n);

    return ngx_llmd_prom_staleness(p, ups, n);
}


/* The mirror of Redis, per upstream that has one. */
static u_char *
ngx_llmd_prom_redis(u_char *p, ngx_llmd_srv_conf_t **ups, ngx_uint_t n)
{
    ngx_uint_t         i;
    ngx_llmd_shctx_t  *sh;

#define REDIS_FAMILY(metric, type, help, fmt, value)                         \
    p = ngx_llmd_prom_head(p, metric, type, help);                           \
    for (i = 0; i < n; i++) {                                                \
        if (ups[i]->redis) {                                                 \
            sh = ups[i]->sh;                                                 \
            p = ngx_sprintf(p, "llmd_gateway_" metric "{upstream=\"%V\"} "   \
                            fmt "\n", &ups[i]->upstream->host, value);       \
        }                                                                    \
    }

    REDIS_FAMILY("redis_state_age_seconds", "gauge",
                 "Age of the last complete read of the fleet state.", "%.3f",
                 (double) ngx_llmd_age(sh->redis_ok) / 1000.0)
    REDIS_FAMILY("redis_fresh", "gauge",
                 "1 while the fleet state is fresh enough to route on.", "%d",
                 ngx_llmd_redis_fresh(ups[i]) ? 1 : 0)
    REDIS_FAMILY("redis_rejected_records_total", "counter",
                 "Malformed, hostile or foreign records ignored.", "%uA",
                 sh->records_rejected)
    REDIS_FAMILY("redis_errors_total", "counter",
                 "Redis connection losses and error replies.", "%uA",
                 sh->redis_errors)
    REDIS_FAMILY("redis_events_total", "counter",
                 "Cache events applied to the prefix index.", "%uA",
                 sh->events_applied)
    REDIS_FAMILY("redis_heartbeats_total", "counter",
                 "Worker heartbeats applied.", "%uA", sh->heartbeats)

#undef REDIS_FAMILY

    return p;
}


static u_char *
ngx_llmd_prom_pd(u_char *p, ngx_llmd_srv_conf_t **ups, ngx_uint_t n)
{
    ngx_uint_t         i;
    ngx_str_t         *name;
    ngx_llmd_shctx_t  *sh;

    p = ngx_llmd_prom_head(p, "pd_decisions_total", "counter",
                           "Prefill/decode decisions: remote prefill, or "
                           "local and why.");

    for (i = 0; i < n; i++) {
        if (ups[i]->pd != 1) {
            continue;
        }

        sh = ups[i]->sh;
        name = &ups[i]->upstream->host;

        p = ngx_sprintf(p, "llmd_gateway_pd_decisions_total{upstream=\"%V\","
                        "decision=\"remote\",reason=\"over_threshold\"} %uA\n"
                        "llmd_gateway_pd_decisions_total{upstream=\"%V\","
                        "decision=\"local\",reason=\"no_prefill_peer\"} %uA\n"
                        "llmd_gateway_pd_decisions_total{upstream=\"%V\","
                        "decision=\"local\",reason=\"under_threshold\"} %uA\n"
                        "llmd_gateway_pd_decisions_total{upstream=\"%V\","
                        "decision=\"local\",reason=\"queue_full\"} %uA\n",
                        name, sh->pd_decisions[NGX_LLMD_PD_REMOTE],
                        name, sh->pd_decisions[NGX_LLMD_PD_NO_PREFILL],
                        name, sh->pd_decisions[NGX_LLMD_PD_UNDER],
                        name, sh->pd_decisions[NGX_LLMD_PD_QUEUE_FULL]);
    }

    return p;
}


/* Time from a worker's cache event to shared memory, as a histogram. */
static u_char *
ngx_llmd_prom_staleness(u_char *p, ngx_llmd_srv_conf_t **ups, ngx_uint_t n)
{
    ngx_uint_t         i, b, cum;
    ngx_str_t         *name;
    ngx_llmd_shctx_t  *sh;

    p = ngx_llmd_prom_head(p, "event_staleness_seconds", "histogram",
                           "Time from a worker's cache event to shared "
                           "memory.");

    for (i = 0; i < n; i++) {
        if (ups[i]->redis == NULL) {
            continue;
        }

        sh = ups[i]->sh;
        name = &ups[i]->upstream->host;

        for (b = 0, cum = 0; b < NGX_LLMD_STALENESS_BUCKETS; b++) {
            cum += sh->staleness[b];

            if (b < NGX_LLMD_STALENESS_BUCKETS - 1) {
                p = ngx_sprintf(p, "llmd_gateway_event_staleness_seconds_"
                                "bucket{upstream=\"%V\",le=\"%.3f\"} %ui\n",
                                name,
                                (double) ngx_llmd_staleness_le[b] / 1000.0,
                                cum);
            }
        }

        p = ngx_sprintf(p, "llmd_gateway_event_staleness_seconds_bucket"
                        "{upstream=\"%V\",le=\"+Inf\"} %ui\n"
                        "llmd_gateway_event_staleness_seconds_sum"
                        "{upstream=\"%V\"} %.3f\n"
                        "llmd_gateway_event_staleness_seconds_count"
                        "{upstream=\"%V\"} %ui\n",
                        name, cum, name,
                        (double) sh->staleness_sum_ms / 1000.0, name, cum);
    }

    return p;
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

    size = 16384;
    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        size += NGX_LLMD_STATUS_HEAD_MAX + ups[i]->upstream->host.len * 40
                + ngx_llmd_flow_status_size(ups[i])
                + ups[i]->sh->npeers * (NGX_LLMD_STATUS_PEER_MAX
                                        + 20 * ups[i]->upstream->host.len);
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    if (prom) {
        p = ngx_llmd_status_prometheus(p, ups, lmcf->upstreams.nelts);
        p = ngx_llmd_flow_status_prom(p, ups, lmcf->upstreams.nelts, r->pool);

    } else {
        p = ngx_sprintf(p, "{\"upstreams\":[");

        for (i = 0; i < lmcf->upstreams.nelts; i++) {
            p = ngx_llmd_status_json(p, &ups[i]->upstream->host, ups[i],
                                     i == 0, r->pool);
        }

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
