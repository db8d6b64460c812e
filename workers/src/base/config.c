/*
 * Command-line flags.  Every flag takes "--flag VALUE" or "--flag=VALUE";
 * a bad flag or value stops the worker with one line on stderr.
 */

#include "config.h"

#include "llmd_prefix.h"
#include "llmd_wire.h"
#include "redis_url.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char config_usage[] =
"usage: llmd-worker [options]\n"
"  --listen HOST:PORT       address to serve HTTP on (127.0.0.1:8000)\n"
"  --backend sim|cpu|cuda   model backend (sim)\n"
"  --model PATH             model file, for the real backends\n"
"  --threads N              cpu backend compute threads (every core)\n"
"  --chat-template NAME     chat format when the model's is unknown or absent:\n"
"                           llama3, chatml, llama2, gemma, plain\n"
"  --model-name NAME        served model name (llmd-sim)\n"
"  --role both|prefill|decode  role in a disaggregated fleet (both)\n"
"  --redis URL              publish fleet state to Redis:\n"
"                           redis://[USER:PASSWORD@]HOST:PORT[/DB] or\n"
"                           unix:///PATH/redis.sock[?password=P]\n"
"  --redis-prefix P         Redis key prefix (llmd:)\n"
"  --pool NAME              pool in the fleet state (default)\n"
"  --worker-id ID           id in the fleet state (HOSTNAME-PORT)\n"
"  --advertise HOST:PORT    address gateways connect to (the listen address)\n"
"  --heartbeat-ms N         heartbeat interval; the TTL is 10x (100)\n"
"  --prefix-block BYTES     gateway prefix block, = llmd_prefix_block (256)\n"
"  --kv-blocks N            KV cache blocks (2048)\n"
"  --block-tokens N         tokens per KV block (16)\n"
"  --max-batch N            running requests per step at most (256)\n"
"  --max-batch-tokens N     tokens computed per step at most, the chunked-\n"
"                           prefill budget; at least --max-batch (2048)\n"
"  --max-model-len N        context limit in tokens (the model's own)\n"
"  --sim-profile FILE|NAME  sim latency profile (llama3-8b-h100)\n"
"  --speed X                sim time scale, 0 = no model time (1)\n"
"  --sim-check-kv           sim: before a step, check that every earlier KV\n"
"                           row of its requests holds the sim's bytes\n"
"  --seed N                 default sampling seed (0)\n"
"  --priority-aging SECONDS waiting time worth one priority level (1)\n"
"  --max-body-bytes N       largest request body accepted (1048576)\n"
"  --device N               cuda backend: GPU ordinal (0)\n"
"disaggregated prefill/decode:\n"
"  --kv-listen HOST:PORT    prefill role: KV transfer listener (the listen\n"
"                           host, a free port; advertised in the heartbeat)\n"
"  --pd-failure recompute|fail  decode side, when a transfer fails (recompute)\n"
"  --pd-timeout-ms N        deadline of one KV transfer (10000)\n"
"  --pd-lease-ms N          prefill side: pages held for a decode worker at\n"
"                           most this long (10000)\n"
"  --help                   this text\n"
"model tools: llmd-worker mkmodel|logits|bench --help\n";

