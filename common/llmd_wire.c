/*
 * msgpack encoding of the fleet-state records (see llmd_wire.h).  Each
 * record type is described once by a field table; packing and unpacking
 * both walk that table, so the two sides cannot drift apart.
 */

#include <stddef.h>
#include <string.h>

#include <msgpack.h>

#include "llmd_wire.h"


typedef enum { T_STR, T_U32, T_U64, T_F64 } field_type_t;

typedef struct {
    const char     *name;
    field_type_t    type;
    size_t          offset;
    size_t          size;       /* T_STR: capacity */
} field_t;

#define STR(s, f, n)  { n, T_STR, offsetof(s, f), sizeof(((s *) 0)->f) }
#define U32(s, f, n)  { n, T_U32, offsetof(s, f), 4 }
#define U64(s, f, n)  { n, T_U64, offsetof(s, f), 8 }
#define F64(s, f, n)  { n, T_F64, offsetof(s, f), 8 }

static const field_t  heartbeat_fields[] = {
    STR(llmd_heartbeat_t, id, "id"),
    STR(llmd_heartbeat_t, pool, "pool"),
    STR(llmd_heartbeat_t, addr, "addr"),
    STR(llmd_heartbeat_t, model, "model"),
    U32(llmd_heartbeat_t, role, "role"),
    U64(llmd_heartbeat_t, seq, "seq"),
    U64(llmd_heartbeat_t, ts_ms, "ts"),
    U32(llmd_heartbeat_t, interval_ms, "ivl"),
    U32(llmd_heartbeat_t, ttl_ms, "ttl"),
    U32(llmd_heartbeat_t, running, "run"),
    U32(llmd_heartbeat_t, waiting, "wait"),
    U32(llmd_heartbeat_t, max_batch, "mb"),
    U64(llmd_heartbeat_t, queued_prefill_tokens, "qpt"),
    U32(llmd_heartbeat_t, kv_used, "kvu"),
    U32(llmd_heartbeat_t, kv_total, "kvt"),
    U32(llmd_heartbeat_t, block_tokens, "bt"),
    F64(llmd_heartbeat_t, prefill_tps, "ptps"),
    F64(llmd_heartbeat_t, decode_ms_base, "dms0"),
    F64(llmd_heartbeat_t, decode_ms_per_seq, "dms1"),
    F64(llmd_heartbeat_t, ttft_ms, "ttft"),
    F64(llmd_heartbeat_t, bytes_per_token, "bpt"),
    U64(llmd_heartbeat_t, requests_total, "req"),
    U64(llmd_heartbeat_t, prompt_tokens_total, "ptok"),
    U64(llmd_heartbeat_t, generation_tokens_total, "gtok"),
    U64(llmd_heartbeat_t, prefix_hit_tokens_total, "hit"),
    U32(llmd_heartbeat_t, events, "ev"),
    STR(llmd_heartbeat_t, kv_addr, "kv"),
    { NULL, T_STR, 0, 0 }
};

static const field_t  event_fields[] = {
    STR(llmd_cache_event_t, id, "id"),
    STR(llmd_cache_event_t, addr, "addr"),
    U32(llmd_cache_event_t, type, "type"),
    U64(llmd_cache_event_t, ts_ms, "ts"),
    U32(llmd_cache_event_t, block_size, "bs"),
    { NULL, T_STR, 0, 0 }
};

static const field_t  gateway_fields[] = {
    STR(llmd_gateway_load_t, id, "id"),
    U64(llmd_gateway_load_t, seq, "seq"),
    U64(llmd_gateway_load_t, ts_ms, "ts"),
    { NULL, T_STR, 0, 0 }
};

static const field_t  gateway_peer_fields[] = {
    STR(llmd_gateway_peer_t, addr, "addr"),
    U32(llmd_gateway_peer_t, inflight, "n"),
    U64(llmd_gateway_peer_t, inflight_tokens, "tok"),
    U64(llmd_gateway_peer_t, inflight_work, "wk"),
    { NULL, T_STR, 0, 0 }
};


/* ---- packing into a fixed buffer ---- */

typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} out_t;


static int
out_write(void *data, const char *buf, size_t len)
{
    out_t  *o = data;

    if (o->cap - o->len < len) {
        return -1;
    }

    memcpy(o->data + o->len, buf, len);
    o->len += len;
    return 0;
}


