/*
 * Numeric kernels of the CPU backend.  Plain loops written so that GCC
 * vectorises them (-O3 here; fp-contract lets it use FMA), each hot one
 * cloned for AVX2/FMA/F16C machines with a baseline fallback.
 */

#pragma GCC optimize("O3", "fp-contract=fast")
/* the 32-byte vector helpers are inlined; their ABI never shows */
#pragma GCC diagnostic ignored "-Wpsabi"

#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))

/* ------------------------------------------------------------------------ */
/* number formats */

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t) (h & 0x8000) << 16, exp = (h >> 10) & 0x1f,
             man = h & 0x3ff, bits;
    float f;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (man << 13);         /* inf, nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {                                            /* subnormal */
        f = (float) man * (1.0f / 16777216.0f);         /* man * 2^-24 */
        return sign ? -f : f;
    }
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float f)
{
    _Float16 h = (_Float16) f;      /* round to nearest even */
    uint16_t out;

    memcpy(&out, &h, 2);
    return out;
}

float bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t) h << 16;
    float f;

    memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_bf16(float f)
{
    uint32_t bits;

    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffff) > 0x7f800000)
        return (uint16_t) ((bits >> 16) | 64);          /* quiet nan */
    return (uint16_t) ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------------ */
/* rows and dots; static inline so the clones below get their own copies */

/* 8-float vectors: one AVX register in the x86-64-v3 clone, two SSE
 * registers in the baseline one */
typedef float v8sf __attribute__((vector_size(32)));

static inline v8sf load8(const float *p)
{
    v8sf v;

    memcpy(&v, p, sizeof(v));
    return v;
}

