/*
 * GGUF v3 reader: the model file is mapped read-only and every header field
 * is checked before use (string and array lengths, tensor ranks, types,
 * sizes and offsets), so a truncated or hostile file is a one-line error,
 * never an out-of-bounds read.  After gguf_open() succeeds, the accessors
 * below only touch bytes that were validated.
 *
 * Layout (little-endian):
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv x { string key, u32 type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to general.alignment (32), then the tensor data
 * ne[0] is the contiguous dimension: a matrix is ne[1] rows of ne[0].
 */

#ifndef LLMD_GGUF_H
#define LLMD_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_value_type {
    GGUF_U8 = 0, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32,
    GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_U64, GGUF_I64, GGUF_F64,
    GGUF_TYPE_COUNT
};

/* ggml tensor types this reader accepts */
enum ggml_type {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q8_0 = 8,
    GGML_BF16 = 30
};

#define GGUF_MAX_DIMS       4
#define Q8_0_BLOCK          32      /* weights per Q8_0 block */
#define Q8_0_BLOCK_BYTES    34      /* f16 scale + 32 int8 */

struct gguf_str {
    const char *p;          /* not NUL-terminated */
    uint64_t    len;
};

struct gguf_kv {
    struct gguf_str         key;
    enum gguf_value_type    type;
    /* scalars: the value's bytes; arrays: the first element */
    const uint8_t          *data;
    enum gguf_value_type    elem_type;  /* arrays only */
    uint64_t                count;      /* arrays only */
};

struct gguf_tensor {
    struct gguf_str     name;
    int                 n_dims;
    int64_t             ne[GGUF_MAX_DIMS];  /* unused dims are 1 */
    enum ggml_type      type;
    const void         *data;
    uint64_t            n_bytes;
};

struct gguf_file {
    const uint8_t      *map;
    size_t              size;
    uint32_t            version;
    struct gguf_kv     *kv;
    uint64_t            n_kv;
    struct gguf_tensor *tensors;
    uint64_t            n_tensors;
    uint64_t            alignment;
};

/* Map and validate a file; -1 with a one-line reason in err. */
int gguf_open(struct gguf_file *f, const char *path, char *err, int err_len);
/* The same checks on bytes already in memory (not copied; kept referenced). */
int gguf_parse(struct gguf_file *f, const void *bytes, size_t size,
    char *err, int err_len);
void gguf_close(struct gguf_file *f);

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key);
const struct gguf_tensor *gguf_tensor(const struct gguf_file *f,
    const char *name);

/* Typed reads; each returns false when the key is absent or of another
 * kind.  Integers of any width and sign are accepted when they fit. */
bool gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out);
bool gguf_get_float(const struct gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const struct gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const struct gguf_file *f, const char *key,
    struct gguf_str *out);
/* An array of `type` elements (count in *n); NULL when absent or other. */
const struct gguf_kv *gguf_get_array(const struct gguf_file *f,
    const char *key, enum gguf_value_type type);

/* Walk a validated string array: start with *cursor = kv->data. */
struct gguf_str gguf_next_str(const uint8_t **cursor);

/* Bytes of `n` elements of a ggml type (n a multiple of its block), or 0. */
uint64_t ggml_row_bytes(enum ggml_type type, int64_t n);
const char *ggml_type_name(enum ggml_type type);

/* "key" compared to a GGUF string */
bool gguf_str_eq(struct gguf_str s, const char *c);

#endif