static size_t
count_fields(const field_t *f)
{
    size_t  n = 0;

    while (f[n].name) {
        n++;
    }
    return n;
}


static int
pack_key(msgpack_packer *pk, const char *name)
{
    size_t  n = strlen(name);

    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, name, n);
}


static int
pack_fields(msgpack_packer *pk, const field_t *f, const void *rec)
{
    const char  *base = rec;
    const char  *s;
    double       d;
    uint32_t     u32;
    uint64_t     u64;

    for (; f->name; f++) {
        if (pack_key(pk, f->name)) {
            return -1;
        }

        switch (f->type) {
        case T_STR:
            s = base + f->offset;
            if (msgpack_pack_str(pk, strnlen(s, f->size))
                || msgpack_pack_str_body(pk, s, strnlen(s, f->size)))
            {
                return -1;
            }
            break;
        case T_U32:
            memcpy(&u32, base + f->offset, 4);
            if (msgpack_pack_uint32(pk, u32)) {
                return -1;
            }
            break;
        case T_U64:
            memcpy(&u64, base + f->offset, 8);
            if (msgpack_pack_uint64(pk, u64)) {
                return -1;
            }
            break;
        case T_F64:
            memcpy(&d, base + f->offset, 8);
            if (msgpack_pack_double(pk, d)) {
                return -1;
            }
            break;
        }
    }

    return 0;
}


static void
packer_init(msgpack_packer *pk, out_t *o, char *buf, size_t cap)
{
    o->data = buf;
    o->len = 0;
    o->cap = cap;
    msgpack_packer_init(pk, o, out_write);
}


/* The map header, the version and the table's fields; `extra` more
 * entries follow, written by the caller. */
static int
pack_record(msgpack_packer *pk, const field_t *fields, const void *rec,
    size_t extra)
{
    return msgpack_pack_map(pk, count_fields(fields) + 1 + extra)
           || pack_key(pk, "v") || msgpack_pack_uint32(pk, LLMD_WIRE_VERSION)
           || pack_fields(pk, fields, rec);
}


llmd_wire_status_t
llmd_wire_pack_heartbeat(const llmd_heartbeat_t *hb, char *buf, size_t cap,
    size_t *len)
{
    out_t           o;
    msgpack_packer  pk;

    packer_init(&pk, &o, buf, cap);

    if (pack_record(&pk, heartbeat_fields, hb, 0)) {
        return LLMD_WIRE_ENOSPACE;
    }

    *len = o.len;
    return LLMD_WIRE_OK;
}


llmd_wire_status_t
llmd_wire_pack_event(const llmd_cache_event_t *ev, char *buf, size_t cap,
    size_t *len)
{
    out_t           o;
    uint32_t        i;
    msgpack_packer  pk;

    if (ev->nkeys > LLMD_WIRE_MAX_KEYS) {
        return LLMD_WIRE_ETOOBIG;
    }

    packer_init(&pk, &o, buf, cap);

    if (pack_record(&pk, event_fields, ev, 1)
        || pack_key(&pk, "keys") || msgpack_pack_array(&pk, ev->nkeys))
    {
        return LLMD_WIRE_ENOSPACE;
    }

    for (i = 0; i < ev->nkeys; i++) {
        if (msgpack_pack_uint64(&pk, ev->keys[i])) {
            return LLMD_WIRE_ENOSPACE;
        }
    }

    *len = o.len;
    return LLMD_WIRE_OK;
}


llmd_wire_status_t
llmd_wire_pack_gateway(const llmd_gateway_load_t *gw, char *buf, size_t cap,
    size_t *len)
{
    out_t           o;
    uint32_t        i;
    msgpack_packer  pk;

    if (gw->npeers > LLMD_WIRE_MAX_PEERS) {
        return LLMD_WIRE_ETOOBIG;
    }

    packer_init(&pk, &o, buf, cap);

    if (pack_record(&pk, gateway_fields, gw, 1)
        || pack_key(&pk, "peers") || msgpack_pack_array(&pk, gw->npeers))
    {
        return LLMD_WIRE_ENOSPACE;
    }

    for (i = 0; i < gw->npeers; i++) {
        if (msgpack_pack_map(&pk, count_fields(gateway_peer_fields))
            || pack_fields(&pk, gateway_peer_fields, &gw->peers[i]))
        {
            return LLMD_WIRE_ENOSPACE;
        }
    }

    *len = o.len;
    return LLMD_WIRE_OK;
}