static inline float hsum8(v8sf v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline float dot_inline(const float *a, const float *b, int n)
{
    /* four independent accumulators hide the FMA latency */
    v8sf s0 = { 0 }, s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
    float s;
    int i = 0;

    for (; i + 32 <= n; i += 32) {
        s0 += load8(a + i) * load8(b + i);
        s1 += load8(a + i + 8) * load8(b + i + 8);
        s2 += load8(a + i + 16) * load8(b + i + 16);
        s3 += load8(a + i + 24) * load8(b + i + 24);
    }
    for (; i + 8 <= n; i += 8)
        s0 += load8(a + i) * load8(b + i);
    s = hsum8((s0 + s1) + (s2 + s3));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* one weight row against four input rows: each weight is loaded once */
static inline void dot4_inline(const float *w, const float *x, size_t stride,
    int n, float *out)
{
    v8sf s0 = { 0 }, s1 = { 0 }, s2 = { 0 }, s3 = { 0 };
    int i = 0;

    for (; i + 8 <= n; i += 8) {
        v8sf wv = load8(w + i);
        s0 += wv * load8(x + i);
        s1 += wv * load8(x + stride + i);
        s2 += wv * load8(x + 2 * stride + i);
        s3 += wv * load8(x + 3 * stride + i);
    }
    out[0] = hsum8(s0);
    out[1] = hsum8(s1);
    out[2] = hsum8(s2);
    out[3] = hsum8(s3);
    for (; i < n; i++)
        for (int t = 0; t < 4; t++)
            out[t] += w[i] * x[t * stride + i];
}

/* a Q8_0 row against f32 input, dequantising block by block in registers */
static inline float dot_q8_0_inline(const uint8_t *row, const float *x, int n)
{
    v8sf acc0 = { 0 }, acc1 = { 0 };

    for (int k = 0; k < n / Q8_0_BLOCK; k++, row += Q8_0_BLOCK_BYTES, x += Q8_0_BLOCK) {
        _Float16 d;
        const int8_t *q = (const int8_t *) (row + 2);
        float deq[Q8_0_BLOCK];
        v8sf s;

        /* many instructions per byte here: the out-of-order window alone
         * keeps too few cache lines in flight, so fetch ahead */
        __builtin_prefetch(row + 128 * Q8_0_BLOCK_BYTES);
        memcpy(&d, row, 2);
        for (int j = 0; j < Q8_0_BLOCK; j++)      /* vectorised widening */
            deq[j] = (float) q[j];
        s = load8(deq) * load8(x) + load8(deq + 8) * load8(x + 8);
        s += load8(deq + 16) * load8(x + 16) + load8(deq + 24) * load8(x + 24);
        /* alternate accumulators: two chains of dependent adds */
        if (k & 1)
            acc1 += (float) d * s;
        else
            acc0 += (float) d * s;
    }
    return hsum8(acc0 + acc1);
}

static inline void row_to_f32(const struct weight *w, int row, float *out)
{
    int n = w->cols;

    switch (w->type) {
    case GGML_F32:
        memcpy(out, (const float *) w->data + (size_t) row * n, sizeof(float) * (size_t) n);
        return;
    case GGML_F16: {
        const _Float16 *h = (const _Float16 *) w->data + (size_t) row * n;
        for (int i = 0; i < n; i++)
            out[i] = (float) h[i];
        return;
    }
    case GGML_BF16: {
        const uint16_t *h = (const uint16_t *) w->data + (size_t) row * n;
        for (int i = 0; i < n; i++) {
            uint32_t bits = (uint32_t) h[i] << 16;
            memcpy(&out[i], &bits, 4);
        }
        return;
    }
    case GGML_Q8_0: {
        /* blocks of 32: an f16 scale, then 32 signed bytes */
        const uint8_t *b = (const uint8_t *) w->data
                           + (size_t) row * (size_t) (n / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
        for (int k = 0; k < n / Q8_0_BLOCK; k++, b += Q8_0_BLOCK_BYTES) {
            _Float16 d;
            const int8_t *q = (const int8_t *) (b + 2);
            memcpy(&d, b, 2);
            for (int j = 0; j < Q8_0_BLOCK; j++)
                out[k * Q8_0_BLOCK + j] = (float) d * (float) q[j];
        }
        return;
    }
    }
}

HOT float dot_f32(const float *a, const float *b, int n)
{
    return dot_inline(a, b, n);
}

HOT void axpy_f32(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

const float *weight_row(const struct weight *w, int row, float *scratch)
{
    if (w->type == GGML_F32)
        return (const float *) w->data + (size_t) row * (size_t) w->cols;
    row_to_f32(w, row, scratch);
    return scratch;
}

HOT void matmul_rows(const struct weight *w, const float *x, int n, float *y,
    int y_stride, int r0, int r1, float *scratch)
{
    int cols = w->cols;

    size_t xs = (size_t) cols;

    if (n == 1 && w->type == GGML_Q8_0 && cols % Q8_0_BLOCK == 0) {
        size_t row_bytes = (size_t) (cols / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
        for (int r = r0; r < r1; r++)
            y[r] = dot_q8_0_inline((const uint8_t *) w->data + (size_t) r * row_bytes, x, cols);
        return;
    }
    for (int r = r0; r < r1; r++) {
        const float *row;
        int t = 0;

        if (w->type == GGML_F32) {
            row = (const float *) w->data + (size_t) r * (size_t) cols;
        } else {
            row_to_f32(w, r, scratch);
            row = scratch;
        }
        for (; t + 4 <= n; t += 4) {
            float out[4];
            dot4_inline(row, x + (size_t) t * xs, xs, cols, out);
            for (int k = 0; k < 4; k++)
                y[(size_t) (t + k) * (size_t) y_stride + (size_t) r] = out[k];
        }
        for (; t < n; t++)
            y[(size_t) t * (size_t) y_stride + (size_t) r]
                = dot_inline(row, x + (size_t) t * xs, cols);
    }
}

/* ------------------------------------------------------------------------ */

void rmsnorm(float *out, const float *x, const float *weight, int n, float eps)
{
    double ss = 0;
    float scale;

    for (int i = 0; i < n; i++)
        ss += (double) x[i] * x[i];
    scale = (float) (1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++)
        out[i] = weight[i] * (scale * x[i]);
}

void rope(float *x, int n_heads, int head_dim, int n_rot, const float *inv_freq,
    double pos, int neox)
{
    int half = n_rot / 2;

    for (int i = 0; i < half; i++) {
        double angle = pos * inv_freq[i];
        float c = (float) cos(angle), s = (float) sin(angle);

        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t) h * head_dim;
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * c - x1 * s;
            v[b] = x0 * s + x1 * c;
        }
    }
}

void softmax(float *x, int n)
{
    float max = x[0], sum = 0;

    for (int i = 1; i < n; i++)
        if (x[i] > max)
            max = x[i];
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++)
        x[i] /= sum;
}
