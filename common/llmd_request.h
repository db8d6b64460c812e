/*
 * Request inspection: a streaming pass over an OpenAI-style JSON body that
 * pulls out the fields routing needs and feeds the canonical prompt bytes
 * (llmd_canon.h) to a prefix hasher, without building a DOM or copying
 * the body; and, when asked, to a sink of the caller's too.
 *
 * Plain C; memory comes from the caller's allocator (nginx passes its
 * request pool, workers pass libc).
 */

#ifndef LLMD_REQUEST_H
#define LLMD_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "llmd_canon.h"
#include "llmd_prefix.h"

#define LLMD_MODEL_MAX      128
#define LLMD_USER_MAX       128
#define LLMD_ERROR_MAX      256
#define LLMD_DEPTH_MAX      64

typedef enum {
    LLMD_REQ_OK = 0,
    LLMD_REQ_INVALID,           /* bad JSON or a field of the wrong type */
    LLMD_REQ_NOMEM
} llmd_req_status_t;

typedef struct {
    void   *(*malloc)(void *ctx, size_t size);
    void   *(*realloc)(void *ctx, void *ptr, size_t size);
    void    (*free)(void *ctx, void *ptr);
    void     *ctx;
} llmd_allocator_t;

typedef struct {
    /* results */
    char                  model[LLMD_MODEL_MAX];
    char                  user[LLMD_USER_MAX];
    int64_t               max_tokens;       /* -1: absent */
    int                   stream;           /* -1: absent, else 0 / 1 */
    unsigned              has_prompt:1;
    unsigned              has_messages:1;
    uint32_t              nmessages;
    llmd_prefix_hasher_t  prefix;

    /* why the body was rejected, and which field ("" for syntax errors) */
    llmd_req_status_t     status;
    char                  error[LLMD_ERROR_MAX];
    const char           *error_param;

    /* parser state */
    void                 *parser;
    llmd_allocator_t      alloc;
    int                   depth;
    unsigned char         frame[LLMD_DEPTH_MAX];
    unsigned char         key[LLMD_DEPTH_MAX];
    char                  role[LLMD_ROLE_MAX];
    size_t                role_len;
    unsigned              seen_root:1;
    llmd_canon_sink_t     canon;            /* to prefix, then to out */
    const llmd_canon_sink_t  *out;
} llmd_request_t;

/* block/keys as for llmd_prefix_init(). */
llmd_req_status_t llmd_request_init(llmd_request_t *rq,
    const llmd_allocator_t *alloc, size_t block_size, size_t max_blocks,
    unsigned char *block, uint64_t *keys);

/* The canonical bytes go to out as well (after init, before feeding). */
void llmd_request_set_sink(llmd_request_t *rq, const llmd_canon_sink_t *out);

/* Feed the next piece of the body; pieces may split anything anywhere. */
llmd_req_status_t llmd_request_feed(llmd_request_t *rq, const void *data,
    size_t len);

/* End of body: reports a truncated document. */
llmd_req_status_t llmd_request_finish(llmd_request_t *rq);

/* Frees the parser (safe to call twice). */
void llmd_request_cleanup(llmd_request_t *rq);

/* Whole-buffer helper for workers and tests. */
llmd_req_status_t llmd_request_inspect(llmd_request_t *rq,
    const llmd_allocator_t *alloc, const void *body, size_t len,
    size_t block_size, size_t max_blocks, unsigned char *block,
    uint64_t *keys);

/* A libc allocator for callers outside nginx. */
extern const llmd_allocator_t  llmd_libc_allocator;

#endif /* LLMD_REQUEST_H */
