/*
 * GGUF v3 reader.  Parsing walks a bounded cursor; every length is checked
 * against the bytes left before anything is read or pointed at.
 */

#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC          0x46554747u     /* "GGUF" read little-endian */
#define MAX_NAME_BYTES      4096
#define MAX_ARRAY_DEPTH     4

struct cursor {
    const uint8_t  *p;
    const uint8_t  *end;
    char           *err;
    int             err_len;
    bool            failed;
};

static bool fail(struct cursor *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool fail(struct cursor *c, const char *fmt, ...)
{
    va_list ap;

    if (!c->failed) {
        va_start(ap, fmt);
        vsnprintf(c->err, (size_t) c->err_len, fmt, ap);
        va_end(ap);
    }
    c->failed = true;
    return false;
}

static uint64_t left(const struct cursor *c)
{
    return (uint64_t) (c->end - c->p);
}

static bool take(struct cursor *c, void *out, size_t n, const char *what)
{
    if (left(c) < n)
        return fail(c, "truncated GGUF file: %s runs past the end", what);
    memcpy(out, c->p, n);
    c->p += n;
    return true;
}

static bool take_str(struct cursor *c, struct gguf_str *s, const char *what)
{
    uint64_t len = 0;

    if (!take(c, &len, 8, what))
        return false;
    if (len > left(c))
        return fail(c, "bad GGUF file: %s length %llu exceeds the file",
                    what, (unsigned long long) len);
    s->p = (const char *) c->p;
    s->len = len;
    c->p += len;
    return true;
}

static const uint64_t scalar_size[GGUF_TYPE_COUNT] = {
    [GGUF_U8] = 1, [GGUF_I8] = 1, [GGUF_U16] = 2, [GGUF_I16] = 2,
    [GGUF_U32] = 4, [GGUF_I32] = 4, [GGUF_F32] = 4, [GGUF_BOOL] = 1,
    [GGUF_U64] = 8, [GGUF_I64] = 8, [GGUF_F64] = 8,
};

/* Skip over one value of `type`, checking it fits. */
static bool skip_value(struct cursor *c, uint32_t type, int depth)
{
    if (type >= GGUF_TYPE_COUNT)
        return fail(c, "bad GGUF file: unknown value type %u", type);
    if (type == GGUF_STRING) {
        struct gguf_str s;
        return take_str(c, &s, "string value");
    }
    if (type == GGUF_ARRAY) {
        uint32_t elem = 0;
        uint64_t count = 0;

        if (depth >= MAX_ARRAY_DEPTH)
            return fail(c, "bad GGUF file: arrays nested too deeply");
        if (!take(c, &elem, 4, "array type") || !take(c, &count, 8, "array length"))
            return false;
        if (elem >= GGUF_TYPE_COUNT)
            return fail(c, "bad GGUF file: unknown array element type %u", elem);
        if (elem != GGUF_STRING && elem != GGUF_ARRAY) {
            if (count > left(c) / scalar_size[elem])
                return fail(c, "bad GGUF file: array of %llu elements exceeds "
                            "the file", (unsigned long long) count);
            c->p += count * scalar_size[elem];
            return true;
        }
        /* every element takes at least 8 bytes: a cheap bound first */
        if (count > left(c) / 8)
            return fail(c, "bad GGUF file: array of %llu elements exceeds "
                        "the file", (unsigned long long) count);
        for (uint64_t i = 0; i < count; i++)
            if (!skip_value(c, elem, depth + 1))
                return false;
        return true;
    }
    if (left(c) < scalar_size[type])
        return fail(c, "truncated GGUF file: value runs past the end");
    c->p += scalar_size[type];
    return true;
}

static bool parse_kv(struct cursor *c, struct gguf_kv *kv)
{
    uint32_t type = 0;

    if (!take_str(c, &kv->key, "metadata key") || !take(c, &type, 4, "value type"))
        return false;
    if (type >= GGUF_TYPE_COUNT)
        return fail(c, "bad GGUF file: key '%.*s' has unknown type %u",
                    (int) (kv->key.len > 64 ? 64 : kv->key.len), kv->key.p, type);
    kv->type = type;
    if (type == GGUF_ARRAY) {
        const uint8_t *start = c->p;
        uint32_t elem = 0;
        if (left(c) >= 12) {
            memcpy(&elem, c->p, 4);
            memcpy(&kv->count, c->p + 4, 8);
        }
        kv->elem_type = elem;
        if (!skip_value(c, type, 0))
            return false;
        kv->data = start + 12;
        return true;
    }
    kv->data = c->p;
    return skip_value(c, type, 0);
}

const char *ggml_type_name(enum ggml_type type)
{
    static const char *const names[] = {
        [0] = "F32", [1] = "F16", [2] = "Q4_0", [3] = "Q4_1", [6] = "Q5_0",
        [7] = "Q5_1", [8] = "Q8_0", [9] = "Q8_1", [10] = "Q2_K", [11] = "Q3_K",
        [12] = "Q4_K", [13] = "Q5_K", [14] = "Q6_K", [15] = "Q8_K",
        [16] = "IQ2_XXS", [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S",
        [20] = "IQ4_NL", [21] = "IQ3_S", [22] = "IQ2_S", [23] = "IQ4_XS",
        [24] = "I8", [25] = "I16", [26] = "I32", [27] = "I64", [28] = "F64",
        [29] = "IQ1_M", [30] = "BF16",
    };

    if ((unsigned) type < sizeof(names) / sizeof(names[0]) && names[type])
        return names[type];
    return "unknown";
}

uint64_t ggml_row_bytes(enum ggml_type type, int64_t n)
{
    if (n < 0)
        return 0;
    switch (type) {
    case GGML_F32:  return (uint64_t) n * 4;
    case GGML_F16:
    case GGML_BF16: return (uint64_t) n * 2;
    case GGML_Q8_0:
        return n % Q8_0_BLOCK ? 0 : (uint64_t) n / Q8_0_BLOCK * Q8_0_BLOCK_BYTES;
    }
    return 0;
}

static bool parse_tensor(struct cursor *c, struct gguf_tensor *t)
{
    uint32_t n_dims = 0, type = 0;
    uint64_t elems = 1;
    const uint64_t max_elems = 1ULL << 46;

    if (!take_str(c, &t->name, "tensor name") || !take(c, &n_dims, 4, "tensor rank"))
        return false;
    if (t->name.len == 0 || t->name.len > 256)
        return fail(c, "bad GGUF file: tensor name of %llu bytes",
                    (unsigned long long) t->name.len);
#define TNAME (int) t->name.len, t->name.p
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return fail(c, "bad GGUF file: tensor %.*s has %u dimensions", TNAME, n_dims);
    t->n_dims = (int) n_dims;
    for (int i = 0; i < GGUF_MAX_DIMS; i++)
        t->ne[i] = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        uint64_t ne = 0;
        if (!take(c, &ne, 8, "tensor shape"))
            return false;
        if (ne == 0 || ne > max_elems || elems > max_elems / ne)
            return fail(c, "bad GGUF file: tensor %.*s has an absurd shape "
                        "(dimension %u is %llu)", TNAME, i, (unsigned long long) ne);
        t->ne[i] = (int64_t) ne;
        elems *= ne;
    }
    if (!take(c, &type, 4, "tensor type"))
        return false;
    t->type = (enum ggml_type) type;
    if (type != GGML_F32 && type != GGML_F16 && type != GGML_BF16 && type != GGML_Q8_0)
        return fail(c, "tensor %.*s has ggml type %s (%u), which this build "
                    "does not support (F32, F16, BF16, Q8_0)", TNAME,
                    ggml_type_name(t->type), type);
    t->n_bytes = ggml_row_bytes(t->type, t->ne[0]) * (elems / (uint64_t) t->ne[0]);
    if (t->n_bytes == 0)
        return fail(c, "bad GGUF file: tensor %.*s: a row of %lld is not a whole "
                    "number of %s blocks", TNAME, (long long) t->ne[0],
                    ggml_type_name(t->type));
    /* the offset is relative to the data section, resolved later */
    {
        uint64_t off = 0;
        if (!take(c, &off, 8, "tensor offset"))
            return false;
        t->data = (const void *) (uintptr_t) off;
    }
#undef TNAME
    return true;
}

int gguf_parse(struct gguf_file *f, const void *bytes, size_t size,
    char *err, int err_len)
{
    struct cursor c = { bytes, (const uint8_t *) bytes + size, err, err_len, false };
    uint32_t magic = 0;
    uint64_t data_start;
    int64_t align = 32;

    memset(f, 0, sizeof(*f));
    f->map = bytes;
    f->size = size;
    if (!take(&c, &magic, 4, "magic") || magic != GGUF_MAGIC) {
        snprintf(err, (size_t) err_len, "not a GGUF file (bad magic)");
        return -1;
    }
    if (!take(&c, &f->version, 4, "version") || !take(&c, &f->n_tensors, 8, "tensor count")
        || !take(&c, &f->n_kv, 8, "key count"))
        return -1;
    if (f->version != 3 && f->version != 2) {
        snprintf(err, (size_t) err_len, "unsupported GGUF version %u (expected 3)",
                 f->version);
        return -1;
    }
    /* each key takes >= 12 bytes and each tensor >= 28: bound the counts
     * before allocating for them */
    if (f->n_kv > left(&c) / 12 || f->n_tensors > left(&c) / 28) {
        snprintf(err, (size_t) err_len, "bad GGUF file: %llu keys and %llu "
                 "tensors cannot fit in %zu bytes", (unsigned long long) f->n_kv,
                 (unsigned long long) f->n_tensors, size);
        return -1;
    }
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof(*f->kv));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(*f->tensors));
    if (f->kv == NULL || f->tensors == NULL) {
        snprintf(err, (size_t) err_len, "out of memory reading the GGUF header");
        goto bad;
    }
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (!parse_kv(&c, &f->kv[i]))
            goto bad;
    if (gguf_get_int(f, "general.alignment", &align)
        && (align < 1 || align > 65536 || (align & (align - 1)) != 0)) {
        snprintf(err, (size_t) err_len, "bad GGUF file: general.alignment %lld "
                 "is not a power of two", (long long) align);
        goto bad;
    }
    f->alignment = (uint64_t) align;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (!parse_tensor(&c, &f->tensors[i]))
            goto bad;

    data_start = (uint64_t) (c.p - (const uint8_t *) bytes);
    data_start += (f->alignment - data_start % f->alignment) % f->alignment;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        uint64_t off = (uint64_t) (uintptr_t) t->data;

        if (off % f->alignment != 0 || data_start > size
            || off > size - data_start || t->n_bytes > size - data_start - off) {
            snprintf(err, (size_t) err_len, "bad GGUF file: tensor %.*s "
                     "(offset %llu, %llu bytes) lies outside the file's %zu "
                     "bytes or is misaligned", (int) t->name.len, t->name.p,
                     (unsigned long long) off, (unsigned long long) t->n_bytes, size);
            goto bad;
        }
        t->data = (const uint8_t *) bytes + data_start + off;
    }
    return 0;

