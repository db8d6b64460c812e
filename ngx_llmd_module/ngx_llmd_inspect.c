/*
 * Request inspection: read the body before proxy picks a peer (the
 * precontent-phase idiom of ngx_http_mirror_module, so it also works with
 * proxy_request_buffering off), stream it through common/'s parser, and
 * keep the prefix keys in the request context.  All memory comes from the
 * request pool.
 */

#include "ngx_llmd.h"


extern ngx_module_t  ngx_http_proxy_module;

static void ngx_llmd_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_llmd_is_json(ngx_http_request_t *r);
static ngx_int_t ngx_llmd_json_media_type(ngx_str_t *ct);
static ngx_int_t ngx_llmd_admission(ngx_http_request_t *r,
    ngx_llmd_ctx_t *ctx);
static ngx_int_t ngx_llmd_admission_decide(ngx_http_request_t *r,
    ngx_llmd_srv_conf_t *conf, ngx_llmd_ctx_t *ctx);


/* yajl's allocator on the request pool: sizes are kept in front of each
 * block so realloc can copy; large blocks go back to the pool early. */

static void *
ngx_llmd_pool_malloc(void *ctx, size_t size)
{
    size_t  *p;

    p = ngx_palloc(ctx, size + sizeof(size_t) * 2);
    if (p == NULL) {
        return NULL;
    }

    p[0] = size;
    return p + 2;
}


static void
ngx_llmd_pool_free(void *ctx, void *ptr)
{
    if (ptr) {
        (void) ngx_pfree(ctx, (size_t *) ptr - 2);
    }
}


static void *
ngx_llmd_pool_realloc(void *ctx, void *ptr, size_t size)
{
    void    *n;
    size_t   old;

    n = ngx_llmd_pool_malloc(ctx, size);
    if (n == NULL || ptr == NULL) {
        return n;
    }

    old = ((size_t *) ptr)[-2];
    ngx_memcpy(n, ptr, ngx_min(old, size));
    ngx_llmd_pool_free(ctx, ptr);

    return n;
}


/*
 * The llmd upstream this location proxies to, if any: proxy's location
 * configuration begins with its ngx_http_upstream_conf_t, whose first
 * field is the upstream{} block (stable across nginx versions).
 */
ngx_llmd_srv_conf_t *
ngx_llmd_location_upstream(ngx_http_request_t *r)
{
    ngx_llmd_srv_conf_t           *conf;
    ngx_http_upstream_conf_t      *ucf;
    ngx_http_upstream_srv_conf_t  *uscf;

    ucf = ngx_http_get_module_loc_conf(r, ngx_http_proxy_module);
    if (ucf == NULL) {
        return NULL;
    }

    uscf = ucf->upstream;

    /* implicit upstreams (proxy_pass http://host:port) have no srv_conf;
     * the enabled flag, not peer.init_upstream, marks an llmd upstream
     * because keepalive wraps init_upstream */
    if (uscf == NULL || uscf->srv_conf == NULL) {
        return NULL;
    }

    conf = ngx_http_conf_upstream_srv_conf(uscf, ngx_llmd_module);

    return conf->enabled == 1 ? conf : NULL;
}


ngx_int_t
ngx_llmd_location_enabled(ngx_http_request_t *r)
{
    ngx_llmd_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_llmd_module);

    if (llcf->inspect != NGX_CONF_UNSET) {
        return llcf->inspect;
    }

    return ngx_llmd_location_upstream(r) != NULL;
}


/*
 * Only bodies with a JSON media type (application/json or application/...+json,
 * parameters allowed) are inspected.  Anything else, including a body with no
 * Content-Type at all, is balanced on load alone and forwarded untouched, as
 * stock nginx would: curl -d sends application/x-www-form-urlencoded, and a
 * body without a type may be anything.
 */
