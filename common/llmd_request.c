/*
 * Streaming request inspection on yajl's event parser (see llmd_request.h).
 *
 * A small stack of frames says where the parser is (root object, prompt
 * array, a message, a content part, or something we skip) and, for
 * objects, which key the next value belongs to.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "llmd_request.h"


enum {
    F_SKIP = 0,         /* a container we do not look inside */
    F_ROOT,
    F_PROMPT,           /* prompt: [...] */
    F_PROMPT_TOKENS,    /* prompt: [[1, 2], ...] */
    F_MESSAGES,
    F_MESSAGE,
    F_PARTS,            /* content: [...] */
    F_PART
};

enum {
    K_OTHER = 0,
    K_MODEL,
    K_PROMPT,
    K_MESSAGES,
    K_MAX_TOKENS,
    K_STREAM,
    K_USER,
    K_ROLE,
    K_CONTENT,
    K_TEXT
};

typedef enum {
    V_NULL, V_BOOL, V_INT, V_DOUBLE, V_STRING, V_MAP, V_ARRAY
} value_type_t;


static void *
libc_malloc(void *ctx, size_t size)
{
    (void) ctx;
    return malloc(size);
}


static void *
libc_realloc(void *ctx, void *ptr, size_t size)
{
    (void) ctx;
    return realloc(ptr, size);
}


static void
libc_free(void *ctx, void *ptr)
{
    (void) ctx;
    free(ptr);
}


const llmd_allocator_t  llmd_libc_allocator = {
    libc_malloc, libc_realloc, libc_free, NULL
};


static int
fail(llmd_request_t *rq, const char *param, const char *message)
{
    rq->status = LLMD_REQ_INVALID;
    rq->error_param = param;
    snprintf(rq->error, sizeof(rq->error), "%s", message);
    return 0;       /* tells yajl to stop */
}


/* the canonical form's sink: the prefix hasher, and the caller's */
static void
canon_write(void *ctx, const void *data, size_t len)
{
    llmd_request_t  *rq = ctx;

    llmd_prefix_update(&rq->prefix, data, len);

    if (rq->out) {
        rq->out->write(rq->out->ctx, data, len);
    }
}


