/*
 * The canonical prompt form: the bytes of a request's prompt that the
 * gateway hashes into prefix keys and the worker tokenizes (byte-level) and
 * claims keys for.  Both sides write it only through these calls, the
 * gateway from its streaming parser (llmd_request.c), the worker from its
 * parsed body, so the two agree byte for byte.
 *
 * Version 1 (see LLMD_PREFIX_SEED):
 *   prompt "text"              -> the text
 *   prompt ["a", "b"]          -> "a" RS "b" RS
 *   prompt [1, 2] / [[1, 2]]   -> each token id as 4 little-endian bytes
 *   messages [{role, content}] -> per message: content text (each part of
 *                                 an array content followed by GS), then
 *                                 US, role (at most LLMD_ROLE_MAX bytes), RS.
 * The role goes last so that the bytes do not depend on key order inside a
 * message, which lets a parser stream without buffering content.
 */

#ifndef LLMD_CANON_H
#define LLMD_CANON_H

#include <stddef.h>
#include <stdint.h>

#define LLMD_SEP_RS         0x1e    /* ends a prompt item or a message */
#define LLMD_SEP_US         0x1f    /* separates content from role */
#define LLMD_SEP_GS         0x1d    /* ends a content part */

#define LLMD_ROLE_MAX       32      /* role bytes that count */

/* Where the bytes go: called with each run, in order. */
typedef struct {
    void   (*write)(void *ctx, const void *data, size_t len);
    void    *ctx;
} llmd_canon_sink_t;

/* prompt "text", or a message's string content */
void llmd_canon_text(const llmd_canon_sink_t *sink, const void *s,
    size_t len);

/* one string of an array prompt */
void llmd_canon_prompt_item(const llmd_canon_sink_t *sink, const void *s,
    size_t len);

/* one token id of a prompt */
void llmd_canon_token(const llmd_canon_sink_t *sink, uint32_t id);

/* one text part of an array content */
void llmd_canon_part(const llmd_canon_sink_t *sink, const void *s,
    size_t len);

/* the end of a message, after its content */
void llmd_canon_message_end(const llmd_canon_sink_t *sink, const void *role,
    size_t len);

#endif /* LLMD_CANON_H */