static ngx_int_t
ngx_llmd_is_json(ngx_http_request_t *r)
{
    if (r->method != NGX_HTTP_POST) {
        return 0;
    }

    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return 0;
    }

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    return ngx_llmd_json_media_type(&r->headers_in.content_type->value);
}


static ngx_int_t
ngx_llmd_json_media_type(ngx_str_t *ct)
{
    u_char  *p, *last;

    p = ct->data;
    last = ngx_strlchr(p, p + ct->len, ';');

    if (last == NULL) {
        last = p + ct->len;
    }

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    if (last - p < 16 || ngx_strncasecmp(p, (u_char *) "application/", 12)) {
        return 0;
    }

    if (last - p == 16) {
        return ngx_strncasecmp(p + 12, (u_char *) "json", 4) == 0;
    }

    return ngx_strncasecmp(last - 5, (u_char *) "+json", 5) == 0;
}


ngx_int_t
ngx_llmd_precontent_handler(ngx_http_request_t *r)
{
    ngx_int_t        rc;
    ngx_llmd_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx) {
        if (ctx->status == NGX_DECLINED && !ctx->flow_done) {
            return ngx_llmd_admission(r, ctx);
        }

        return ctx->status;
    }

    if (!ngx_llmd_location_enabled(r) || !ngx_llmd_is_json(r)) {
        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_llmd_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->status = NGX_DONE;
    ngx_http_set_ctx(r, ctx, ngx_llmd_module);

    rc = ngx_http_read_client_request_body(r, ngx_llmd_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


/*
 * After a valid body: the model must be served (else 404), priority and
 * fairness are set, and with llmd_queue the request is admitted, refused
 * or queued (ngx_llmd_flow.c, which resumes the phase when it may go).
 */
static ngx_int_t
ngx_llmd_admission(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx)
{
    ngx_int_t             rc;
    ngx_msec_int_t        t0;
    ngx_llmd_srv_conf_t  *conf;

    conf = ngx_llmd_location_upstream(r);

    if (conf == NULL || !ctx->inspected) {
        ctx->flow_done = 1;
        return NGX_DECLINED;
    }

    /* part of the gateway's decision ($llmd_decision_us) */
    t0 = ngx_llmd_now_ns();
    rc = ngx_llmd_admission_decide(r, conf, ctx);
    ctx->decision_ns += ngx_llmd_now_ns() - t0;

    return rc;
}


static ngx_int_t
ngx_llmd_admission_decide(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf,
    ngx_llmd_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_llmd_model_check(r, conf, ctx);

    if (rc == NGX_OK && ngx_llmd_flow_classify(r, ctx) != NGX_OK) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        ctx->flow_done = 1;
        ctx->status = rc;
        return rc;
    }

    if (!conf->flow) {
        ctx->flow_done = 1;
        return NGX_DECLINED;
    }

    return ngx_llmd_flow_admit(r, conf, ctx);
}


static void
ngx_llmd_body_handler(ngx_http_request_t *r)
{
    ngx_llmd_ctx_t       *ctx;
    ngx_llmd_srv_conf_t  *conf;

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);
    conf = ngx_llmd_location_upstream(r);

    if (ngx_llmd_inspect_body(r, conf) == NULL) {
        ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else if (ctx->req.status == LLMD_REQ_INVALID) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llmd: rejected request body: %s", ctx->req.error);
        ctx->error.data = (u_char *) ctx->req.error;
        ctx->error.len = ngx_strlen(ctx->req.error);
        ctx->error_param = ctx->req.error_param;
        ctx->status = NGX_HTTP_BAD_REQUEST;

    } else {
        ctx->status = NGX_DECLINED;
    }

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * The body as one contiguous piece.  yajl hands out a string that lies in
 * one input chunk without copying it, but buffers one split across chunks,
 * and nginx splits a body between its header buffer and body buffer (or a
 * temporary file).  Gathering into a per-process scratch buffer costs one
 * copy into warm memory; a fresh large allocation per request would cost
 * page faults on every request.  Inspection is synchronous, so one buffer
 * per worker process is enough; it grows to the largest body seen (at most
 * client_max_body_size) and is never shrunk.
 */
static u_char  *ngx_llmd_scratch;
static size_t   ngx_llmd_scratch_size;

static ngx_int_t
ngx_llmd_body_bytes(ngx_http_request_t *r, u_char **data, size_t *len)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size += ngx_buf_in_memory(b) ? b->last - b->pos
                                     : b->file_last - b->file_pos;
    }

    cl = r->request_body->bufs;

    if (cl && cl->next == NULL && ngx_buf_in_memory(cl->buf)) {
        *data = cl->buf->pos;           /* already one piece */
        *len = (size_t) size;
        return NGX_OK;
    }

    if ((size_t) size > ngx_llmd_scratch_size) {
        p = ngx_alloc(ngx_max((size_t) size, 64 * 1024), r->connection->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (ngx_llmd_scratch) {
            ngx_free(ngx_llmd_scratch);
        }

        ngx_llmd_scratch = p;
        ngx_llmd_scratch_size = ngx_max((size_t) size, 64 * 1024);
    }

    p = ngx_llmd_scratch;

    *data = p;
    *len = (size_t) size;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (b->in_file) {
            n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }
            p += n;
        }
    }

    return NGX_OK;
}


