/*
 * A small GGUF v3 writer, for the tiny-model generator and loader tests.
 * Keys and tensors are collected in memory and written in one go.
 */

#ifndef LLMD_GGUF_WRITE_H
#define LLMD_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"

struct byte_buf {
    uint8_t    *p;
    size_t      len;
    size_t      cap;
};

struct gguf_writer {
    struct byte_buf kv, info, data;
    uint64_t        n_kv, n_tensors;
    bool            oom;
};

void gw_u32(struct gguf_writer *w, const char *key, uint32_t v);
void gw_f32(struct gguf_writer *w, const char *key, float v);
void gw_bool(struct gguf_writer *w, const char *key, bool v);
void gw_str(struct gguf_writer *w, const char *key, const char *v);
void gw_str_array(struct gguf_writer *w, const char *key, const char *const *v, int n);
void gw_f32_array(struct gguf_writer *w, const char *key, const float *v, int n);
void gw_i32_array(struct gguf_writer *w, const char *key, const int32_t *v, int n);
/* A tensor of ne0 x ne1 (ne1 = 1 for vectors) already in `type`. */
void gw_tensor(struct gguf_writer *w, const char *name, enum ggml_type type,
    int64_t ne0, int64_t ne1, const void *data, size_t bytes);

/* The whole file in memory (malloc'd), or NULL when out of memory. */
uint8_t *gw_finish(struct gguf_writer *w, size_t *size);
int gw_write_file(struct gguf_writer *w, const char *path, char *err, int err_len);
void gw_free(struct gguf_writer *w);

#endif