void config_defaults(struct worker_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    strcpy(cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8000;
    strcpy(cfg->backend, "sim");
    strcpy(cfg->model_name, "llmd-sim");
    strcpy(cfg->role, "both");
    strcpy(cfg->redis_prefix, LLMD_KEY_PREFIX_DEFAULT);
    strcpy(cfg->pool, LLMD_KEY_POOL_DEFAULT);
    cfg->heartbeat_ms = 100;
    cfg->prefix_block = LLMD_PREFIX_BLOCK_DEFAULT;
    cfg->kv_blocks = 2048;
    cfg->block_tokens = 16;
    cfg->max_batch = 256;
    cfg->max_batch_tokens = 2048;
    strcpy(cfg->sim_profile, "llama3-8b-h100");
    cfg->speed = 1.0;
    cfg->priority_aging = 1.0;
    cfg->max_body_bytes = 1 << 20;
    cfg->pd_recompute = 1;
    cfg->pd_timeout_ms = 10000;
    cfg->pd_lease_ms = 10000;
}

static enum config_result fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return CONFIG_ERROR;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int copy_str(char *dst, size_t size, const char *src)
{
    if (strlen(src) >= size || src[0] == '\0')
        return -1;
    strcpy(dst, src);
    return 0;
}

static int parse_listen(struct worker_config *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    long port;
    size_t hlen;

    if (colon == NULL || parse_long(colon + 1, 0, 65535, &port) != 0)
        return -1;
    hlen = (size_t) (colon - s);
    if (hlen == 0 || hlen >= sizeof(cfg->listen_host))
        return -1;
    /* [::1]:8000 */
    if (s[0] == '[' && hlen >= 2 && s[hlen - 1] == ']') {
        s++;
        hlen -= 2;
    }
    memcpy(cfg->listen_host, s, hlen);
    cfg->listen_host[hlen] = '\0';
    cfg->listen_port = (int) port;
    return 0;
}

enum {
    OPT_LISTEN = 256, OPT_BACKEND, OPT_MODEL, OPT_MODEL_NAME, OPT_ROLE,
    OPT_REDIS, OPT_KV_BLOCKS, OPT_BLOCK_TOKENS, OPT_MAX_BATCH,
    OPT_MAX_BATCH_TOKENS, OPT_MAX_MODEL_LEN, OPT_SIM_PROFILE, OPT_SPEED,
    OPT_SEED, OPT_AGING, OPT_MAX_BODY, OPT_REDIS_PREFIX, OPT_POOL,
    OPT_WORKER_ID, OPT_ADVERTISE, OPT_HEARTBEAT_MS, OPT_PREFIX_BLOCK, OPT_HELP,
    OPT_DEVICE, OPT_KV_LISTEN, OPT_PD_FAILURE, OPT_PD_TIMEOUT, OPT_PD_LEASE,
    OPT_SIM_CHECK_KV
};

/* the real backends' flags */
enum { OPT_THREADS = 512, OPT_CHAT_TEMPLATE };

static const struct option options[] = {
    { "listen",           required_argument, NULL, OPT_LISTEN },
    { "backend",          required_argument, NULL, OPT_BACKEND },
    { "model",            required_argument, NULL, OPT_MODEL },
    { "threads",          required_argument, NULL, OPT_THREADS },
    { "chat-template",    required_argument, NULL, OPT_CHAT_TEMPLATE },
    { "model-name",       required_argument, NULL, OPT_MODEL_NAME },
    { "role",             required_argument, NULL, OPT_ROLE },
    { "redis",            required_argument, NULL, OPT_REDIS },
    { "kv-blocks",        required_argument, NULL, OPT_KV_BLOCKS },
    { "block-tokens",     required_argument, NULL, OPT_BLOCK_TOKENS },
    { "max-batch",        required_argument, NULL, OPT_MAX_BATCH },
    { "max-batch-tokens", required_argument, NULL, OPT_MAX_BATCH_TOKENS },
    { "max-model-len",    required_argument, NULL, OPT_MAX_MODEL_LEN },
    { "sim-profile",      required_argument, NULL, OPT_SIM_PROFILE },
    { "speed",            required_argument, NULL, OPT_SPEED },
    { "seed",             required_argument, NULL, OPT_SEED },
    { "priority-aging",   required_argument, NULL, OPT_AGING },
    { "max-body-bytes",   required_argument, NULL, OPT_MAX_BODY },
    { "redis-prefix",     required_argument, NULL, OPT_REDIS_PREFIX },
    { "pool",             required_argument, NULL, OPT_POOL },
    { "worker-id",        required_argument, NULL, OPT_WORKER_ID },
    { "advertise",        required_argument, NULL, OPT_ADVERTISE },
    { "heartbeat-ms",     required_argument, NULL, OPT_HEARTBEAT_MS },
    { "prefix-block",     required_argument, NULL, OPT_PREFIX_BLOCK },
    { "device",           required_argument, NULL, OPT_DEVICE },
    { "sim-check-kv",     no_argument,       NULL, OPT_SIM_CHECK_KV },
    { "kv-listen",        required_argument, NULL, OPT_KV_LISTEN },
    { "pd-failure",       required_argument, NULL, OPT_PD_FAILURE },
    { "pd-timeout-ms",    required_argument, NULL, OPT_PD_TIMEOUT },
    { "pd-lease-ms",      required_argument, NULL, OPT_PD_LEASE },
    { "help",             no_argument,       NULL, OPT_HELP },
    { NULL, 0, NULL, 0 }
};

/* the options that are one int in a range: a row each, not a case each */
static const struct int_option {
    int         opt;
    long        min;
    long        max;
    size_t      offset;
} int_options[] = {
    { OPT_THREADS,          1, 1024,        offsetof(struct worker_config, threads) },
    { OPT_HEARTBEAT_MS,     10, 60000,      offsetof(struct worker_config, heartbeat_ms) },
    { OPT_PREFIX_BLOCK,     LLMD_PREFIX_BLOCK_MIN, LLMD_PREFIX_BLOCK_MAX,
                                            offsetof(struct worker_config, prefix_block) },
    { OPT_KV_BLOCKS,        1, 1 << 24,     offsetof(struct worker_config, kv_blocks) },
    { OPT_BLOCK_TOKENS,     1, 4096,        offsetof(struct worker_config, block_tokens) },
    { OPT_MAX_BATCH,        1, 65536,       offsetof(struct worker_config, max_batch) },
    { OPT_MAX_BATCH_TOKENS, 1, 1 << 20,     offsetof(struct worker_config, max_batch_tokens) },
    { OPT_MAX_MODEL_LEN,    1, 1 << 24,     offsetof(struct worker_config, max_model_len) },
    { OPT_DEVICE,           0, 1023,        offsetof(struct worker_config, device) },
    { OPT_PD_TIMEOUT,       10, 3600000,    offsetof(struct worker_config, pd_timeout_ms) },
    { OPT_PD_LEASE,         10, 3600000,    offsetof(struct worker_config, pd_lease_ms) },
};

static const struct int_option *int_option(int opt)
{
    for (size_t i = 0; i < sizeof(int_options) / sizeof(int_options[0]); i++)
        if (int_options[i].opt == opt)
            return &int_options[i];
    return NULL;
}

/* v must be one of the NULL-ended names; copies it to dst */
static enum config_result one_of(char *dst, const char *const *names,
    const char *name, const char *v, const char *expected, char *err, size_t len)
{
    for (; *names; names++) {
        if (strcmp(v, *names) == 0) {
            strcpy(dst, v);
            return CONFIG_OK;
        }
    }
    return fail(err, len, "--%s: expected %s, got '%s'", name, expected, v);
}

/* The options that choose a name, a path or an address. */
static enum config_result apply_text(struct worker_config *cfg, int opt,
    const char *name, const char *v, char *err, size_t len)
{
    static const char *const backends[] = { "sim", "cpu", "cuda", NULL };
    static const char *const roles[] = { "both", "prefill", "decode", NULL };
    static const char *const templates[] = { "llama3", "chatml", "llama2",
                                              "gemma", "plain", NULL };
    long n;

    switch (opt) {
    case OPT_LISTEN:
        if (parse_listen(cfg, v) != 0)
            return fail(err, len, "--listen: expected HOST:PORT, got '%s'", v);
        return CONFIG_OK;
    case OPT_BACKEND:
        return one_of(cfg->backend, backends, name, v, "sim, cpu or cuda", err, len);
    case OPT_ROLE:
        return one_of(cfg->role, roles, name, v, "both, prefill or decode", err, len);
    case OPT_CHAT_TEMPLATE:
        return one_of(cfg->chat_template, templates, name, v,
                      "llama3, chatml, llama2, gemma or plain", err, len);
    case OPT_MODEL:
        if (copy_str(cfg->model_path, sizeof(cfg->model_path), v) != 0)
            return fail(err, len, "--model: empty or too long");
        return CONFIG_OK;
    case OPT_MODEL_NAME:
        if (copy_str(cfg->model_name, sizeof(cfg->model_name), v) != 0)
            return fail(err, len, "--model-name: empty or longer than %zu bytes",
                        sizeof(cfg->model_name) - 1);
        return CONFIG_OK;
    case OPT_REDIS: {
        struct redis_url url;
        char why[128];
        if (copy_str(cfg->redis_url, sizeof(cfg->redis_url), v) != 0)
            return fail(err, len, "--redis: empty or too long");
        if (redis_url_parse(v, &url, why, sizeof(why)) != 0)
            return fail(err, len, "--redis: %s, got '%s'", why, v);
        return CONFIG_OK;
    }
    case OPT_REDIS_PREFIX:
        if (strlen(v) >= sizeof(cfg->redis_prefix) || strpbrk(v, " \r\n"))
            return fail(err, len, "--redis-prefix: at most %zu bytes, no spaces",
                        sizeof(cfg->redis_prefix) - 1);
        strcpy(cfg->redis_prefix, v);
        return CONFIG_OK;
    case OPT_POOL:
    case OPT_WORKER_ID: {
        char *dst = opt == OPT_POOL ? cfg->pool : cfg->worker_id;
        if (copy_str(dst, 64, v) != 0 || strpbrk(v, " :\r\n"))
            return fail(err, len, "--%s: 1 to 63 bytes without spaces or ':', "
                        "got '%s'", name, v);
        return CONFIG_OK;
    }
    case OPT_ADVERTISE: {
        const char *colon = strrchr(v, ':');
        if (copy_str(cfg->advertise, sizeof(cfg->advertise), v) != 0
            || colon == NULL || colon == v
            || parse_long(colon + 1, 1, 65535, &n) != 0)
            return fail(err, len, "--advertise: expected HOST:PORT (at most %zu "
                        "bytes), got '%s'", sizeof(cfg->advertise) - 1, v);
        return CONFIG_OK;
    }
    case OPT_SIM_PROFILE:
        if (copy_str(cfg->sim_profile, sizeof(cfg->sim_profile), v) != 0)
            return fail(err, len, "--sim-profile: empty or too long");
        return CONFIG_OK;
    case OPT_KV_LISTEN: {
        struct worker_config tmp;
        if (parse_listen(&tmp, v) != 0)
            return fail(err, len, "--kv-listen: expected HOST:PORT, got '%s'", v);
        strcpy(cfg->kv_listen_host, tmp.listen_host);
        cfg->kv_listen_port = tmp.listen_port;
        return CONFIG_OK;
    }
    }
    return fail(err, len, "unknown option");
}

static enum config_result apply(struct worker_config *cfg, int opt,
    const char *name, const char *v, char *err, size_t len)
{
    const struct int_option *io = int_option(opt);
    long n;
    char *end;
    double d;

    if (io != NULL) {
        if (parse_long(v, io->min, io->max, &n) != 0)
            return fail(err, len, "--%s: expected %ld..%ld, got '%s'", name,
                        io->min, io->max, v);
        *(int *) ((char *) cfg + io->offset) = (int) n;
        return CONFIG_OK;
    }

    switch (opt) {
    case OPT_SEED:
        if (parse_long(v, 0, LONG_MAX, &n) != 0)
            return fail(err, len, "--seed: expected a non-negative integer, got '%s'", v);
        cfg->seed = (uint64_t) n;
        return CONFIG_OK;
    case OPT_MAX_BODY:
        if (parse_long(v, 1024, 1L << 30, &n) != 0)
            return fail(err, len, "--max-body-bytes: expected 1024..1073741824, got '%s'", v);
        cfg->max_body_bytes = (size_t) n;
        return CONFIG_OK;
    case OPT_SIM_CHECK_KV:
        cfg->sim_check_kv = 1;
        return CONFIG_OK;
    case OPT_PD_FAILURE:
        if (strcmp(v, "recompute") != 0 && strcmp(v, "fail") != 0)
            return fail(err, len, "--pd-failure: expected recompute or fail, "
                        "got '%s'", v);
        cfg->pd_recompute = strcmp(v, "recompute") == 0;
        return CONFIG_OK;
    case OPT_SPEED:
    case OPT_AGING:
        errno = 0;
        d = strtod(v, &end);
        if (errno || end == v || *end || !(d >= 0 && d <= 1e6)
            || (opt == OPT_AGING && d == 0))
            return fail(err, len, "--%s: expected a %s number, got '%s'", name,
                        opt == OPT_SPEED ? "non-negative" : "positive", v);
        if (opt == OPT_SPEED)
            cfg->speed = d;
        else
            cfg->priority_aging = d;
        return CONFIG_OK;
    }
    return apply_text(cfg, opt, name, v, err, len);
}

enum config_result config_parse(struct worker_config *cfg, int argc,
    char **argv, char *err, size_t len)
{
    int opt, idx;

    config_defaults(cfg);
    opterr = 0;
    optind = 1;
    for (;;) {
        idx = -1;
        opt = getopt_long(argc, argv, "", options, &idx);
        if (opt == -1)
            break;
        if (opt == '?' || opt == ':') {
            const char *bad = argv[optind - 1];
            return fail(err, len, "unknown option or missing value: '%s' "
                        "(see --help)", bad ? bad : "?");
        }
        if (opt == OPT_HELP)
            return CONFIG_HELP;
        if (apply(cfg, opt, options[idx].name, optarg, err, len) != CONFIG_OK)
            return CONFIG_ERROR;
    }
    if (optind < argc)
        return fail(err, len, "unexpected argument '%s' (see --help)", argv[optind]);
    if (cfg->max_batch_tokens < cfg->max_batch)
        return fail(err, len, "--max-batch-tokens (%d) must be at least "
                    "--max-batch (%d)", cfg->max_batch_tokens, cfg->max_batch);
#ifndef LLMD_HAVE_CUDA
    if (strcmp(cfg->backend, "cuda") == 0)
        return fail(err, len, "--backend cuda is not available in this build "
                    "(built without nvcc; sim, cpu)");
#endif
    if (cfg->kv_listen_host[0] == '\0')
        strcpy(cfg->kv_listen_host, cfg->listen_host);
    if (strcmp(cfg->backend, "cpu") == 0 && cfg->model_path[0] == '\0')
        return fail(err, len, "--backend cpu needs --model FILE.gguf");
    return CONFIG_OK;
}
