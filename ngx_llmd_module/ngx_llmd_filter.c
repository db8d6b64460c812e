/*
 * Response filters of llmd locations:
 *   - nginx's own error pages (400, 413, 502, 504, ...) become OpenAI-style
 *     JSON error bodies, so SDKs show a readable error;
 *   - with llmd_debug_headers on, X-LLMD-Upstream, X-LLMD-Prefix-Blocks and
 *     X-LLMD-Pick tell which peer served and why; X-LLMD-PD, and for a
 *     remote prefill X-LLMD-Prefill-Peer and X-LLMD-Transfer-Id, tell the
 *     prefill/decode decision;
 *   - a remote prefill's tokens leave the prefill worker's backlog once
 *     the decode worker answers.
 */

#include "ngx_llmd.h"


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_int_t
ngx_llmd_add_header(ngx_http_request_t *r, const char *name, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_llmd_debug_headers(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx)
{
    u_char     *p;
    ngx_str_t   v;

    if (ctx->peer.len == 0) {
        return NGX_OK;
    }

    if (ngx_llmd_add_header(r, "X-LLMD-Upstream", &ctx->peer) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, 2 * NGX_INT_T_LEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;
    v.len = ngx_sprintf(p, "%ui/%uz", ctx->matched,
                        ctx->inspected ? ctx->req.prefix.nkeys : 0) - p;

    if (ngx_llmd_add_header(r, "X-LLMD-Prefix-Blocks", &v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->reason != NGX_LLMD_PICK_NONE) {
        v.data = (u_char *) ngx_llmd_pick_reasons[ctx->reason];
        v.len = ngx_strlen(v.data);

        if (ngx_llmd_add_header(r, "X-LLMD-Pick", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->pd_reason) {
        v.data = (u_char *) ctx->pd_reason;
        v.len = ngx_strlen(ctx->pd_reason);

        if (ngx_llmd_add_header(r, "X-LLMD-PD", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx->pd_remote) {
        if (ngx_llmd_add_header(r, "X-LLMD-Prefill-Peer", &ctx->pd_peer)
            != NGX_OK
            || ngx_llmd_add_header(r, "X-LLMD-Transfer-Id", &ctx->transfer_id)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* 429 and 503 of admission control say when to come back */
static ngx_int_t
ngx_llmd_retry_after(ngx_http_request_t *r, ngx_uint_t seconds)
{
    u_char     *p;
    ngx_str_t   v;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;
    v.len = ngx_sprintf(p, "%ui", seconds) - p;

    return ngx_llmd_add_header(r, "Retry-After", &v);
}


static void
ngx_llmd_error_text(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx,
    ngx_uint_t status, ngx_str_t *msg, const char **type)
{
    ngx_http_core_loc_conf_t  *clcf;

    *type = status < 500 ? "invalid_request_error" : "server_error";

    if (ctx && ctx->error_type) {
        *type = ctx->error_type;
    }

    if (ctx && ctx->error.len) {
        *msg = ctx->error;
        return;
    }

    switch (status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
        msg->data = ngx_pnalloc(r->pool, 80);
        if (msg->data == NULL) {
            msg->len = 0;
            return;
        }
        msg->len = ngx_sprintf(msg->data, "request body is larger than the "
                               "limit of %O bytes",
                               clcf->client_max_body_size) - msg->data;
        return;

    case NGX_HTTP_BAD_REQUEST:
        ngx_str_set(msg, "bad request");
        return;

    case NGX_HTTP_BAD_GATEWAY:
        ngx_str_set(msg, "no inference worker could take the request");
        return;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_str_set(msg, "the service is overloaded, retry later");
        return;

    case NGX_HTTP_GATEWAY_TIME_OUT:
        ngx_str_set(msg, "the inference worker did not answer in time");
        return;

    default:
        ngx_str_set(msg, "request failed");
        return;
    }
}


/* {"error":{"message":"…","type":"…","param":…,"code":N}} */
static ngx_buf_t *
ngx_llmd_error_body(ngx_http_request_t *r, ngx_llmd_ctx_t *ctx,
    ngx_uint_t status)
{
    size_t       len, esc;
    u_char      *p;
    ngx_buf_t   *b;
    ngx_str_t    msg;
    const char  *type, *param;

    ngx_llmd_error_text(r, ctx, status, &msg, &type);

    param = (ctx && ctx->error_param) ? ctx->error_param : NULL;

    esc = ngx_escape_json(NULL, msg.data, msg.len);

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":\"\",\"param\":"
                 ",\"code\":}}\n") - 1
          + msg.len + esc + ngx_strlen(type) + NGX_INT_T_LEN
          + (param ? ngx_strlen(param) + 2 : 4)
          + (ctx && ctx->error_code ? ngx_strlen(ctx->error_code) + 2 : 0);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NULL;
    }

    p = ngx_cpymem(b->last, "{\"error\":{\"message\":\"", 21);
    p = (u_char *) ngx_escape_json(p, msg.data, msg.len);
    p = ngx_sprintf(p, "\",\"type\":\"%s\",\"param\":", type);

    if (param) {
        p = ngx_sprintf(p, "\"%s\"", param);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    if (ctx && ctx->error_code) {
        p = ngx_sprintf(p, ",\"code\":\"%s\"}}\n", ctx->error_code);

    } else {
        p = ngx_sprintf(p, ",\"code\":%ui}}\n", status);
    }

    b->last = p;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return b;
}


static ngx_int_t
ngx_llmd_header_filter(ngx_http_request_t *r)
{
    ngx_uint_t            status;
    ngx_llmd_ctx_t       *ctx;
    ngx_llmd_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_llmd_module);
    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx) {
        /* the decode worker answers after the prefill and the transfer;
         * a streaming answer's header comes with its first token */
        ngx_llmd_pd_release(ctx);
        ngx_llmd_prefill_release(ctx);
    }

    if (ctx && llcf->debug_headers) {
        if (ngx_llmd_debug_headers(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ctx && ctx->retry_after && r == r->main
        && ngx_llmd_retry_after(r, ctx->retry_after) != NGX_OK)
    {
        return NGX_ERROR;
    }

    status = r->err_status;

    /*
     * only nginx's own HTML error pages: never a worker's response, nor a
     * page the configuration chose with error_page
     */
    if (status < NGX_HTTP_BAD_REQUEST
        || !llcf->json_errors
        || r != r->main
        || r->error_page
        || r->headers_out.content_type.len != sizeof("text/html") - 1
        || ngx_strncmp(r->headers_out.content_type.data, "text/html", 9) != 0
        || (ctx == NULL && !ngx_llmd_location_enabled(r)))
    {
        return ngx_http_next_header_filter(r);
    }

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_llmd_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->status = NGX_DECLINED;
        ngx_http_set_ctx(r, ctx, ngx_llmd_module);
    }

    ctx->error_body = ngx_llmd_error_body(r, ctx, status);
    if (ctx->error_body == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = sizeof("application/json") - 1;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;
    r->headers_out.content_length_n = ctx->error_body->last
                                      - ctx->error_body->pos;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_llmd_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t      out, *cl;
    ngx_llmd_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx == NULL || ctx->error_body == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* swallow nginx's HTML page; send ours once */
    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (ctx->error_sent) {
        return NGX_OK;
    }

    ctx->error_sent = 1;

    out.buf = ctx->error_body;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}


ngx_int_t
ngx_llmd_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_llmd_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_llmd_body_filter;

    return NGX_OK;
}