static void
copy_string(char *dst, size_t size, const unsigned char *s, size_t len)
{
    if (len >= size) {
        len = size - 1;
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
}


static int
push(llmd_request_t *rq, int frame)
{
    if (rq->depth + 1 >= LLMD_DEPTH_MAX) {
        return fail(rq, NULL, "JSON nesting is too deep");
    }
    rq->depth++;
    rq->frame[rq->depth] = (unsigned char) frame;
    rq->key[rq->depth] = K_OTHER;
    return 1;
}


/* A value in a root-object field. */
static int
root_value(llmd_request_t *rq, value_type_t type, const unsigned char *s,
    size_t len, long long i, int b)
{
    switch (rq->key[rq->depth]) {

    case K_MODEL:
        if (type == V_NULL) {
            return 1;
        }
        if (type != V_STRING) {
            return fail(rq, "model", "'model' must be a string");
        }
        copy_string(rq->model, sizeof(rq->model), s, len);
        return 1;

    case K_PROMPT:
        rq->has_prompt = 1;
        if (type == V_STRING) {
            llmd_canon_text(&rq->canon, s, len);
            return 1;
        }
        if (type == V_ARRAY) {
            return push(rq, F_PROMPT);
        }
        return fail(rq, "prompt",
                    "'prompt' must be a string, an array of strings "
                    "or an array of token ids");

    case K_MESSAGES:
        if (type != V_ARRAY) {
            return fail(rq, "messages", "'messages' must be an array");
        }
        rq->has_messages = 1;
        return push(rq, F_MESSAGES);

    case K_MAX_TOKENS:
        if (type == V_NULL) {
            return 1;
        }
        if (type != V_INT || i < 0) {
            return fail(rq, "max_tokens",
                        "'max_tokens' must be a non-negative integer");
        }
        rq->max_tokens = i;
        return 1;

    case K_STREAM:
        if (type == V_NULL) {
            return 1;
        }
        if (type != V_BOOL) {
            return fail(rq, "stream", "'stream' must be a boolean");
        }
        rq->stream = b;
        return 1;

    case K_USER:
        if (type == V_STRING) {
            copy_string(rq->user, sizeof(rq->user), s, len);
        }
        break;

    default:
        break;
    }

    if (type == V_MAP || type == V_ARRAY) {
        return push(rq, F_SKIP);
    }

    return 1;
}


static int
message_value(llmd_request_t *rq, value_type_t type, const unsigned char *s,
    size_t len)
{
    switch (rq->key[rq->depth]) {

    case K_ROLE:
        if (type != V_STRING) {
            return fail(rq, "messages", "a message's 'role' must be a string");
        }
        rq->role_len = len < sizeof(rq->role) ? len : sizeof(rq->role);
        memcpy(rq->role, s, rq->role_len);
        return 1;

    case K_CONTENT:
        if (type == V_STRING) {
            llmd_canon_text(&rq->canon, s, len);
            return 1;
        }
        if (type == V_NULL) {
            return 1;
        }
        if (type == V_ARRAY) {
            return push(rq, F_PARTS);
        }
        return fail(rq, "messages", "a message's 'content' must be a string "
                    "or an array of content parts");

    default:
        break;
    }

    if (type == V_MAP || type == V_ARRAY) {
        return push(rq, F_SKIP);
    }

    return 1;
}


/* Every value (scalar or container start) goes through here. */
static int
on_value(llmd_request_t *rq, value_type_t type, const unsigned char *s,
    size_t len, long long i, int b)
{
    if (!rq->seen_root) {
        rq->seen_root = 1;
        if (type != V_MAP) {
            return fail(rq, NULL, "the request body must be a JSON object");
        }
        rq->depth = 0;
        rq->frame[0] = F_ROOT;
        rq->key[0] = K_OTHER;
        return 1;
    }

    switch (rq->frame[rq->depth]) {

    case F_ROOT:
        return root_value(rq, type, s, len, i, b);

    case F_PROMPT:
        if (type == V_STRING) {
            llmd_canon_prompt_item(&rq->canon, s, len);
            return 1;
        }
        if (type == V_INT) {
            llmd_canon_token(&rq->canon, (uint32_t) i);
            return 1;
        }
        if (type == V_ARRAY) {
            return push(rq, F_PROMPT_TOKENS);
        }
        return fail(rq, "prompt", "'prompt' items must be strings, "
                    "token ids or arrays of token ids");

    case F_PROMPT_TOKENS:
        if (type != V_INT) {
            return fail(rq, "prompt", "token arrays in 'prompt' must hold "
                        "integers");
        }
        llmd_canon_token(&rq->canon, (uint32_t) i);
        return 1;

    case F_MESSAGES:
        if (type != V_MAP) {
            return fail(rq, "messages", "'messages' items must be objects");
        }
        rq->role_len = 0;
        return push(rq, F_MESSAGE);

    case F_MESSAGE:
        return message_value(rq, type, s, len);

    case F_PARTS:
        if (type == V_MAP) {
            return push(rq, F_PART);
        }
        if (type == V_STRING) {
            llmd_canon_part(&rq->canon, s, len);
            return 1;
        }
        return fail(rq, "messages", "content parts must be objects");

    case F_PART:
        if (rq->key[rq->depth] == K_TEXT && type == V_STRING) {
            llmd_canon_part(&rq->canon, s, len);
            return 1;
        }
        break;

    default:
        break;
    }

    if (type == V_MAP || type == V_ARRAY) {
        return push(rq, F_SKIP);
    }

    return 1;
}


static int
on_null(void *ctx)
{
    return on_value(ctx, V_NULL, NULL, 0, 0, 0);
}


static int
on_boolean(void *ctx, int b)
{
    return on_value(ctx, V_BOOL, NULL, 0, 0, b);
}


static int
on_integer(void *ctx, long long i)
{
    return on_value(ctx, V_INT, NULL, 0, i, 0);
}


static int
on_double(void *ctx, double d)
{
    (void) d;
    return on_value(ctx, V_DOUBLE, NULL, 0, 0, 0);
}


static int
on_string(void *ctx, const unsigned char *s, size_t len)
{
    return on_value(ctx, V_STRING, s, len, 0, 0);
}


static int
on_start_map(void *ctx)
{
    return on_value(ctx, V_MAP, NULL, 0, 0, 0);
}


static int
on_start_array(void *ctx)
{
    return on_value(ctx, V_ARRAY, NULL, 0, 0, 0);
}


#define KEY_IS(lit)  (len == sizeof(lit) - 1 && memcmp(s, lit, len) == 0)

static int
on_map_key(void *ctx, const unsigned char *s, size_t len)
{
    llmd_request_t  *rq = ctx;
    int              key = K_OTHER;

    switch (rq->frame[rq->depth]) {

    case F_ROOT:
        if (KEY_IS("model")) {
            key = K_MODEL;
        } else if (KEY_IS("prompt")) {
            key = K_PROMPT;
        } else if (KEY_IS("messages")) {
            key = K_MESSAGES;
        } else if (KEY_IS("max_tokens") || KEY_IS("max_completion_tokens")) {
            key = K_MAX_TOKENS;
        } else if (KEY_IS("stream")) {
            key = K_STREAM;
        } else if (KEY_IS("user")) {
            key = K_USER;
        }
        break;

    case F_MESSAGE:
        if (KEY_IS("role")) {
            key = K_ROLE;
        } else if (KEY_IS("content")) {
            key = K_CONTENT;
        }
        break;

    case F_PART:
        if (KEY_IS("text")) {
            key = K_TEXT;
        }
        break;

    default:
        break;
    }

    rq->key[rq->depth] = (unsigned char) key;
    return 1;
}


static int
on_end_container(void *ctx)
{
    llmd_request_t  *rq = ctx;

    if (rq->frame[rq->depth] == F_MESSAGE) {
        llmd_canon_message_end(&rq->canon, rq->role, rq->role_len);
        rq->nmessages++;
    }

    rq->depth--;
    return 1;
}


static const yajl_callbacks  llmd_request_callbacks = {
    on_null,
    on_boolean,
    on_integer,
    on_double,
    NULL,               /* numbers as integer / double, not raw text */
    on_string,
    on_start_map,
    on_map_key,
    on_end_container,
    on_start_array,
    on_end_container
};


llmd_req_status_t
llmd_request_init(llmd_request_t *rq, const llmd_allocator_t *alloc,
    size_t block_size, size_t max_blocks, unsigned char *block,
    uint64_t *keys)
{
    yajl_alloc_funcs  funcs;

    memset(rq, 0, sizeof(*rq));
    rq->max_tokens = -1;
    rq->stream = -1;
    rq->depth = -1;
    rq->alloc = *alloc;
    rq->canon.write = canon_write;
    rq->canon.ctx = rq;

    llmd_prefix_init(&rq->prefix, block_size, max_blocks, block, keys);

    funcs.malloc = alloc->malloc;
    funcs.realloc = alloc->realloc;
    funcs.free = alloc->free;
    funcs.ctx = alloc->ctx;

    rq->parser = yajl_alloc(&llmd_request_callbacks, &funcs, rq);
    if (rq->parser == NULL) {
        rq->status = LLMD_REQ_NOMEM;
        return rq->status;
    }

    return LLMD_REQ_OK;
}


static llmd_req_status_t
check(llmd_request_t *rq, yajl_status st, const unsigned char *data,
    size_t len)
{
    unsigned char  *msg;
    size_t          n;

    if (st == yajl_status_ok) {
        return LLMD_REQ_OK;
    }

    if (rq->status != LLMD_REQ_OK) {
        return rq->status;      /* a callback already said why */
    }

    rq->status = LLMD_REQ_INVALID;
    rq->error_param = NULL;

    msg = yajl_get_error(rq->parser, 0, data, len);
    if (msg == NULL) {
        snprintf(rq->error, sizeof(rq->error), "invalid JSON");
        return rq->status;
    }

    /* yajl ends its messages with a newline */
    n = strlen((char *) msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) {
        msg[--n] = '\0';
    }

    snprintf(rq->error, sizeof(rq->error), "invalid JSON in request body: %s",
             (char *) msg);
    yajl_free_error(rq->parser, msg);

    return rq->status;
}


void
llmd_request_set_sink(llmd_request_t *rq, const llmd_canon_sink_t *out)
{
    rq->out = out;
}


llmd_req_status_t
llmd_request_feed(llmd_request_t *rq, const void *data, size_t len)
{
    if (rq->status != LLMD_REQ_OK) {
        return rq->status;
    }

    return check(rq, yajl_parse(rq->parser, data, len), data, len);
}


llmd_req_status_t
llmd_request_finish(llmd_request_t *rq)
{
    llmd_req_status_t  rc;

    if (rq->status != LLMD_REQ_OK) {
        return rq->status;
    }

    rc = check(rq, yajl_complete_parse(rq->parser), NULL, 0);

    if (rc == LLMD_REQ_OK && !rq->seen_root) {
        fail(rq, NULL, "the request body is empty");
        return rq->status;
    }

    return rc;
}


void
llmd_request_cleanup(llmd_request_t *rq)
{
    if (rq->parser) {
        yajl_free(rq->parser);
        rq->parser = NULL;
    }
}


llmd_req_status_t
llmd_request_inspect(llmd_request_t *rq, const llmd_allocator_t *alloc,
    const void *body, size_t len, size_t block_size, size_t max_blocks,
    unsigned char *block, uint64_t *keys)
{
    llmd_req_status_t  rc;

    rc = llmd_request_init(rq, alloc, block_size, max_blocks, block, keys);
    if (rc == LLMD_REQ_OK) {
        rc = llmd_request_feed(rq, body, len);
    }
    if (rc == LLMD_REQ_OK) {
        rc = llmd_request_finish(rq);
    }

    llmd_request_cleanup(rq);
    return rc;
}