bad:
    free(f->kv);
    free(f->tensors);
    f->kv = NULL;
    f->tensors = NULL;
    return -1;
}

int gguf_open(struct gguf_file *f, const char *path, char *err, int err_len)
{
    struct stat st;
    void *map;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    memset(f, 0, sizeof(*f));
    if (fd < 0) {
        snprintf(err, (size_t) err_len, "cannot open model %s: %s", path,
                 strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || st.st_size < 24) {
        snprintf(err, (size_t) err_len, "model %s: not a GGUF file (%lld bytes)",
                 path, (long long) st.st_size);
        close(fd);
        return -1;
    }
    map = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, (size_t) err_len, "cannot map model %s: %s", path,
                 strerror(errno));
        return -1;
    }
    if (gguf_parse(f, map, (size_t) st.st_size, err, err_len) != 0) {
        munmap(map, (size_t) st.st_size);
        return -1;
    }
    return 0;
}

void gguf_close(struct gguf_file *f)
{
    if (f->map)
        munmap((void *) f->map, f->size);
    free(f->kv);
    free(f->tensors);
    memset(f, 0, sizeof(*f));
}

/* ------------------------------------------------------------------------ */
/* lookups */

bool gguf_str_eq(struct gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.p, c, n) == 0;
}

const struct gguf_kv *gguf_find(const struct gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key))
            return &f->kv[i];
    return NULL;
}

