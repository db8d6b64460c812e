/*
 * Numeric kernels of the CPU backend.  Plain loops written so that GCC
 * vectorises them (-O3 here; fp-contract lets it use FMA), each hot one
 * cloned for AVX2/FMA/F16C machines with a baseline fallback.
 */

#pragma GCC optimize("O3", "fp-contract=fast")

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

static inline float dot_inline(const float *a, const float *b, int n)
{
    /* four partial sums: shorter dependency chains, vector-friendly */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s;
    int i = 0;

    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    s = (s0 + s1) + (s2 + s3);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
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

    for (int r = r0; r < r1; r++) {
        const float *row;

        if (w->type == GGML_F32) {
            row = (const float *) w->data + (size_t) r * (size_t) cols;
        } else {
            row_to_f32(w, r, scratch);
            row = scratch;
        }
        for (int t = 0; t < n; t++)
            y[(size_t) t * (size_t) y_stride + (size_t) r]
                = dot_inline(row, x + (size_t) t * (size_t) cols, cols);
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
