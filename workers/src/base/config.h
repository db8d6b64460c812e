/*
 * Worker configuration: the command-line flags, parsed and checked.
 */

#ifndef LLMD_CONFIG_H
#define LLMD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_STR_MAX  512

struct worker_config {
    char        listen_host[CONFIG_STR_MAX];
    int         listen_port;
    char        backend[16];
    char        model_path[CONFIG_STR_MAX];
    int         threads;                /* cpu backend; 0: every core */
    char        chat_template[32];      /* "": the model's own */
    char        model_name[128];
    char        role[16];               /* both | prefill | decode */
    char        redis_url[CONFIG_STR_MAX];
    char        redis_prefix[64];       /* fleet-state key prefix */
    char        pool[64];
    char        worker_id[64];          /* "": <hostname>-<port> */
    char        advertise[64];          /* "": the listen address */
    int         heartbeat_ms;
    int         prefix_block;           /* gateway prefix block bytes */
    int         kv_blocks;
    int         block_tokens;
    int         max_batch;
    int         max_batch_tokens;
    char        sim_profile[CONFIG_STR_MAX];
    double      speed;
    uint64_t    seed;
    int         max_model_len;          /* 0: the model's own */
    double      priority_aging;         /* seconds per priority level */
    size_t      max_body_bytes;
    int         device;                 /* cuda backend: GPU ordinal */
    int         sim_check_kv;           /* sim: verify every page it reads */
    /* disaggregated prefill/decode (src/pd/) */
    char        kv_listen_host[CONFIG_STR_MAX];   /* prefill: KV listener */
    int         kv_listen_port;         /* 0: the kernel picks one */
    int         pd_recompute;           /* 1: recompute locally on failure */
    int         pd_timeout_ms;          /* deadline of one transfer */
    int         pd_lease_ms;            /* prefill side: pages held at most */
};

enum config_result {
    CONFIG_OK = 0,
    CONFIG_HELP,        /* --help was asked for: print usage, exit 0 */
    CONFIG_ERROR        /* err holds a one-line reason: exit 2 */
};

void config_defaults(struct worker_config *cfg);
enum config_result config_parse(struct worker_config *cfg, int argc,
    char **argv, char *err, size_t err_len);
extern const char config_usage[];

#endif