const struct gguf_tensor *gguf_tensor(const struct gguf_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}

bool gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    const uint8_t *d;

    if (kv == NULL)
        return false;
    d = kv->data;
    switch (kv->type) {
    case GGUF_U8:  *out = *d; return true;
    case GGUF_I8:  *out = (int8_t) *d; return true;
    case GGUF_U16: { uint16_t v; memcpy(&v, d, 2); *out = v; return true; }
    case GGUF_I16: { int16_t v; memcpy(&v, d, 2); *out = v; return true; }
    case GGUF_U32: { uint32_t v; memcpy(&v, d, 4); *out = v; return true; }
    case GGUF_I32: { int32_t v; memcpy(&v, d, 4); *out = v; return true; }
    case GGUF_I64: { int64_t v; memcpy(&v, d, 8); *out = v; return true; }
    case GGUF_U64: {
        uint64_t v;
        memcpy(&v, d, 8);
        if (v > INT64_MAX)
            return false;
        *out = (int64_t) v;
        return true;
    }
    default:
        return false;
    }
}

bool gguf_get_float(const struct gguf_file *f, const char *key, double *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    int64_t i;

    if (kv && kv->type == GGUF_F32) {
        float v;
        memcpy(&v, kv->data, 4);
        *out = v;
        return true;
    }
    if (kv && kv->type == GGUF_F64) {
        memcpy(out, kv->data, 8);
        return true;
    }
    if (gguf_get_int(f, key, &i)) {
        *out = (double) i;
        return true;
    }
    return false;
}

bool gguf_get_bool(const struct gguf_file *f, const char *key, bool *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);

    if (kv == NULL || kv->type != GGUF_BOOL)
        return false;
    *out = kv->data[0] != 0;
    return true;
}

bool gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
    const struct gguf_kv *kv = gguf_find(f, key);
    const uint8_t *p;

    if (kv == NULL || kv->type != GGUF_STRING)
        return false;
    p = kv->data;
    *out = gguf_next_str(&p);
    return true;
}

const struct gguf_kv *gguf_get_array(const struct gguf_file *f, const char *key,
    enum gguf_value_type type)
{
    const struct gguf_kv *kv = gguf_find(f, key);

    if (kv == NULL || kv->type != GGUF_ARRAY || kv->elem_type != type)
        return NULL;
    return kv;
}

struct gguf_str gguf_next_str(const uint8_t **cursor)
{
    struct gguf_str s;

    memcpy(&s.len, *cursor, 8);
    s.p = (const char *) *cursor + 8;
    *cursor += 8 + s.len;
    return s;
}
