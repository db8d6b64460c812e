/*
 * Model-aware candidates.  A peer serves the model its heartbeat names, or
 * the one an llmd_model line gives its server line; a request is balanced
 * over the peers that serve its "model" only.  A request that names no
 * model asks for the fleet's only model when there is one.
 *
 * Prefix keys are salted with the model (key ^ hash(model)): the request's
 * with its model, a worker's cache events with the worker's, so two models
 * never share an index entry even for the same prompt bytes, and in-flight
 * figures are per peer, hence per model.
 *
 * llmd_models answers GET /v1/models with the union of the models served.
 */

#include "ngx_llmd.h"


uint64_t
ngx_llmd_model_hash(u_char *name, size_t len)
{
    return llmd_prefix_model_salt(name, len);
}


/* Sets the name and hash of the peer's model; readers without the lock see
 * either the old name or none, never a torn one. */
static void
ngx_llmd_model_store(ngx_llmd_peer_t *p, u_char *model, size_t len)
{
    len = ngx_min(len, sizeof(p->model) - 1);

    if (len == p->model_len && ngx_memcmp(p->model, model, len) == 0) {
        return;
    }

    p->model_len = 0;
    ngx_memory_barrier();
    ngx_memcpy(p->model, model, len);
    p->model_hash = ngx_llmd_model_hash(model, len);
    ngx_memory_barrier();
    p->model_len = len;
}


/* A server line's model from its llmd_model line, unless its heartbeat has
 * said otherwise. */
void
ngx_llmd_model_configure(ngx_llmd_srv_conf_t *conf, ngx_int_t slot,
    ngx_str_t *server)
{
    ngx_uint_t              i;
    ngx_llmd_peer_t        *p;
    ngx_llmd_model_conf_t  *m;

    if (conf->models == NULL || slot < 0) {
        return;
    }

    p = &conf->sh->peers[slot];

    if (p->model_from_hb) {
        return;
    }

    m = conf->models->elts;

    for (i = 0; i < conf->models->nelts; i++) {
        if (m[i].server.len == server->len
            && ngx_strncmp(m[i].server.data, server->data, server->len) == 0)
        {
            ngx_llmd_model_store(p, m[i].model.data, m[i].model.len);
            return;
        }
    }
}


/* From a heartbeat (the Redis owner only). */
void
ngx_llmd_model_learn(ngx_llmd_peer_t *p, const char *model)
{
    size_t  len;

    len = ngx_strlen(model);

    if (len == 0) {
        return;     /* an older worker: whatever the configuration said */
    }

    p->model_from_hb = 1;
    ngx_llmd_model_store(p, (u_char *) model, len);
}


/* Whether the peer is one a request could go to now. */
static ngx_uint_t
ngx_llmd_model_live(ngx_llmd_peer_t *p)
{
    return (!p->dynamic || p->alive) && p->role != LLMD_ROLE_PREFILL;
}


/* After each heartbeat poll: the one model all live peers serve, if one. */
void
ngx_llmd_model_default(ngx_llmd_srv_conf_t *conf)
{
    uint64_t           one;
    ngx_uint_t         k;
    ngx_llmd_peer_t   *p;
    ngx_llmd_shctx_t  *sh;

    sh = conf->sh;
    one = conf->config_model;

    for (k = 0; k < sh->npeers; k++) {
        p = &sh->peers[k];

        if (!ngx_llmd_model_live(p) || p->model_hash == 0) {
            continue;
        }

        if (one == 0) {
            one = p->model_hash;

        } else if (one != p->model_hash) {
            one = 0;
            break;
        }
    }

    sh->default_model = one;
}


/* The request's model hash, and its prefix keys salted with it (once). */
void
ngx_llmd_model_resolve(ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx)
{
    size_t  len;

    if (ctx->model_resolved || !ctx->inspected) {
        return;
    }

    ctx->model_resolved = 1;

    len = ngx_strlen(ctx->req.model);

    ctx->model_hash = len ? ngx_llmd_model_hash((u_char *) ctx->req.model,
                                                len)
                          : (conf->redis ? conf->sh->default_model
                                         : conf->config_model);

    llmd_prefix_salt(ctx->req.prefix.keys, ctx->req.prefix.nkeys,
                     ctx->model_hash);
}


/*
 * NGX_HTTP_NOT_FOUND, with an OpenAI model_not_found error, when the request
 * names a model that no live peer serves while others serve theirs, and the
 * gateway can trust what it knows: the fleet state is fresh, or there is no
 * llmd_redis.  A peer of unknown model serves any.  With stale state, or no
 * live peer at all, the request is balanced as usual (502 when none).
 */