/*
 * Parses the body already read into r->request_body: in memory, in a
 * temporary file, or both.  Returns the context (its req.status tells
 * whether the body was valid), or NULL on an internal error or when there
 * is no body to look at.
 */
ngx_llmd_ctx_t *
ngx_llmd_inspect_body(ngx_http_request_t *r, ngx_llmd_srv_conf_t *conf)
{
    size_t             block_size, max_blocks;
    u_char            *block, *data;
    size_t             len;
    uint64_t          *keys;
    ngx_msec_int_t     t0;
    ngx_llmd_ctx_t    *ctx;
    llmd_allocator_t   alloc;

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx == NULL) {
        if (r->request_body == NULL || r->request_body->bufs == NULL
            || !ngx_llmd_is_json(r))
        {
            return NULL;
        }

        ctx = ngx_pcalloc(r->pool, sizeof(ngx_llmd_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ctx->status = NGX_DECLINED;
        ngx_http_set_ctx(r, ctx, ngx_llmd_module);
    }

    t0 = ngx_llmd_now_ns();

    block_size = conf ? conf->block_size : LLMD_PREFIX_BLOCK_DEFAULT;
    max_blocks = conf ? conf->max_blocks : LLMD_PREFIX_MAX_BLOCKS_DEFAULT;

    block = ngx_palloc(r->pool, block_size);
    keys = ngx_palloc(r->pool, max_blocks * sizeof(uint64_t));
    if (block == NULL || keys == NULL) {
        return NULL;
    }

    alloc.malloc = ngx_llmd_pool_malloc;
    alloc.realloc = ngx_llmd_pool_realloc;
    alloc.free = ngx_llmd_pool_free;
    alloc.ctx = r->pool;

    if (llmd_request_init(&ctx->req, &alloc, block_size, max_blocks, block,
                          keys)
        != LLMD_REQ_OK)
    {
        return NULL;
    }

    ctx->block_size = block_size;

    if (r->request_body && r->request_body->bufs) {
        if (ngx_llmd_body_bytes(r, &data, &len) != NGX_OK) {
            llmd_request_cleanup(&ctx->req);
            return NULL;
        }

        (void) llmd_request_feed(&ctx->req, data, len);
    }

    (void) llmd_request_finish(&ctx->req);
    llmd_request_cleanup(&ctx->req);

    if (ctx->req.status == LLMD_REQ_NOMEM) {
        return NULL;
    }

    ctx->inspected = (ctx->req.status == LLMD_REQ_OK);

    if (conf) {
        ngx_llmd_model_resolve(conf, ctx);
    }

    ctx->decision_ns += ngx_llmd_now_ns() - t0;

    return ctx;
}
