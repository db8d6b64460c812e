/*
 * KV transfer wire format: the frames a decode worker and a prefill worker
 * exchange over their pair connection (see DESIGN.md next to this file).
 *
 * Every frame is a 16-byte header followed by `len` payload bytes, all
 * integers little-endian:
 *
 *   u8 type | u8 0 | u16 0 | u32 len | u64 xfer
 *
 * Decode -> prefill: HELLO, PREFILL, ABORT.
 * Prefill -> decode: HELLO_OK, HELLO_REFUSED, DATA, RUNS, DONE, FAILED.
 */

#ifndef LLMD_PD_WIRE_H
#define LLMD_PD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "sched/kv_blocks.h"

#define PD_VERSION          1
#define PD_HDR_BYTES        16
#define PD_REASON_MAX       160
#define PD_ID_MAX           64
/* a DATA frame's segment table holds at most this many entries */
#define PD_MAX_SEGS         1024
/* control payloads (a PREFILL carries the prompt's token ids) */
#define PD_MAX_CONTROL      (64u << 20)

enum pd_frame_type {
    PD_HELLO = 1,
    PD_HELLO_OK,
    PD_HELLO_REFUSED,
    PD_PREFILL,
    PD_ABORT,
    PD_DATA,
    PD_DONE,
    PD_FAILED,
    PD_RUNS             /* P->D: runs a GPU transport moves out of band */
};

/* transports a side can use; the handshake picks one per pair */
enum pd_transport_bit {
    PD_TRANSPORT_TCP = 1u << 0,
    PD_TRANSPORT_CUDA_IPC = 1u << 1,
    PD_TRANSPORT_NCCL = 1u << 2
};

struct pd_frame_hdr {
    uint8_t     type;
    uint32_t    len;
    uint64_t    xfer;
};

/* what both sides must agree on before a page can be copied as is */
struct pd_layout {
    uint32_t    num_layers;
    uint32_t    kv_heads;
    uint32_t    head_dim;
    uint32_t    dtype_bytes;
    uint32_t    block_tokens;
};

struct pd_hello {
    uint32_t            version;
    uint64_t            layout_hash;
    struct pd_layout    layout;
    uint32_t            transports;     /* HELLO: offered; OK: chosen */
    char                worker_id[PD_ID_MAX];
    /* where the pages live, for choosing a transport: the machine, and
     * the GPU when they are in device memory */
    uint64_t            host_id;
    uint32_t            on_device;
    uint8_t             device_uuid[16];
};

/* PREFILL: compute tokens[0, n_tokens) and push the KV of blocks
 * [first_block, first_block + n_dst) into the decode worker's dst blocks */
struct pd_prefill_msg {
    uint32_t        n_tokens;
    uint32_t        first_block;
    uint32_t        n_dst;
    uint32_t        deadline_ms;    /* from receipt; the prefill side's lease */
    const int32_t  *tokens;         /* point into the received payload */
    const int32_t  *dst_blocks;
    /* optional: the gateway prefix keys of the request and how many prompt
     * blocks each depends on, for the prefill worker's cache events */
    uint32_t        nkeys;
    const uint64_t *keys;           /* encoding side */
    const uint32_t *cover;          /* encoding side */
    const uint8_t  *keys_raw;       /* decoding side: nkeys u64 then nkeys u32 */
};

/* one run of bytes in a DATA frame: dst_block's bytes [offset, offset+len)
 * (a run may continue into the following blocks when they are consecutive
 * in the destination pool) */
struct pd_seg {
    uint32_t    dst_block;
    uint32_t    offset;
    uint32_t    len;
};

struct pd_done_msg {
    uint64_t    last_layer_ns;      /* CLOCK_MONOTONIC of the last layer */
    uint64_t    bytes;              /* payload bytes of the transfer */
    uint64_t    bytes_before_last;  /* of which written before it */
    uint32_t    prefill_hit_tokens; /* the prefill side's own cache hits */
};

void pd_layout_of(struct pd_layout *l, const struct kv_geometry *geo);
uint64_t pd_layout_hash(const struct pd_layout *l);
/* "layers=32 kv_heads=8 head_dim=128 dtype_bytes=2 block_tokens=16" */
int pd_layout_str(const struct pd_layout *l, char *buf, size_t size);

void pd_put_hdr(uint8_t *p, uint8_t type, uint32_t len, uint64_t xfer);
void pd_get_hdr(const uint8_t *p, struct pd_frame_hdr *h);

/* Payload encoders write into buf (room for the returned size) and return
 * the payload length. */
size_t pd_hello_size(void);
size_t pd_put_hello(uint8_t *buf, const struct pd_hello *m);
size_t pd_prefill_size(uint32_t n_tokens, uint32_t n_dst, uint32_t nkeys);
size_t pd_put_prefill(uint8_t *buf, const struct pd_prefill_msg *m);
size_t pd_done_size(void);
size_t pd_put_done(uint8_t *buf, const struct pd_done_msg *m);
void pd_put_seg(uint8_t *p, const struct pd_seg *s);

/* Decoders: 0, or -1 when the payload is malformed. */
int pd_get_hello(const uint8_t *buf, size_t len, struct pd_hello *m);
int pd_get_prefill(const uint8_t *buf, size_t len, struct pd_prefill_msg *m);
int pd_get_done(const uint8_t *buf, size_t len, struct pd_done_msg *m);
void pd_get_seg(const uint8_t *p, struct pd_seg *s);

uint32_t pd_le32(const uint8_t *p);
uint64_t pd_le64(const uint8_t *p);
void pd_put32(uint8_t *p, uint32_t v);
void pd_put64(uint8_t *p, uint64_t v);

#endif
