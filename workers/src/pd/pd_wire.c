/*
 * KV transfer frames: encoding and checked decoding.
 */

#include "pd_wire.h"

#include <stdio.h>
#include <string.h>

#include <xxhash.h>

uint32_t pd_le32(const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}

uint64_t pd_le64(const uint8_t *p)
{
    return (uint64_t) pd_le32(p) | (uint64_t) pd_le32(p + 4) << 32;
}

void pd_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}

void pd_put64(uint8_t *p, uint64_t v)
{
    pd_put32(p, (uint32_t) v);
    pd_put32(p + 4, (uint32_t) (v >> 32));
}

void pd_layout_of(struct pd_layout *l, const struct kv_geometry *geo)
{
    l->num_layers = (uint32_t) geo->num_layers;
    l->kv_heads = (uint32_t) geo->kv_heads;
    l->head_dim = (uint32_t) geo->head_dim;
    l->dtype_bytes = (uint32_t) geo->dtype_bytes;
    l->block_tokens = (uint32_t) geo->block_tokens;
}

uint64_t pd_layout_hash(const struct pd_layout *l)
{
    /* the layout code names the page layout of kv_blocks.h: a change there
     * must change it, so old and new workers refuse each other */
    uint8_t b[28];

    pd_put32(b, 1);                     /* [layer][K,V][slot][head][dim] */
    pd_put32(b + 4, l->num_layers);
    pd_put32(b + 8, l->kv_heads);
    pd_put32(b + 12, l->head_dim);
    pd_put32(b + 16, l->dtype_bytes);
    pd_put32(b + 20, l->block_tokens);
    pd_put32(b + 24, PD_VERSION);
    return XXH3_64bits(b, sizeof(b));
}

int pd_layout_str(const struct pd_layout *l, char *buf, size_t size)
{
    return snprintf(buf, size, "layers=%u kv_heads=%u head_dim=%u "
                    "dtype_bytes=%u block_tokens=%u", l->num_layers,
                    l->kv_heads, l->head_dim, l->dtype_bytes, l->block_tokens);
}

void pd_put_hdr(uint8_t *p, uint8_t type, uint32_t len, uint64_t xfer)
{
    p[0] = type;
    p[1] = p[2] = p[3] = 0;
    pd_put32(p + 4, len);
    pd_put64(p + 8, xfer);
}

void pd_get_hdr(const uint8_t *p, struct pd_frame_hdr *h)
{
    h->type = p[0];
    h->len = pd_le32(p + 4);
    h->xfer = pd_le64(p + 8);
}

/* ---- HELLO / HELLO_OK: version, hash, layout, transports, id ---- */

/* the first version's HELLO, then the page location */
#define PD_HELLO_BASE   (4 + 8 + 5 * 4 + 4 + PD_ID_MAX)

size_t pd_hello_size(void)
{
    return PD_HELLO_BASE + 8 + 4 + 16;
}

size_t pd_put_hello(uint8_t *buf, const struct pd_hello *m)
{
    uint8_t *p = buf;

    pd_put32(p, m->version); p += 4;
    pd_put64(p, m->layout_hash); p += 8;
    pd_put32(p, m->layout.num_layers); p += 4;
    pd_put32(p, m->layout.kv_heads); p += 4;
    pd_put32(p, m->layout.head_dim); p += 4;
    pd_put32(p, m->layout.dtype_bytes); p += 4;
    pd_put32(p, m->layout.block_tokens); p += 4;
    pd_put32(p, m->transports); p += 4;
    memset(p, 0, PD_ID_MAX);
    memcpy(p, m->worker_id, strnlen(m->worker_id, PD_ID_MAX - 1));
    p += PD_ID_MAX;
    pd_put64(p, m->host_id); p += 8;
    pd_put32(p, m->on_device); p += 4;
    memcpy(p, m->device_uuid, 16);
    return pd_hello_size();
}

int pd_get_hello(const uint8_t *buf, size_t len, struct pd_hello *m)
{
    const uint8_t *p = buf;

    /* a newer peer may append fields; an older one must not be shorter */
    if (len < 4)
        return -1;
    m->version = pd_le32(p);
    if (len < PD_HELLO_BASE)
        return m->version != PD_VERSION ? 0 : -1;
    p += 4;
    m->layout_hash = pd_le64(p); p += 8;
    m->layout.num_layers = pd_le32(p); p += 4;
    m->layout.kv_heads = pd_le32(p); p += 4;
    m->layout.head_dim = pd_le32(p); p += 4;
    m->layout.dtype_bytes = pd_le32(p); p += 4;
    m->layout.block_tokens = pd_le32(p); p += 4;
    m->transports = pd_le32(p); p += 4;
    memcpy(m->worker_id, p, PD_ID_MAX);
    m->worker_id[PD_ID_MAX - 1] = '\0';
    p += PD_ID_MAX;
    m->host_id = 0;
    m->on_device = 0;
    memset(m->device_uuid, 0, 16);
    if (len >= pd_hello_size()) {
        m->host_id = pd_le64(p); p += 8;
        m->on_device = pd_le32(p); p += 4;
        memcpy(m->device_uuid, p, 16);
    }
    return 0;
}