/* ---- unpacking ---- */

/* Writers differ on str versus bin for text; both are accepted (the two
 * share one layout in msgpack_object). */
static int
is_text(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN;
}


static int
key_is(const msgpack_object *k, const char *name)
{
    size_t  n = strlen(name);

    return is_text(k) && k->via.str.size == n
           && memcmp(k->via.str.ptr, name, n) == 0;
}


static llmd_wire_status_t
unpack_field(const field_t *f, const msgpack_object *v, void *rec)
{
    char      *base = rec;
    double     d;
    uint32_t   u32;
    uint64_t   u64;

    switch (f->type) {

    case T_STR:
        if (!is_text(v)) {
            return LLMD_WIRE_ETYPE;
        }
        if (memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL) {
            return LLMD_WIRE_ETYPE;     /* would truncate silently */
        }
        if (v->via.str.size >= f->size) {
            return LLMD_WIRE_ETOOBIG;
        }
        memcpy(base + f->offset, v->via.str.ptr, v->via.str.size);
        base[f->offset + v->via.str.size] = '\0';
        return LLMD_WIRE_OK;

    case T_U32:
    case T_U64:
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            return LLMD_WIRE_ETYPE;
        }
        u64 = v->via.u64;
        if (f->type == T_U32) {
            if (u64 > UINT32_MAX) {
                return LLMD_WIRE_ETOOBIG;
            }
            u32 = (uint32_t) u64;
            memcpy(base + f->offset, &u32, 4);
        } else {
            memcpy(base + f->offset, &u64, 8);
        }
        return LLMD_WIRE_OK;

    case T_F64:
        if (v->type == MSGPACK_OBJECT_FLOAT64
            || v->type == MSGPACK_OBJECT_FLOAT32)
        {
            d = v->via.f64;
        } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            d = (double) v->via.u64;
        } else {
            return LLMD_WIRE_ETYPE;
        }
        if (!(d >= 0.0 && d < 1e15)) {          /* also rejects NaN */
            return LLMD_WIRE_ETYPE;
        }
        memcpy(base + f->offset, &d, 8);
        return LLMD_WIRE_OK;
    }

    return LLMD_WIRE_ETYPE;
}


/* Fills rec from a map's known fields; calls extra() for the others. */
typedef llmd_wire_status_t (*extra_pt)(const msgpack_object *k,
    const msgpack_object *v, void *rec);

static llmd_wire_status_t
unpack_map(const msgpack_object *map, const field_t *fields, void *rec,
    int need_version, extra_pt extra)
{
    uint32_t             i;
    int                  version_seen = 0;
    const field_t       *f;
    llmd_wire_status_t   rc;
    msgpack_object_kv   *kv;

    if (map->type != MSGPACK_OBJECT_MAP) {
        return LLMD_WIRE_ETYPE;
    }

    for (i = 0; i < map->via.map.size; i++) {
        kv = &map->via.map.ptr[i];

        if (key_is(&kv->key, "v")) {
            if (kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER
                || kv->val.via.u64 != LLMD_WIRE_VERSION)
            {
                return LLMD_WIRE_EVERSION;
            }
            version_seen = 1;
            continue;
        }

        for (f = fields; f->name; f++) {
            if (key_is(&kv->key, f->name)) {
                break;
            }
        }

        if (f->name) {
            rc = unpack_field(f, &kv->val, rec);
        } else if (extra) {
            rc = extra(&kv->key, &kv->val, rec);
        } else {
            rc = LLMD_WIRE_OK;
        }

        if (rc != LLMD_WIRE_OK) {
            return rc;
        }
    }

    return (need_version && !version_seen) ? LLMD_WIRE_EVERSION
                                           : LLMD_WIRE_OK;
}


/*
 * msgpack-c allocates a container's elements from its declared size before
 * reading them, so a 9-byte record claiming 2^32 array items would ask for
 * 64 GiB.  This pass walks the headers first and rejects any container
 * that claims more items than there are bytes left to hold them.
 */
