/*
 * The module's variables: where the balancer sent a request and why, the
 * prefill/decode decision, the model, and what admission control did.
 */

#include "ngx_llmd.h"


static ngx_int_t ngx_llmd_variable_text(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, ngx_llmd_ctx_t *ctx, uintptr_t data);
static ngx_int_t ngx_llmd_variable_number(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, ngx_llmd_ctx_t *ctx, uintptr_t data);
static ngx_int_t ngx_llmd_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_llmd_flow_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


enum {
    NGX_LLMD_VAR_PEER = 0,
    NGX_LLMD_VAR_PREFIX_HIT,
    NGX_LLMD_VAR_REASON,
    NGX_LLMD_VAR_PROMPT_BYTES,
    NGX_LLMD_VAR_PREDICTED_TTFT,
    NGX_LLMD_VAR_OBSERVED_TTFT,
    NGX_LLMD_VAR_DECISION_US,
    NGX_LLMD_VAR_PREFILL_PEER,
    NGX_LLMD_VAR_TRANSFER_ID,
    NGX_LLMD_VAR_PD
};

enum {
    NGX_LLMD_VAR_MODEL = 0,
    NGX_LLMD_VAR_PRIORITY,
    NGX_LLMD_VAR_FAIRNESS,
    NGX_LLMD_VAR_QUEUE_MS,
    NGX_LLMD_VAR_ADMISSION
};


