/*
 * llmd-worker: an OpenAI-compatible inference worker.
 *
 *   flags -> engine thread (scheduler, KV cache, backend) -> HTTP loop
 */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "engine/engine.h"
#include "server/http_server.h"
#include "base/metrics.h"
#include "server/chat_prompt.h"
#include "pd/pd_decode.h"
#include "pd/pd_prefill.h"

/* execs llmd-model-tool from the directory of this executable */
static int run_model_tool(char **argv)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
    char *slash;

    if (n <= 0) {
        fprintf(stderr, "llmd-worker: cannot find my own path: %s\n", strerror(errno));
        return 2;
    }
    path[n] = '\0';
    slash = strrchr(path, '/');
    if (slash == NULL || (size_t)(slash - path) + sizeof("/llmd-model-tool") > sizeof(path))
        return 2;
    strcpy(slash, "/llmd-model-tool");
    argv[0] = path;
    execv(path, argv);
    fprintf(stderr, "llmd-worker %s: cannot run %s: %s\n", argv[1], path, strerror(errno));
    return 2;
}

int main(int argc, char **argv)
{
    static struct worker_config cfg;
    static struct worker_metrics metrics;
    static struct engine engine;
    struct http_server *srv;
    char err[512];
    int port;

    /* model tools (a generated test model, logits, timings) live in their
     * own binary next to this one; the worker links none of them */
    if (argc > 1 && (strcmp(argv[1], "mkmodel") == 0
                     || strcmp(argv[1], "logits") == 0
                     || strcmp(argv[1], "bench") == 0))
        return run_model_tool(argv);

    switch (config_parse(&cfg, argc, argv, err, sizeof(err))) {
    case CONFIG_HELP:
        fputs(config_usage, stdout);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "llmd-worker: %s\n", err);
        return 2;
    case CONFIG_OK:
        break;
    }

    if (engine_init(&engine, &cfg, &metrics, err, sizeof(err)) != 0) {
        fprintf(stderr, "llmd-worker: %s\n", err);
        return 2;
    }
    /* disaggregation: prefill workers listen for decode workers; the
     * others connect to the prefill worker a gateway names */
#ifndef LLMD_HAVE_CUDA
    if (engine.kv.pool_release != NULL
        && (strcmp(cfg.role, "both") != 0 || cfg.kv_listen_port != 0)) {
        /* pages in GPU memory need the CUDA IPC or NCCL transport */
        fprintf(stderr, "llmd-worker: --role %s: this backend keeps its KV "
                "pages in device memory, and this build has no GPU "
                "transport (built without CUDA)\n", cfg.role);
        engine_destroy(&engine);
        return 2;
    }
#endif
    if (strcmp(cfg.role, "prefill") == 0 || cfg.kv_listen_port != 0) {
        if (pd_server_start(&engine.pd_server, &engine.pd_port, &cfg, err,
                            sizeof(err)) != 0) {
            fprintf(stderr, "llmd-worker: %s\n", err);
            engine_destroy(&engine);
            return 2;
        }
        fprintf(stderr, "llmd-worker: KV transfer listener on %s\n",
                pd_server_addr(engine.pd_server));
    }
    if (strcmp(cfg.role, "prefill") != 0)
        engine.pd_client = pd_client_new(&engine.pd_port, &cfg);
    if (engine.backend.vocab != NULL) {
        /* a real model: its tokenizer and chat format shape the prompts */
        static struct model_prompt prompt;
        model_prompt_init(&prompt, engine.backend.vocab,
                          engine.backend.info.vocab_size, cfg.chat_template);
        api_use_model_prompt(&prompt);
    }
    srv = http_server_new(&cfg, &engine, &metrics, err, sizeof(err));
    if (srv == NULL) {
        fprintf(stderr, "llmd-worker: %s\n", err);
        engine_destroy(&engine);
        return 1;
    }
    if (engine_start(&engine, http_server_notify, srv) != 0) {
        fprintf(stderr, "llmd-worker: cannot start the engine thread\n");
        http_server_free(srv);
        engine_destroy(&engine);
        return 1;
    }
    port = http_server_port(srv);
    fprintf(stderr, "llmd-worker: listening on %s:%d (backend %s, model %s, "
            "context %d, %d KV blocks of %d tokens)\n", cfg.listen_host, port,
            cfg.backend, cfg.model_name, engine.max_model_len, cfg.kv_blocks,
            cfg.block_tokens);

    http_server_run(srv);
    engine_stop(&engine);
    http_server_free(srv);
    engine_destroy(&engine);
    return 0;
}
