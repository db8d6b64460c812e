#include "gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 32

static void put(struct gguf_writer *w, struct byte_buf *b, const void *p, size_t n)
{
    if (w->oom || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        uint8_t *q;
        while (cap < b->len + n)
            cap *= 2;
        if ((q = realloc(b->p, cap)) == NULL) {
            w->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_u32(struct gguf_writer *w, struct byte_buf *b, uint32_t v)
{
    put(w, b, &v, 4);
}

static void put_u64(struct gguf_writer *w, struct byte_buf *b, uint64_t v)
{
    put(w, b, &v, 8);
}

static void put_str(struct gguf_writer *w, struct byte_buf *b, const char *s)
{
    put_u64(w, b, strlen(s));
    put(w, b, s, strlen(s));
}

static void key(struct gguf_writer *w, const char *k, enum gguf_value_type t)
{
    put_str(w, &w->kv, k);
    put_u32(w, &w->kv, t);
    w->n_kv++;
}

void gw_u32(struct gguf_writer *w, const char *k, uint32_t v)
{
    key(w, k, GGUF_U32);
    put_u32(w, &w->kv, v);
}

void gw_f32(struct gguf_writer *w, const char *k, float v)
{
    key(w, k, GGUF_F32);
    put(w, &w->kv, &v, 4);
}

void gw_bool(struct gguf_writer *w, const char *k, bool v)
{
    uint8_t b = v;

    key(w, k, GGUF_BOOL);
    put(w, &w->kv, &b, 1);
}

void gw_str(struct gguf_writer *w, const char *k, const char *v)
{
    key(w, k, GGUF_STRING);
    put_str(w, &w->kv, v);
}

static void array_head(struct gguf_writer *w, const char *k,
    enum gguf_value_type elem, int n)
{
    key(w, k, GGUF_ARRAY);
    put_u32(w, &w->kv, elem);
    put_u64(w, &w->kv, (uint64_t) n);
}

void gw_str_array(struct gguf_writer *w, const char *k, const char *const *v, int n)
{
    array_head(w, k, GGUF_STRING, n);
    for (int i = 0; i < n; i++)
        put_str(w, &w->kv, v[i]);
}

void gw_f32_array(struct gguf_writer *w, const char *k, const float *v, int n)
{
    array_head(w, k, GGUF_F32, n);
    put(w, &w->kv, v, sizeof(float) * (size_t) n);
}

void gw_i32_array(struct gguf_writer *w, const char *k, const int32_t *v, int n)
{
    array_head(w, k, GGUF_I32, n);
    put(w, &w->kv, v, sizeof(int32_t) * (size_t) n);
}

void gw_tensor(struct gguf_writer *w, const char *name, enum ggml_type type,
    int64_t ne0, int64_t ne1, const void *data, size_t bytes)
{
    static const uint8_t zeros[ALIGN];
    uint32_t n_dims = ne1 > 1 ? 2 : 1;

    put_str(w, &w->info, name);
    put_u32(w, &w->info, n_dims);
    put_u64(w, &w->info, (uint64_t) ne0);
    if (n_dims == 2)
        put_u64(w, &w->info, (uint64_t) ne1);
    put_u32(w, &w->info, type);
    put_u64(w, &w->info, w->data.len);
    put(w, &w->data, data, bytes);
    put(w, &w->data, zeros, (ALIGN - w->data.len % ALIGN) % ALIGN);
    w->n_tensors++;
}

uint8_t *gw_finish(struct gguf_writer *w, size_t *size)
{
    struct byte_buf out = { 0 };
    static const uint8_t zeros[ALIGN];

    put(w, &out, "GGUF", 4);
    put_u32(w, &out, 3);
    put_u64(w, &out, w->n_tensors);
    put_u64(w, &out, w->n_kv);
    put(w, &out, w->kv.p, w->kv.len);
    put(w, &out, w->info.p, w->info.len);
    put(w, &out, zeros, (ALIGN - out.len % ALIGN) % ALIGN);
    put(w, &out, w->data.p, w->data.len);
    if (w->oom) {
        free(out.p);
        return NULL;
    }
    *size = out.len;
    return out.p;
}

int gw_write_file(struct gguf_writer *w, const char *path, char *err, int err_len)
{
    size_t size;
    uint8_t *bytes = gw_finish(w, &size);
    FILE *f;

    if (bytes == NULL) {
        snprintf(err, (size_t) err_len, "out of memory");
        return -1;
    }
    f = fopen(path, "wb");
    if (f == NULL || fwrite(bytes, 1, size, f) != size || fclose(f) != 0) {
        snprintf(err, (size_t) err_len, "cannot write %s: %s", path, strerror(errno));
        free(bytes);
        return -1;
    }
    free(bytes);
    return 0;
}

void gw_free(struct gguf_writer *w)
{
    free(w->kv.p);
    free(w->info.p);
    free(w->data.p);
    memset(w, 0, sizeof(*w));
}
