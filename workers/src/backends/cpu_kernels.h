/*
 * The CPU backend's numeric kernels: weight rows to f32, dot products,
 * matrix-times-rows, RMSNorm, RoPE, softmax.  Weights stay in their file
 * type; a row is widened to f32 right before use (one row at a time, in a
 * per-thread scratch), so Q8_0/F16/BF16 tensors are never dequantised
 * whole.  The hot loops are compiled for x86-64-v3 (AVX2, FMA, F16C) and
 * for baseline x86-64, picked at load time (GCC target_clones).
 */

#ifndef LLMD_CPU_KERNELS_H
#define LLMD_CPU_KERNELS_H

#include <stdint.h>

#include "model/model.h"

/* y[t * y_stride + r] = W[r] . x[t * w->cols ...] for rows r in [r0, r1)
 * and tokens t in [0, n); scratch holds w->cols floats. */
void matmul_rows(const struct weight *w, const float *x, int n, float *y,
    int y_stride, int r0, int r1, float *scratch);

/* One weight row as f32 (a pointer into the file for F32 weights). */
const float *weight_row(const struct weight *w, int row, float *scratch);

float dot_f32(const float *a, const float *b, int n);
/* y += a * x */
void axpy_f32(float *y, float a, const float *x, int n);

void rmsnorm(float *out, const float *x, const float *weight, int n, float eps);
/* Rotate the first n_rot dims of each of n_heads heads of head_dim at pos.
 * inv_freq holds n_rot / 2 frequencies. */
void rope(float *x, int n_heads, int head_dim, int n_rot, const float *inv_freq,
    double pos, int neox);
/* In place; returns nothing, leaves probabilities summing to 1. */
void softmax(float *x, int n);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

#endif
