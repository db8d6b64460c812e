/*
 * Element-wise and per-row kernels of the cuda backend: RoPE angles,
 * embedding, RMSNorm, the QKV epilogue (bias, RoPE, KV page store) and
 * SwiGLU.  The GEMMs between them are cuBLAS calls (cuda_forward.c);
 * attention and sampling have their own files.
 *
 * One block per row where a row needs a reduction (RMSNorm) or touches a
 * row's worth of scattered addresses (embedding, QKV); grid-stride loops
 * for the purely element-wise ones.
 */

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_api.h"
#include "cuda_plan_layout.h"
#include "cuda_reduce.cuh"

typedef __nv_bfloat16 bf16;

#define ROW_THREADS 256

static int grid_for(long long n, int threads)
{
    long long blocks = (n + threads - 1) / threads;

    /* enough blocks to fill any current GPU; the loops stride over more */
    return (int) (blocks < 1 ? 1 : blocks > 8192 ? 8192 : blocks);
}

/* ------------------------------------------------------------------------ */

__global__ void rope_table_kernel(const int32_t *plan, const float *inv_freq,
    int half, float scale, float2 *table)
{
    const int32_t *pos = plan + plan[PLAN_ROW_POS];
    long long n = (long long) plan[PLAN_N_ROWS] * half;

    for (long long k = blockIdx.x * (long long) blockDim.x + threadIdx.x; k < n;
         k += (long long) gridDim.x * blockDim.x) {
        int row = (int) (k / half), i = (int) (k % half);
        /* double, as the cpu backend: at position 100k a float angle would
         * be off by a hundredth of a radian */
        double angle = (double) pos[row] / scale * (double) inv_freq[i], sn, cs;

        sincos(angle, &sn, &cs);
        table[k] = make_float2((float) cs, (float) sn);
    }
}

extern "C" void cuda_rope_table(cudaStream_t s, const int32_t *plan,
    const float *inv_freq, struct cuda_dims d, float *table, int n_rows)
{
    int half = d.n_rot / 2;

    rope_table_kernel<<<grid_for((long long) n_rows * half, ROW_THREADS),
                        ROW_THREADS, 0, s>>>(plan, inv_freq, half, d.rope_scale,
                                             (float2 *) table);
}

/* ------------------------------------------------------------------------ */

__global__ void embed_kernel(const int32_t *plan, const bf16 *table, int dim,
    int vocab, float *x)
{
    int row = blockIdx.x, tok;
    const bf16 *e;

    if (row >= plan[PLAN_N_ROWS])
        return;
    tok = plan[plan[PLAN_ROW_TOKEN] + row];
    if (tok < 0 || tok >= vocab)
        tok = 0;
    e = table + (size_t) tok * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t) row * dim + i] = __bfloat162float(e[i]);
}

extern "C" void cuda_embed(cudaStream_t s, const int32_t *plan,
    const uint16_t *table, struct cuda_dims d, float *x, int n_rows)
{
    embed_kernel<<<n_rows, ROW_THREADS, 0, s>>>(plan, (const bf16 *) table, d.dim,
                                                d.vocab, x);
}

/* ------------------------------------------------------------------------ */

__global__ void rmsnorm_kernel(const int32_t *plan, int sampled, const float *x,
    const float *w, int dim, float eps, bf16 *out)
{
    __shared__ float scratch[33];
    int i = blockIdx.x;
    int n = sampled ? plan[PLAN_N_SAMPLE] : plan[PLAN_N_ROWS];
    const float *xr;
    float ss = 0, scale;

    if (i >= n)             /* the whole block leaves: no barrier skipped */
        return;
    xr = x + (size_t) (sampled ? plan[plan[PLAN_SAMPLE_ROW] + i] : i) * dim;
    for (int k = threadIdx.x; k < dim; k += blockDim.x)
        ss += xr[k] * xr[k];
    ss = block_sum(ss, scratch);
    scale = rsqrtf(ss / dim + eps);
    for (int k = threadIdx.x; k < dim; k += blockDim.x)
        out[(size_t) i * dim + k] = __float2bfloat16_rn(w[k] * (scale * xr[k]));
}

extern "C" void cuda_rmsnorm(cudaStream_t s, const int32_t *plan, int sampled,
    const float *x, const float *w, struct cuda_dims d, uint16_t *out, int n)
{
    rmsnorm_kernel<<<n, ROW_THREADS, 0, s>>>(plan, sampled, x, w, d.dim, d.eps,
                                             (bf16 *) out);
}

