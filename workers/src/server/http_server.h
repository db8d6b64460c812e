/*
 * HTTP side of the worker: libevent's evhttp on the main thread.
 *
 * It parses requests, hands them to the engine, and turns the engine's
 * events into responses and SSE streams.  It never blocks on model work.
 */

#ifndef LLMD_HTTP_SERVER_H
#define LLMD_HTTP_SERVER_H

#include "base/config.h"
#include "engine/engine.h"
#include "base/metrics.h"

struct http_server;

/* Binds the listen address; NULL with a one-line reason in err. */
struct http_server *http_server_new(const struct worker_config *cfg,
    struct engine *engine, struct worker_metrics *metrics,
    char *err, int err_len);

/* The port actually bound (useful with --listen HOST:0). */
int http_server_port(const struct http_server *srv);

/* The callback the engine calls when it has events (any thread). */
void http_server_notify(void *srv);

/* Runs until SIGINT or SIGTERM. */
int http_server_run(struct http_server *srv);
void http_server_free(struct http_server *srv);

#endif