static ngx_http_variable_t  ngx_llmd_vars[] = {

    { ngx_string("llmd_peer"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_PEER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_prefix_hit"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_PREFIX_HIT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_pick_reason"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_prompt_bytes"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_PROMPT_BYTES, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_predicted_ttft"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_PREDICTED_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_observed_ttft"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_OBSERVED_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_decision_us"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_DECISION_US, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_prefill_peer"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_PREFILL_PEER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_transfer_id"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_TRANSFER_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_pd"), NULL, ngx_llmd_variable,
      NGX_LLMD_VAR_PD, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_model"), NULL, ngx_llmd_flow_variable,
      NGX_LLMD_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_priority"), NULL, ngx_llmd_flow_variable,
      NGX_LLMD_VAR_PRIORITY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_fairness"), NULL, ngx_llmd_flow_variable,
      NGX_LLMD_VAR_FAIRNESS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_queue_ms"), NULL, ngx_llmd_flow_variable,
      NGX_LLMD_VAR_QUEUE_MS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llmd_admission"), NULL, ngx_llmd_flow_variable,
      NGX_LLMD_VAR_ADMISSION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_llmd_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_int_t        rc;
    ngx_llmd_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_LLMD_VAR_PEER:
    case NGX_LLMD_VAR_REASON:
    case NGX_LLMD_VAR_PREFILL_PEER:
    case NGX_LLMD_VAR_TRANSFER_ID:
    case NGX_LLMD_VAR_PD:
        rc = ngx_llmd_variable_text(r, v, ctx, data);
        break;

    default:
        rc = ngx_llmd_variable_number(r, v, ctx, data);
        break;
    }

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* The variables that name something: NGX_DECLINED when not known (yet). */
static ngx_int_t
ngx_llmd_variable_text(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    ngx_llmd_ctx_t *ctx, uintptr_t data)
{
    switch (data) {

    case NGX_LLMD_VAR_PEER:
        if (ctx->peer.len == 0) {
            return NGX_DECLINED;
        }
        v->data = ctx->peer.data;
        v->len = ctx->peer.len;
        return NGX_OK;

    case NGX_LLMD_VAR_REASON:
        if (ctx->reason == NGX_LLMD_PICK_NONE) {
            return NGX_DECLINED;
        }
        v->data = (u_char *) ngx_llmd_pick_reasons[ctx->reason];
        v->len = ngx_strlen(v->data);
        return NGX_OK;

    case NGX_LLMD_VAR_PD:
        /* only reports: a decision made after the pick would reach no one */
        if (ctx->pd_reason == NULL) {
            return NGX_DECLINED;
        }
        v->data = (u_char *) ctx->pd_reason;
        v->len = ngx_strlen(ctx->pd_reason);
        return NGX_OK;

    default: /* NGX_LLMD_VAR_PREFILL_PEER, NGX_LLMD_VAR_TRANSFER_ID */
        /* evaluated by proxy_set_header before the balancer runs: the
         * prefill/decode decision is made here, once */
        if (ngx_llmd_pd_decide(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        if (!ctx->pd_remote) {
            return NGX_DECLINED;
        }

        if (data == NGX_LLMD_VAR_PREFILL_PEER) {
            v->data = ctx->pd_peer.data;
            v->len = ctx->pd_peer.len;

        } else {
            v->data = ctx->transfer_id.data;
            v->len = ctx->transfer_id.len;
        }
        return NGX_OK;
    }
}


/* The variables that are numbers, printed into the request's pool; only
 * those known are printed (access logs evaluate them on every request). */
static ngx_int_t
ngx_llmd_variable_number(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    ngx_llmd_ctx_t *ctx, uintptr_t data)
{
    u_char  *p;

    switch (data) {
    case NGX_LLMD_VAR_PREFIX_HIT:
    case NGX_LLMD_VAR_PROMPT_BYTES:
        if (!ctx->inspected) {
            return NGX_DECLINED;
        }
        break;
    case NGX_LLMD_VAR_PREDICTED_TTFT:
        if (!ctx->predicted) {
            return NGX_DECLINED;
        }
        break;
    case NGX_LLMD_VAR_OBSERVED_TTFT:
        if (!ctx->observed) {
            return NGX_DECLINED;
        }
        break;
    default: /* NGX_LLMD_VAR_DECISION_US */
        if (ctx->tries == 0) {
            return NGX_DECLINED;
        }
        break;
    }

    p = ngx_pnalloc(r->pool, 2 * NGX_INT64_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    switch (data) {
    case NGX_LLMD_VAR_PREFIX_HIT:
        p = ngx_sprintf(p, "%ui/%uz", ctx->matched, ctx->req.prefix.nkeys);
        break;
    case NGX_LLMD_VAR_PROMPT_BYTES:
        p = ngx_sprintf(p, "%uL", (uint64_t) ctx->req.prefix.total_bytes);
        break;
    case NGX_LLMD_VAR_PREDICTED_TTFT:
        p = ngx_sprintf(p, "%.1f", ctx->predicted_ttft_ms);
        break;
    case NGX_LLMD_VAR_OBSERVED_TTFT:
        p = ngx_sprintf(p, "%.1f", ctx->observed_ttft_ms);
        break;
    default:
        p = ngx_sprintf(p, "%.1f", (double) ctx->decision_ns / 1000.0);
        break;
    }

    v->len = p - v->data;

    return NGX_OK;
}


/* The model asked for, and what admission control made of the request. */
static ngx_int_t
ngx_llmd_flow_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char          *p;
    ngx_llmd_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_llmd_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    switch (data) {

    case NGX_LLMD_VAR_MODEL:
        if (!ctx->inspected || ctx->req.model[0] == '\0') {
            v->not_found = 1;
            return NGX_OK;
        }
        v->data = (u_char *) ctx->req.model;
        v->len = ngx_strlen(ctx->req.model);
        break;

    case NGX_LLMD_VAR_PRIORITY:
        if (ngx_llmd_flow_classify(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }
        v->data = p;
        v->len = ngx_sprintf(p, "%i", ctx->priority) - p;
        break;

    case NGX_LLMD_VAR_FAIRNESS:
        if (ngx_llmd_flow_classify(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
        v->data = ctx->fairness.data;
        v->len = ctx->fairness.len;
        break;

    case NGX_LLMD_VAR_QUEUE_MS:
        if (ctx->admission == NGX_LLMD_ADMIT_NONE) {
            v->not_found = 1;
            return NGX_OK;
        }
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }
        v->data = p;
        v->len = ngx_sprintf(p, "%M", ctx->queue_ms) - p;
        break;

    default: /* NGX_LLMD_VAR_ADMISSION */
        if (ctx->admission == NGX_LLMD_ADMIT_NONE) {
            v->not_found = 1;
            return NGX_OK;
        }
        v->data = (u_char *) ngx_llmd_admissions[ctx->admission];
        v->len = ngx_strlen(v->data);
        break;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


ngx_int_t
ngx_llmd_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_llmd_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