/* ------------------------------------------------------------------------ */

/* Pair i of a head: rotated pairs first (adjacent or NEOX halves), then the
 * dims past n_rot in adjacent pairs, left as they are. */
__device__ static inline void pair_of(int i, int half_rot, int n_rot, int neox,
    int *a, int *b)
{
    if (i < half_rot) {
        *a = neox ? i : 2 * i;
        *b = neox ? i + half_rot : 2 * i + 1;
    } else {
        *a = n_rot + 2 * (i - half_rot);
        *b = *a + 1;
    }
}

__global__ void qkv_store_kernel(const int32_t *plan, const float *qkv,
    const float *bias, const float2 *rope, struct cuda_dims d, int layer,
    bf16 *pool, float *q_out)
{
    int row = blockIdx.x, hd = d.head_dim, half_hd = hd / 2, half_rot = d.n_rot / 2;
    int q_dim = d.n_heads * hd, kv_dim = d.n_kv_heads * hd;
    int pairs = (d.n_heads + d.n_kv_heads) * half_hd, flat, block, slot;
    const float *in;
    const float2 *cs;
    bf16 *k_page, *v_page;

    if (row >= plan[PLAN_N_ROWS])
        return;
    in = qkv + (size_t) row * (q_dim + 2 * kv_dim);
    cs = rope + (size_t) row * half_rot;
    flat = plan[plan[PLAN_ROW_SLOT] + row];
    block = flat / d.block_tokens;
    slot = flat % d.block_tokens;
    /* [K, V][block_tokens][kv_heads][head_dim] within the block's layer */
    k_page = pool + block * d.block_elems + layer * d.layer_elems
             + (long long) slot * kv_dim;
    v_page = k_page + (long long) d.block_tokens * kv_dim;

    for (int k = threadIdx.x; k < pairs; k += blockDim.x) {
        int head = k / half_hd, i = k % half_hd, a, b, base = head * hd;
        float x0, x1;

        pair_of(i, half_rot, d.n_rot, d.neox, &a, &b);
        x0 = in[base + a];
        x1 = in[base + b];
        if (bias) {
            x0 += bias[base + a];
            x1 += bias[base + b];
        }
        if (i < half_rot) {
            float c = cs[i].x, sn = cs[i].y, y0 = x0 * c - x1 * sn;

            x1 = x0 * sn + x1 * c;
            x0 = y0;
        }
        if (head < d.n_heads) {     /* q heads, then k heads: both at head * hd */
            q_out[(size_t) row * q_dim + base + a] = x0;
            q_out[(size_t) row * q_dim + base + b] = x1;
        } else {
            k_page[base - q_dim + a] = __float2bfloat16_rn(x0);
            k_page[base - q_dim + b] = __float2bfloat16_rn(x1);
        }
    }
    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        float v = in[q_dim + kv_dim + j];

        if (bias)
            v += bias[q_dim + kv_dim + j];
        v_page[j] = __float2bfloat16_rn(v);
    }
}

extern "C" void cuda_qkv_store(cudaStream_t s, const int32_t *plan,
    const float *qkv, const float *bias, const float *rope, struct cuda_dims d,
    int layer, uint16_t *pool, float *q_out, int n_rows)
{
    qkv_store_kernel<<<n_rows, ROW_THREADS, 0, s>>>(plan, qkv, bias,
        (const float2 *) rope, d, layer, (bf16 *) pool, q_out);
}

/* ------------------------------------------------------------------------ */

__global__ void swiglu_kernel(const int32_t *plan, const float *gu, int hidden,
    bf16 *h)
{
    long long n = (long long) plan[PLAN_N_ROWS] * hidden;

    for (long long k = blockIdx.x * (long long) blockDim.x + threadIdx.x; k < n;
         k += (long long) gridDim.x * blockDim.x) {
        long long row = k / hidden, j = k % hidden;
        float g = gu[row * 2 * hidden + j], u = gu[row * 2 * hidden + hidden + j];

        h[k] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" void cuda_swiglu(cudaStream_t s, const int32_t *plan, const float *gu,
    struct cuda_dims d, uint16_t *h, int n_rows)
{
    swiglu_kernel<<<grid_for((long long) n_rows * d.hidden, ROW_THREADS),
                    ROW_THREADS, 0, s>>>(plan, gu, d.hidden, (bf16 *) h);
}