static uint64_t
be(const unsigned char *p, int n)
{
    uint64_t  v = 0;

    while (n--) {
        v = (v << 8) | *p++;
    }
    return v;
}


static llmd_wire_status_t
check_sizes(const unsigned char *p, size_t len)
{
    size_t    pos = 0, left;
    uint64_t  need = 1, n, skip;
    unsigned  c;

    while (need) {
        if (pos >= len) {
            return LLMD_WIRE_ETRUNCATED;
        }

        c = p[pos++];
        left = len - pos;
        n = 0;          /* items this object adds */
        skip = 0;       /* payload bytes after its header */

        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            /* fixint, nil, bool */
        } else if (c <= 0x8f) {
            n = 2 * (uint64_t) (c & 0x0f);
        } else if (c <= 0x9f) {
            n = c & 0x0f;
        } else if (c <= 0xbf) {
            skip = c & 0x1f;
        } else {
            static const unsigned char  width[] = {
                /* c4 bin8 .. df map32: bytes of the length or value field */
                1, 2, 4, 1, 2, 4, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
                1, 2, 4, 8, 16, 1, 2, 4, 2, 4, 2, 4
            };
            int  w;

            if (c == 0xc1) {
                return LLMD_WIRE_ETYPE;
            }

            w = width[c - 0xc4];

            if (c >= 0xd4 && c <= 0xd8) {           /* fixext: type + data */
                skip = 1 + (uint64_t) w;

            } else if ((c >= 0xca && c <= 0xd3)) {  /* float, ints */
                skip = w;

            } else {
                if (left < (size_t) w) {
                    return LLMD_WIRE_ETRUNCATED;
                }
                n = be(p + pos, w);
                pos += w;
                left -= w;

                if (c <= 0xc6 || (c >= 0xd9 && c <= 0xdb)) {    /* bin, str */
                    skip = n;
                    n = 0;
                } else if (c <= 0xc9) {                         /* ext */
                    skip = n + 1;
                    n = 0;
                } else if (c >= 0xde) {                         /* map */
                    n *= 2;
                }
            }
        }

        if (skip > left) {
            return LLMD_WIRE_ETRUNCATED;
        }
        pos += skip;
        left -= skip;

        need = need - 1 + n;
        if (need > left) {
            return n ? LLMD_WIRE_ETOOBIG : LLMD_WIRE_ETRUNCATED;
        }
    }

    return pos == len ? LLMD_WIRE_OK : LLMD_WIRE_ETYPE;
}


typedef llmd_wire_status_t (*decode_pt)(const msgpack_object *root,
    void *rec);

static llmd_wire_status_t
decode(const char *buf, size_t len, decode_pt fn, void *rec)
{
    size_t              off = 0;
    msgpack_unpacked    u;
    msgpack_unpack_return  ur;
    llmd_wire_status_t  rc;

    if (len > LLMD_WIRE_MAX_RECORD) {
        return LLMD_WIRE_ETOOBIG;
    }

    rc = check_sizes((const unsigned char *) buf, len);
    if (rc != LLMD_WIRE_OK) {
        return rc;
    }

    msgpack_unpacked_init(&u);
    ur = msgpack_unpack_next(&u, buf, len, &off);

    if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
        msgpack_unpacked_destroy(&u);
        return ur == MSGPACK_UNPACK_SUCCESS || ur == MSGPACK_UNPACK_EXTRA_BYTES
               ? LLMD_WIRE_ETYPE : LLMD_WIRE_ETRUNCATED;
    }

    rc = fn(&u.data, rec);
    msgpack_unpacked_destroy(&u);
    return rc;
}


static llmd_wire_status_t
decode_heartbeat(const msgpack_object *root, void *rec)
{
    llmd_heartbeat_t  *hb = rec;
    llmd_wire_status_t  rc;

    rc = unpack_map(root, heartbeat_fields, hb, 1, NULL);
    if (rc == LLMD_WIRE_OK && (hb->id[0] == '\0' || hb->role > 2)) {
        rc = LLMD_WIRE_ETYPE;
    }
    return rc;
}


llmd_wire_status_t
llmd_wire_unpack_heartbeat(const char *buf, size_t len, llmd_heartbeat_t *hb)
{
    memset(hb, 0, sizeof(*hb));
    return decode(buf, len, decode_heartbeat, hb);
}


