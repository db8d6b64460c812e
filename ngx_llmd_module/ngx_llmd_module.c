/*
 * ngx_llmd_module: directives and configuration.
 *
 *   upstream llm {
 *       llmd;
 *       llmd_zone llm 16m;
 *       server 127.0.0.1:8001;
 *   }
 */

#include "ngx_llmd.h"


static void *ngx_llmd_create_main_conf(ngx_conf_t *cf);
static void *ngx_llmd_create_srv_conf(ngx_conf_t *cf);
static void *ngx_llmd_create_loc_conf(ngx_conf_t *cf);
static char *ngx_llmd_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_llmd_postconfiguration(ngx_conf_t *cf);

static char *ngx_llmd(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_llmd_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_llmd_weight(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_llmd_balance_threshold(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_llmd_slo(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);


static ngx_conf_enum_t  ngx_llmd_policies[] = {
    { ngx_string("llmd"), NGX_LLMD_POLICY_LLMD },
    { ngx_string("llm-d"), NGX_LLMD_POLICY_LLM_D },
    { ngx_string("dynamo"), NGX_LLMD_POLICY_DYNAMO },
    { ngx_null_string, 0 }
};
static ngx_int_t ngx_llmd_init_process(ngx_cycle_t *cycle);
static void ngx_llmd_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_llmd_block_bounds = {
    ngx_conf_check_num_bounds, LLMD_PREFIX_BLOCK_MIN, LLMD_PREFIX_BLOCK_MAX
};

static ngx_conf_num_bounds_t  ngx_llmd_max_blocks_bounds = {
    ngx_conf_check_num_bounds, 1, 65536
};


static ngx_command_t  ngx_llmd_commands[] = {

    { ngx_string("llmd"),
      NGX_HTTP_UPS_CONF|NGX_CONF_NOARGS,
      ngx_llmd,
      0,
      0,
      NULL },

    { ngx_string("llmd_zone"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE12,
      ngx_llmd_zone,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_prefix_block"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, block_size),
      &ngx_llmd_block_bounds },

    { ngx_string("llmd_prefix_max_blocks"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, max_blocks),
      &ngx_llmd_max_blocks_bounds },

    { ngx_string("llmd_prefix_weight"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_llmd_weight,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, prefix_weight),
      NULL },

    { ngx_string("llmd_load_weight"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_llmd_weight,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, load_weight),
      NULL },

    { ngx_string("llmd_balance_threshold"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE2,
      ngx_llmd_balance_threshold,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_default_max_tokens"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, default_max_tokens),
      NULL },

    { ngx_string("llmd_redis"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_llmd_redis_directive,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_policy"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, policy),
      &ngx_llmd_policies },

    { ngx_string("llmd_predict"),
      NGX_HTTP_UPS_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, predict),
      NULL },

    { ngx_string("llmd_stickiness"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_llmd_srv_conf_t, stickiness),
      NULL },

    { ngx_string("llmd_slo"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_llmd_slo,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_pd"),
      NGX_HTTP_UPS_CONF|NGX_CONF_TAKE12,
      ngx_llmd_pd_directive,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_model"),
      NGX_HTTP_UPS_CONF|NGX_CONF_2MORE,
      ngx_llmd_model_directive,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_queue"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_llmd_queue_directive,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_saturation"),
      NGX_HTTP_UPS_CONF|NGX_CONF_1MORE,
      ngx_llmd_saturation_directive,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llmd_models"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_llmd_models_directive,
      0,
      0,
      NULL },

    { ngx_string("llmd_priority"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_llmd_loc_conf_t, priority),
      NULL },

    { ngx_string("llmd_fairness"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_llmd_loc_conf_t, fairness),
      NULL },

    { ngx_string("llmd_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_llmd_status_directive,
      0,
      0,
      NULL },

    { ngx_string("llmd_inspect"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_llmd_loc_conf_t, inspect),
      NULL },

    { ngx_string("llmd_debug_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_llmd_loc_conf_t, debug_headers),
      NULL },

    { ngx_string("llmd_json_errors"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_llmd_loc_conf_t, json_errors),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_llmd_module_ctx = {
    ngx_llmd_add_variables,                /* preconfiguration */
    ngx_llmd_postconfiguration,            /* postconfiguration */

    ngx_llmd_create_main_conf,             /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_llmd_create_srv_conf,              /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_llmd_create_loc_conf,              /* create location configuration */
    ngx_llmd_merge_loc_conf                /* merge location configuration */
};


ngx_module_t  ngx_llmd_module = {
    NGX_MODULE_V1,
    &ngx_llmd_module_ctx,                  /* module context */
    ngx_llmd_commands,                     /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_llmd_init_process,                 /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_llmd_exit_process,                 /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_llmd_create_main_conf(ngx_conf_t *cf)
{
    ngx_llmd_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_llmd_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->upstreams, cf->pool, 4,
                       sizeof(ngx_llmd_srv_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


static void *
ngx_llmd_create_srv_conf(ngx_conf_t *cf)
{
    ngx_llmd_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_llmd_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->shm_zone = NULL;
     *     conf->sh = NULL;
     *     conf->slots = { NULL, NULL };
     */

    conf->enabled = NGX_CONF_UNSET;
    conf->block_size = NGX_CONF_UNSET_SIZE;
    conf->max_blocks = NGX_CONF_UNSET_UINT;
    conf->prefix_weight = NGX_CONF_UNSET;
    conf->load_weight = NGX_CONF_UNSET;
    conf->balance_abs = NGX_CONF_UNSET_UINT;
    conf->balance_rel = NGX_CONF_UNSET;
    conf->default_max_tokens = NGX_CONF_UNSET_UINT;
    conf->policy = NGX_CONF_UNSET_UINT;
    conf->predict = NGX_CONF_UNSET;
    conf->stickiness = NGX_CONF_UNSET_MSEC;
    conf->slo_ttft = NGX_CONF_UNSET_MSEC;
    conf->slo_itl = NGX_CONF_UNSET_MSEC;
    conf->pd = NGX_CONF_UNSET;
    conf->pd_threshold = NGX_CONF_UNSET_UINT;
    conf->pd_max_queue = NGX_CONF_UNSET_UINT;
    conf->flow = NGX_CONF_UNSET;
    conf->sat_inflight = NGX_CONF_UNSET_UINT;
    conf->sat_kv = NGX_CONF_UNSET_UINT;

    return conf;
}


static void *
ngx_llmd_create_loc_conf(ngx_conf_t *cf)
{
    ngx_llmd_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_llmd_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->inspect = NGX_CONF_UNSET;
    conf->debug_headers = NGX_CONF_UNSET;
    conf->json_errors = NGX_CONF_UNSET;
    conf->priority = NGX_CONF_UNSET_PTR;
    conf->fairness = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_llmd_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_llmd_loc_conf_t *prev = parent;
    ngx_llmd_loc_conf_t *conf = child;

    /* inspect stays unset when never given: that means "auto" */
    if (conf->inspect == NGX_CONF_UNSET) {
        conf->inspect = prev->inspect;
    }

    ngx_conf_merge_value(conf->debug_headers, prev->debug_headers, 0);
    ngx_conf_merge_value(conf->json_errors, prev->json_errors, 1);
    ngx_conf_merge_ptr_value(conf->priority, prev->priority, NULL);
    ngx_conf_merge_ptr_value(conf->fairness, prev->fairness, NULL);

    return NGX_CONF_OK;
}


static char *
ngx_llmd(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t           *lcf;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);
    lcf = ngx_http_conf_get_module_srv_conf(cf, ngx_llmd_module);

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "load balancing method redefined");
    }

    lcf->enabled = 1;
    uscf->peer.init_upstream = ngx_llmd_init_upstream;

    uscf->flags = NGX_HTTP_UPSTREAM_CREATE
                  |NGX_HTTP_UPSTREAM_WEIGHT
                  |NGX_HTTP_UPSTREAM_MAX_CONNS
                  |NGX_HTTP_UPSTREAM_MAX_FAILS
                  |NGX_HTTP_UPSTREAM_FAIL_TIMEOUT
                  |NGX_HTTP_UPSTREAM_DOWN
                  |NGX_HTTP_UPSTREAM_BACKUP;

    return NGX_CONF_OK;
}


static char *
ngx_llmd_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ssize_t     size;
    ngx_str_t  *value;

    if (lcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = NGX_LLMD_ZONE_DEFAULT_SIZE;

    if (cf->args->nelts == 3) {
        size = ngx_parse_size(&value[2]);

        if (size == NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid zone size \"%V\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        if (size < NGX_LLMD_ZONE_MIN_SIZE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "zone \"%V\" is too small, at least %uzk",
                               &value[1], (size_t) NGX_LLMD_ZONE_MIN_SIZE >> 10);
            return NGX_CONF_ERROR;
        }
    }

    lcf->shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                          &ngx_llmd_module);
    if (lcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (lcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llmd_zone \"%V\" is already used by another "
                           "upstream", &value[1]);
        return NGX_CONF_ERROR;
    }

    lcf->shm_zone->init = ngx_llmd_init_zone;
    lcf->shm_zone->data = lcf;

    return NGX_CONF_OK;
}


/* A non-negative decimal with up to three fractional digits. */
static ngx_int_t
ngx_llmd_parse_fixed(ngx_str_t *s)
{
    return ngx_atofp(s->data, s->len, 3);
}


static char *
ngx_llmd_weight(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    ngx_int_t  *field, w;
    ngx_str_t  *value;

    field = (ngx_int_t *) (p + cmd->offset);
    if (*field != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    w = ngx_llmd_parse_fixed(&value[1]);

    if (w == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid weight \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    *field = w;
    return NGX_CONF_OK;
}


static char *
ngx_llmd_balance_threshold(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (lcf->balance_abs != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid absolute threshold \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }
    lcf->balance_abs = n;

    n = ngx_llmd_parse_fixed(&value[2]);
    if (n == NGX_ERROR || n < NGX_LLMD_WEIGHT_SCALE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid relative threshold \"%V\", "
                           "must be at least 1.0", &value[2]);
        return NGX_CONF_ERROR;
    }
    lcf->balance_rel = n;

    return NGX_CONF_OK;
}


/* llmd_slo ttft=500ms itl=50ms; */
static char *
ngx_llmd_slo(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_llmd_srv_conf_t  *lcf = conf;

    ngx_str_t   *value, s;
    ngx_uint_t   i;
    ngx_msec_t  *field;

    if (lcf->slo_ttft != NGX_CONF_UNSET_MSEC
        || lcf->slo_itl != NGX_CONF_UNSET_MSEC)
    {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttft=", 5) == 0) {
            field = &lcf->slo_ttft;
        } else if (ngx_strncmp(value[i].data, "itl=", 4) == 0) {
            field = &lcf->slo_itl;
        } else {
            goto invalid;
        }

        s.data = (u_char *) ngx_strlchr(value[i].data,
                                        value[i].data + value[i].len, '=') + 1;
        s.len = value[i].data + value[i].len - s.data;

        *field = ngx_parse_time(&s, 0);
        if (*field == (ngx_msec_t) NGX_ERROR) {
            goto invalid;
        }
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_llmd_init_process(ngx_cycle_t *cycle)
{
    ngx_llmd_flow_init_process(cycle);

    return ngx_llmd_redis_init_process(cycle);
}


static void
ngx_llmd_exit_process(ngx_cycle_t *cycle)
{
    ngx_llmd_redis_exit_process(cycle);
}


static ngx_int_t
ngx_llmd_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                  i;
    ngx_http_handler_pt        *h;
    ngx_llmd_srv_conf_t       **ups;
    ngx_llmd_main_conf_t       *lmcf;
    ngx_http_core_main_conf_t  *cmcf;

    /* llmd_pd's and llmd_queue's defaults and checks need the whole
     * upstream block */
    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_llmd_module);
    ups = lmcf->upstreams.elts;

    for (i = 0; i < lmcf->upstreams.nelts; i++) {
        if (ngx_llmd_pd_init_upstream(cf, ups[i]) != NGX_OK
            || ngx_llmd_flow_init_upstream(cf, ups[i]) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* the body must be read and inspected before proxy picks a peer, also
     * with proxy_request_buffering off: the same slot mirror uses */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_llmd_precontent_handler;

    return ngx_llmd_filter_init(cf);
}
