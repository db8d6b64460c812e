/*
 * The canonical prompt form: see llmd_canon.h.
 */

#include "llmd_canon.h"


static void
put_byte(const llmd_canon_sink_t *sink, unsigned char c)
{
    sink->write(sink->ctx, &c, 1);
}


void
llmd_canon_text(const llmd_canon_sink_t *sink, const void *s, size_t len)
{
    if (len) {
        sink->write(sink->ctx, s, len);
    }
}


void
llmd_canon_prompt_item(const llmd_canon_sink_t *sink, const void *s,
    size_t len)
{
    llmd_canon_text(sink, s, len);
    put_byte(sink, LLMD_SEP_RS);
}


void
llmd_canon_token(const llmd_canon_sink_t *sink, uint32_t id)
{
    unsigned char  b[4];

    b[0] = id & 0xff;
    b[1] = (id >> 8) & 0xff;
    b[2] = (id >> 16) & 0xff;
    b[3] = (id >> 24) & 0xff;
    sink->write(sink->ctx, b, 4);
}


void
llmd_canon_part(const llmd_canon_sink_t *sink, const void *s, size_t len)
{
    llmd_canon_text(sink, s, len);
    put_byte(sink, LLMD_SEP_GS);
}


void
llmd_canon_message_end(const llmd_canon_sink_t *sink, const void *role,
    size_t len)
{
    put_byte(sink, LLMD_SEP_US);
    llmd_canon_text(sink, role, len < LLMD_ROLE_MAX ? len : LLMD_ROLE_MAX);
    put_byte(sink, LLMD_SEP_RS);
}