/* ---- PREFILL ---- */

size_t pd_prefill_size(uint32_t n_tokens, uint32_t n_dst, uint32_t nkeys)
{
    return 16 + 4 * (size_t) n_tokens + 4 * (size_t) n_dst
           + (nkeys ? 4 + 12 * (size_t) nkeys : 0);
}

size_t pd_put_prefill(uint8_t *buf, const struct pd_prefill_msg *m)
{
    uint8_t *p = buf;

    pd_put32(p, m->n_tokens);
    pd_put32(p + 4, m->first_block);
    pd_put32(p + 8, m->n_dst);
    pd_put32(p + 12, m->deadline_ms);
    p += 16;
    for (uint32_t i = 0; i < m->n_tokens; i++, p += 4)
        pd_put32(p, (uint32_t) m->tokens[i]);
    for (uint32_t i = 0; i < m->n_dst; i++, p += 4)
        pd_put32(p, (uint32_t) m->dst_blocks[i]);
    if (m->nkeys) {
        pd_put32(p, m->nkeys);
        p += 4;
        for (uint32_t i = 0; i < m->nkeys; i++, p += 8)
            pd_put64(p, m->keys[i]);
        for (uint32_t i = 0; i < m->nkeys; i++, p += 4)
            pd_put32(p, m->cover[i]);
    }
    return (size_t) (p - buf);
}

/* The arrays are converted in place: the payload buffer is 4-byte aligned
 * (malloc'd) and little-endian hosts need no conversion at all. */
int pd_get_prefill(const uint8_t *buf, size_t len, struct pd_prefill_msg *m)
{
    if (len < 16)
        return -1;
    m->n_tokens = pd_le32(buf);
    m->first_block = pd_le32(buf + 4);
    m->n_dst = pd_le32(buf + 8);
    m->deadline_ms = pd_le32(buf + 12);
    m->nkeys = 0;
    m->keys_raw = NULL;
    if (m->n_tokens == 0 || m->n_tokens > (1u << 24) || m->n_dst > (1u << 24)
        || len < pd_prefill_size(m->n_tokens, m->n_dst, 0))
        return -1;
    if (len > pd_prefill_size(m->n_tokens, m->n_dst, 0)) {
        const uint8_t *k = buf + pd_prefill_size(m->n_tokens, m->n_dst, 0);
        m->nkeys = pd_le32(k);
        if (m->nkeys == 0 || m->nkeys > (1u << 20)
            || len != pd_prefill_size(m->n_tokens, m->n_dst, m->nkeys))
            return -1;
        m->keys_raw = k + 4;
    }
    {
        int32_t *t = (int32_t *) (void *) (buf + 16);
        for (uint32_t i = 0; i < m->n_tokens + m->n_dst; i++)
            t[i] = (int32_t) pd_le32((const uint8_t *) &t[i]);
        m->tokens = t;
        m->dst_blocks = t + m->n_tokens;
    }
    return 0;
}

/* ---- DONE ---- */

size_t pd_done_size(void)
{
    return 8 + 8 + 8 + 4;
}

size_t pd_put_done(uint8_t *buf, const struct pd_done_msg *m)
{
    pd_put64(buf, m->last_layer_ns);
    pd_put64(buf + 8, m->bytes);
    pd_put64(buf + 16, m->bytes_before_last);
    pd_put32(buf + 24, m->prefill_hit_tokens);
    return pd_done_size();
}

int pd_get_done(const uint8_t *buf, size_t len, struct pd_done_msg *m)
{
    if (len < pd_done_size())
        return -1;
    m->last_layer_ns = pd_le64(buf);
    m->bytes = pd_le64(buf + 8);
    m->bytes_before_last = pd_le64(buf + 16);
    m->prefill_hit_tokens = pd_le32(buf + 24);
    return 0;
}

void pd_put_seg(uint8_t *p, const struct pd_seg *s)
{
    pd_put32(p, s->dst_block);
    pd_put32(p + 4, s->offset);
    pd_put32(p + 8, s->len);
}

void pd_get_seg(const uint8_t *p, struct pd_seg *s)
{
    s->dst_block = pd_le32(p);
    s->offset = pd_le32(p + 4);
    s->len = pd_le32(p + 8);
}