static llmd_wire_status_t
event_extra(const msgpack_object *k, const msgpack_object *v, void *rec)
{
    uint32_t             i;
    llmd_cache_event_t  *ev = rec;

    if (!key_is(k, "keys")) {
        return LLMD_WIRE_OK;
    }

    if (v->type != MSGPACK_OBJECT_ARRAY) {
        return LLMD_WIRE_ETYPE;
    }

    if (v->via.array.size > ev->max_keys
        || v->via.array.size > LLMD_WIRE_MAX_KEYS)
    {
        return LLMD_WIRE_ETOOBIG;
    }

    for (i = 0; i < v->via.array.size; i++) {
        if (v->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
            return LLMD_WIRE_ETYPE;
        }
        ev->keys[i] = v->via.array.ptr[i].via.u64;
    }

    ev->nkeys = v->via.array.size;
    return LLMD_WIRE_OK;
}


static llmd_wire_status_t
decode_event(const msgpack_object *root, void *rec)
{
    llmd_cache_event_t  *ev = rec;
    llmd_wire_status_t   rc;

    rc = unpack_map(root, event_fields, ev, 1, event_extra);
    if (rc == LLMD_WIRE_OK
        && (ev->type < LLMD_EVENT_STORED || ev->type > LLMD_EVENT_SNAPSHOT
            || ev->id[0] == '\0'))
    {
        rc = LLMD_WIRE_ETYPE;
    }
    return rc;
}


llmd_wire_status_t
llmd_wire_unpack_event(const char *buf, size_t len, llmd_cache_event_t *ev)
{
    uint64_t  *keys = ev->keys;
    uint32_t   max_keys = ev->max_keys;

    memset(ev, 0, sizeof(*ev));
    ev->keys = keys;
    ev->max_keys = max_keys;

    return decode(buf, len, decode_event, ev);
}


static llmd_wire_status_t
gateway_extra(const msgpack_object *k, const msgpack_object *v, void *rec)
{
    uint32_t              i;
    llmd_wire_status_t    rc;
    llmd_gateway_load_t  *gw = rec;

    if (!key_is(k, "peers")) {
        return LLMD_WIRE_OK;
    }

    if (v->type != MSGPACK_OBJECT_ARRAY) {
        return LLMD_WIRE_ETYPE;
    }

    if (v->via.array.size > LLMD_WIRE_MAX_PEERS) {
        return LLMD_WIRE_ETOOBIG;
    }

    for (i = 0; i < v->via.array.size; i++) {
        rc = unpack_map(&v->via.array.ptr[i], gateway_peer_fields,
                        &gw->peers[i], 0, NULL);
        if (rc != LLMD_WIRE_OK) {
            return rc;
        }
    }

    gw->npeers = v->via.array.size;
    return LLMD_WIRE_OK;
}


static llmd_wire_status_t
decode_gateway(const msgpack_object *root, void *rec)
{
    llmd_gateway_load_t  *gw = rec;
    llmd_wire_status_t    rc;

    rc = unpack_map(root, gateway_fields, gw, 1, gateway_extra);
    if (rc == LLMD_WIRE_OK && gw->id[0] == '\0') {
        rc = LLMD_WIRE_ETYPE;
    }
    return rc;
}


llmd_wire_status_t
llmd_wire_unpack_gateway(const char *buf, size_t len, llmd_gateway_load_t *gw)
{
    memset(gw, 0, sizeof(*gw));
    return decode(buf, len, decode_gateway, gw);
}


const char *
llmd_wire_strerror(llmd_wire_status_t st)
{
    switch (st) {
    case LLMD_WIRE_OK:          return "ok";
    case LLMD_WIRE_ETRUNCATED:  return "truncated record";
    case LLMD_WIRE_ETYPE:       return "malformed record";
    case LLMD_WIRE_EVERSION:    return "unknown record version";
    case LLMD_WIRE_ETOOBIG:     return "record over a size bound";
    case LLMD_WIRE_ENOSPACE:    return "output buffer too small";
    }
    return "unknown error";
}


const char *
llmd_role_name(uint32_t role)
{
    switch (role) {
    case LLMD_ROLE_PREFILL: return "prefill";
    case LLMD_ROLE_DECODE:  return "decode";
    default:                return "both";
    }
}