ngx_int_t
ngx_llmd_model_check(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx)
{
    u_char            *p;
    ngx_uint_t         k, live;
    ngx_llmd_peer_t   *pr;
    ngx_llmd_shctx_t  *sh;

    if (!ctx->inspected || ctx->req.model[0] == '\0') {
        return NGX_OK;
    }

    if (conf->redis && ngx_llmd_redis_fresh(conf) == 0) {
        return NGX_OK;
    }

    /* every server line in the zone, with its llmd_model */
    ngx_llmd_resolve_peers(conf);

    sh = conf->sh;
    live = 0;

    for (k = 0; k < sh->npeers; k++) {
        pr = &sh->peers[k];

        if (!ngx_llmd_model_live(pr)) {
            continue;
        }

        if (!ngx_llmd_model_mismatch(pr, ctx->model_hash)) {
            return NGX_OK;
        }

        live++;
    }

    if (live == 0) {
        return NGX_OK;      /* no fleet at all: 502, as for any model */
    }

    p = ngx_pnalloc(r->pool, LLMD_MODEL_MAX + 40);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->error.data = p;
    ctx->error.len = ngx_snprintf(p, LLMD_MODEL_MAX + 40,
                                  "The model `%s` does not exist.",
                                  ctx->req.model) - p;
    ctx->error_param = "model";
    ctx->error_code = "model_not_found";

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llmd: no live peer serves model \"%s\"", ctx->req.model);

    return NGX_HTTP_NOT_FOUND;
}


/* llmd_model <model> <server> ...;  in upstream{} */
char *
ngx_llmd_model_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    uint64_t                h;
    ngx_str_t              *value;
    ngx_uint_t              i;
    ngx_llmd_model_conf_t  *m;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len >= LLMD_WIRE_MODEL_MAX) {
        return "has an invalid model name";
    }

    if (lcf->models == NULL) {
        lcf->models = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_llmd_model_conf_t));
        if (lcf->models == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 2; i < cf->args->nelts; i++) {
        m = ngx_array_push(lcf->models);
        if (m == NULL) {
            return NGX_CONF_ERROR;
        }

        m->model = value[1];
        m->server = value[i];
    }

    /* the model of requests that name none, while all lines agree */
    h = ngx_llmd_model_hash(value[1].data, value[1].len);
    m = lcf->models->elts;

    lcf->config_model = h;

    for (i = 0; i < lcf->models->nelts; i++) {
        if (ngx_llmd_model_hash(m[i].model.data, m[i].model.len) != h) {
            lcf->config_model = 0;
            break;
        }
    }

    return NGX_CONF_OK;
}


/* Appends the peer's model to the list unless it is there already. */
static u_char *
ngx_llmd_models_add(u_char *p, u_char *start, ngx_llmd_peer_t *pr,
    uint64_t *seen, ngx_uint_t *nseen)
{
    size_t      len;
    ngx_uint_t  i;

    len = pr->model_len;
    ngx_memory_barrier();

    if (len == 0 || *nseen == NGX_LLMD_MAX_PEERS) {
        return p;
    }

    for (i = 0; i < *nseen; i++) {
        if (seen[i] == pr->model_hash) {
            return p;
        }
    }

    seen[(*nseen)++] = pr->model_hash;

    p = ngx_sprintf(p, "%s{\"id\":\"", p == start ? "" : ",");
    p = (u_char *) ngx_escape_json(p, pr->model, len);

    return ngx_sprintf(p, "\",\"object\":\"model\",\"created\":0,"
                       "\"owned_by\":\"llmd\"}");
}


static ngx_int_t
ngx_llmd_models_handler(ngx_http_request_t *r)
{
    u_char                 *p, *start;
    uint64_t               *seen;
    ngx_int_t               rc;
    ngx_buf_t              *b;
    ngx_uint_t              i, k, nseen, npeers, *counts;
    ngx_chain_t             out;
    ngx_llmd_peer_t        *pr;
    ngx_llmd_srv_conf_t   **ups;
    ngx_llmd_main_conf_t   *lmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_llmd_module);
    ups = lmcf->upstreams.elts;

    /* the peers counted once: the Redis mirror may add some meanwhile,
     * and the buffer is sized for these */
    counts = ngx_palloc(r->pool, (lmcf->upstreams.nelts + 1)
                                 * sizeof(ngx_uint_t));
    if (counts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    npeers = 0;
    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        counts[i] = ups[i]->sh->npeers;
        npeers += counts[i];
    }

    b = ngx_create_temp_buf(r->pool, 64 + npeers * (6 * LLMD_WIRE_MODEL_MAX
                                                    + 80));
    seen = ngx_palloc(r->pool, NGX_LLMD_MAX_PEERS * sizeof(uint64_t));
    if (b == NULL || seen == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nseen = 0;
    p = ngx_cpymem(b->last, "{\"object\":\"list\",\"data\":[", 25);
    start = p;

    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        /* with stale fleet state: the last known one, as routing uses */
        for (k = 0; k < counts[i]; k++) {
            pr = &ups[i]->sh->peers[k];

            if ((!pr->dynamic || pr->alive) && pr->role != LLMD_ROLE_PREFILL) {
                p = ngx_llmd_models_add(p, start, pr, seen, &nseen);
            }
        }
    }

    p = ngx_cpymem(p, "]}\n", 3);

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
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
ngx_llmd_models_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_llmd_models_handler;

    return NGX_CONF_OK;
}
