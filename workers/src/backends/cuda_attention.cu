/*
 * Paged attention over the engine's KV blocks (bf16 pages, layout of
 * kv_blocks.h), reading every key through the sequence's block table.
 * Scores are kept in log2 units (q is pre-scaled by log2(e) / sqrt(d)) so
 * the softmax uses exp2.
 *
 * attention_rows: one query row per block of ATT_THREADS, for decode and
 *   for prompt rows of head sizes without a tiled kernel.  The keys are cut
 *   into splits (split-K) so that short batches over long contexts still
 *   fill the GPU; each block runs an online softmax over one split, its
 *   threads in groups of `tg` (tg * 8 >= head_dim, 16-byte loads) each
 *   taking one key at a time, then merges its groups and writes (max, sum,
 *   unnormalised output) to `partials`; attention_merge combines the splits.
 *
 * attention_tiles: chunked prefill, causal, PLAN_TILE_ROWS queries x
 *   TILE_KEYS keys per iteration on tensor cores (WMMA bf16 16x16x16, f32
 *   accumulators), online softmax per row, the output accumulator in shared
 *   memory so that rows can be rescaled; keys come from the pages, so a
 *   cached prefix is read exactly like the chunk's own keys.
 */

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include "cuda_api.h"
#include "cuda_plan_layout.h"

typedef __nv_bfloat16 bf16;

#define LOG2E       1.4426950408889634f
#define FULL_MASK   0xffffffffu
#define ATT_THREADS 128
#define TILE_KEYS   64
#define TILE_THREADS 128        /* 4 warps, 16 query rows each */

/* 8 bf16 from a 16-byte aligned address, widened */
__device__ static inline void load8(const bf16 *p, float *out)
{
    uint4 raw = *(const uint4 *) p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *) &raw;

    for (int j = 0; j < 4; j++) {
        float2 f = __bfloat1622float2(h[j]);
        out[2 * j] = f.x;
        out[2 * j + 1] = f.y;
    }
}

/* ------------------------------------------------------------------------ */
/* one query row per block, split-K */

__global__ void __launch_bounds__(ATT_THREADS) attention_rows_kernel(
    const int32_t *plan, const float *q, const bf16 *pool, struct cuda_dims d,
    int layer, float *partials)
{
    __shared__ float sm_m[ATT_THREADS], sm_l[ATT_THREADS], sm_w[ATT_THREADS];
    __shared__ __align__(16) float sm_acc[ATT_THREADS * 8];
    int a = blockIdx.x, h = blockIdx.y, split = blockIdx.z;
    int hd = d.head_dim, kv_dim = d.n_kv_heads * hd, bt = d.block_tokens;
    int tg = 1, lane, g, n_groups, d0, row, item, keys, t0, t1, kvh;
    const int32_t *att, *table;
    const bf16 *layer_base;
    float qv[8], acc[8], m = -INFINITY, l = 0, M, L;
    bool active;

    if (a >= plan[PLAN_N_ATT])
        return;
    att = plan + plan[PLAN_ATT] + PLAN_ATT_WORDS * a;
    row = att[0];
    item = att[1];
    keys = att[2];
    t0 = split * plan[PLAN_SPLIT_TOKENS];
    if (t0 >= keys)                 /* uniform: the whole block leaves */
        return;
    t1 = min(keys, t0 + plan[PLAN_SPLIT_TOKENS]);
    table = plan + plan[PLAN_TABLE] + (size_t) item * plan[PLAN_TABLE_STRIDE];
    kvh = h / (d.n_heads / d.n_kv_heads);
    layer_base = pool + (long long) layer * d.layer_elems + (long long) kvh * hd;

    while (tg * 8 < hd)
        tg <<= 1;
    lane = threadIdx.x % tg;
    g = threadIdx.x / tg;
    n_groups = ATT_THREADS / tg;
    d0 = lane * 8;
    active = d0 < hd;
    for (int j = 0; j < 8; j++) {
        acc[j] = 0;
        qv[j] = active ? q[(size_t) row * d.n_heads * hd + (size_t) h * hd + d0 + j]
                         * (rsqrtf((float) hd) * LOG2E) : 0;
    }

    /* every thread runs the same number of iterations: the shuffles below
     * need the whole warp */
    for (int base = t0; base < t1; base += n_groups) {
        int t = base + g;
        bool valid = t < t1;
        float s = 0, vv[8] = { 0 };

        if (valid && active) {
            const bf16 *kp = layer_base + (long long) table[t / bt] * d.block_elems
                             + (long long) (t % bt) * kv_dim + d0;
            float kk[8];

            load8(kp, kk);
            load8(kp + (long long) bt * kv_dim, vv);
            for (int j = 0; j < 8; j++)
                s += qv[j] * kk[j];
        }
        for (int o = tg / 2; o > 0; o >>= 1)
            s += __shfl_xor_sync(FULL_MASK, s, o);
        if (valid) {
            float m_new = fmaxf(m, s), corr = exp2f(m - m_new), p = exp2f(s - m_new);

            l = l * corr + p;
            for (int j = 0; j < 8; j++)
                acc[j] = acc[j] * corr + p * vv[j];
            m = m_new;
        }
    }

    /* merge the groups of this block */
    if (lane == 0) {
        sm_m[g] = m;
        sm_l[g] = l;
    }
    for (int j = 0; j < 8; j++)
        sm_acc[g * tg * 8 + d0 + j] = acc[j];
    __syncthreads();
    M = -INFINITY;
    for (int k = 0; k < n_groups; k++)
        M = fmaxf(M, sm_m[k]);
    if (threadIdx.x < n_groups)
        sm_w[threadIdx.x] = plan_merge_weight(sm_m[threadIdx.x], M);
    __syncthreads();
    L = 0;
    for (int k = 0; k < n_groups; k++)
        L += sm_l[k] * sm_w[k];
    {
        float *out = partials + ((size_t) (a * d.n_heads + h) * plan[PLAN_MAX_SPLITS]
                                 + split) * (hd + 2);

        for (int c = threadIdx.x; c < hd; c += ATT_THREADS) {
            float v = 0;
            for (int k = 0; k < n_groups; k++)
                v += sm_acc[k * tg * 8 + c] * sm_w[k];
            out[2 + c] = v;
        }
        if (threadIdx.x == 0) {
            out[0] = M;
            out[1] = L;
        }
    }
}

__global__ void __launch_bounds__(ATT_THREADS) attention_merge_kernel(
    const int32_t *plan, const float *partials, struct cuda_dims d, bf16 *out)
{
    int a = blockIdx.x, h = blockIdx.y, hd = d.head_dim, row, n_splits;
    const int32_t *att;
    const float *p;
    float M = -INFINITY, L = 0;

    if (a >= plan[PLAN_N_ATT])
        return;
    att = plan + plan[PLAN_ATT] + PLAN_ATT_WORDS * a;
    row = att[0];
    n_splits = plan_splits_of(att[2], plan[PLAN_SPLIT_TOKENS]);
    p = partials + (size_t) (a * d.n_heads + h) * plan[PLAN_MAX_SPLITS] * (hd + 2);
    for (int s = 0; s < n_splits; s++)
        M = fmaxf(M, p[s * (hd + 2)]);
    for (int s = 0; s < n_splits; s++)
        L += p[s * (hd + 2) + 1] * plan_merge_weight(p[s * (hd + 2)], M);
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float v = 0;
        for (int s = 0; s < n_splits; s++)
            v += p[s * (hd + 2) + 2 + c] * plan_merge_weight(p[s * (hd + 2)], M);
        out[(size_t) row * d.n_heads * hd + (size_t) h * hd + c]
            = __float2bfloat16_rn(L > 0 ? v / L : 0.0f);
    }
}

extern "C" void cuda_attention_rows(cudaStream_t s, const int32_t *plan,
    const float *q, const uint16_t *pool, struct cuda_dims d, int layer,
    float *partials, uint16_t *out, int n_att, int splits)
{
    dim3 grid(n_att, d.n_heads, splits), merge(n_att, d.n_heads);

    if (n_att == 0)
        return;
    attention_rows_kernel<<<grid, ATT_THREADS, 0, s>>>(plan, q, (const bf16 *) pool,
                                                      d, layer, partials);
    attention_merge_kernel<<<merge, ATT_THREADS, 0, s>>>(plan, partials, d,
                                                        (bf16 *) out);
}

/* ------------------------------------------------------------------------ */
/* tiled chunked prefill on tensor cores */

using namespace nvcuda;

template <int HD>
struct tile_smem {
    /* byte offsets of the shared arrays; every one a multiple of 128 */
    static constexpr int q = 0;                                     /* bf16 [64][HD] */
    static constexpr int k = q + PLAN_TILE_ROWS * HD * 2;           /* bf16 [64][HD] */
    static constexpr int v = k + TILE_KEYS * HD * 2;                /* bf16 [64][HD] */
    static constexpr int s = v + TILE_KEYS * HD * 2;                /* f32 [64][64] */
    static constexpr int p = s + PLAN_TILE_ROWS * TILE_KEYS * 4;    /* bf16 [64][64] */
    static constexpr int o = p + PLAN_TILE_ROWS * TILE_KEYS * 2;    /* f32 [64][HD] */
    static constexpr int stats = o + PLAN_TILE_ROWS * HD * 4;       /* f32 m, l, corr */
    static constexpr int bytes = stats + 3 * PLAN_TILE_ROWS * 4;
};

template <int HD>
__global__ void __launch_bounds__(TILE_THREADS) attention_tiles_kernel(
    const int32_t *plan, const float *q, const bf16 *pool, struct cuda_dims d,
    int layer, bf16 *out)
{
    typedef tile_smem<HD> L;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *sq = (bf16 *) (smem + L::q), *sk = (bf16 *) (smem + L::k);
    bf16 *sv = (bf16 *) (smem + L::v), *sp = (bf16 *) (smem + L::p);
    float *ss = (float *) (smem + L::s), *so = (float *) (smem + L::o);
    float *sm = (float *) (smem + L::stats), *sl = sm + PLAN_TILE_ROWS;
    float *sc = sl + PLAN_TILE_ROWS;
    int tile = blockIdx.x, h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int q_dim = d.n_heads * HD, kv_dim = d.n_kv_heads * HD, bt = d.block_tokens;
    int item, row0, pos0, n_rows, kv_end;
    const int32_t *tw, *table;
    const bf16 *layer_base;
    float qscale = rsqrtf((float) HD) * LOG2E;

    if (tile >= plan[PLAN_N_TILES])
        return;
    tw = plan + plan[PLAN_TILE] + PLAN_TILE_WORDS * tile;
    item = tw[0];
    row0 = tw[1];
    pos0 = tw[2];
    n_rows = tw[3];
    kv_end = pos0 + n_rows;         /* keys [0, kv_end): causal for the last row */
    table = plan + plan[PLAN_TABLE] + (size_t) item * plan[PLAN_TABLE_STRIDE];
    layer_base = pool + (long long) layer * d.layer_elems
                 + (long long) (h / (d.n_heads / d.n_kv_heads)) * HD;

    for (int k = threadIdx.x; k < PLAN_TILE_ROWS * HD; k += TILE_THREADS) {
        int r = k / HD, c = k % HD;
        float v = r < n_rows ? q[(size_t) (row0 + r) * q_dim + (size_t) h * HD + c] * qscale : 0;

        sq[k] = __float2bfloat16_rn(v);
        so[k] = 0;
    }
    for (int r = threadIdx.x; r < PLAN_TILE_ROWS; r += TILE_THREADS) {
        sm[r] = -INFINITY;
        sl[r] = 0;
    }
    __syncthreads();

    for (int k0 = 0; k0 < kv_end; k0 += TILE_KEYS) {
        /* keys and values of this tile, 8 bf16 per load; past the end: 0 */
        for (int k = threadIdx.x; k < TILE_KEYS * HD / 8; k += TILE_THREADS) {
            int r = k / (HD / 8), c = k % (HD / 8) * 8, t = k0 + r;
            uint4 kr = make_uint4(0, 0, 0, 0), vr = kr;

            if (t < kv_end) {
                const bf16 *kp = layer_base + (long long) table[t / bt] * d.block_elems
                                 + (long long) (t % bt) * kv_dim + c;
                kr = *(const uint4 *) kp;
                vr = *(const uint4 *) (kp + (long long) bt * kv_dim);
            }
            *(uint4 *) &sk[r * HD + c] = kr;
            *(uint4 *) &sv[r * HD + c] = vr;
        }
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows */
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc[TILE_KEYS / 16];

            for (int n = 0; n < TILE_KEYS / 16; n++)
                wmma::fill_fragment(fc[n], 0.0f);
            for (int kk = 0; kk < HD; kk += 16) {
                wmma::load_matrix_sync(fa, sq + warp * 16 * HD + kk, HD);
                for (int n = 0; n < TILE_KEYS / 16; n++) {
                    /* K^T column-major is K row-major */
                    wmma::load_matrix_sync(fb, sk + n * 16 * HD + kk, HD);
                    wmma::mma_sync(fc[n], fa, fb, fc[n]);
                }
            }
            for (int n = 0; n < TILE_KEYS / 16; n++)
                wmma::store_matrix_sync(ss + warp * 16 * TILE_KEYS + n * 16, fc[n],
                                        TILE_KEYS, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax: two lanes per row, 32 keys each */
        {
            int r = warp * 16 + lane / 2, c0 = (lane & 1) * 32, qpos = pos0 + r;
            float *srow = ss + r * TILE_KEYS, mx = -INFINITY, sum = 0, m_new, corr;

            for (int c = c0; c < c0 + 32; c++) {
                float s = r < n_rows && k0 + c <= qpos ? srow[c] : -INFINITY;
                srow[c] = s;
                mx = fmaxf(mx, s);
            }
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
            m_new = fmaxf(sm[r], mx);
            /* a row that has seen no key yet keeps m = -inf and p = 0 */
            corr = m_new == -INFINITY ? 1.0f : exp2f(sm[r] - m_new);
            for (int c = c0; c < c0 + 32; c++) {
                float p = m_new == -INFINITY ? 0.0f : exp2f(srow[c] - m_new);
                sp[r * TILE_KEYS + c] = __float2bfloat16_rn(p);
                sum += p;
            }
            sum += __shfl_xor_sync(FULL_MASK, sum, 1);
            __syncwarp();
            if ((lane & 1) == 0) {
                sm[r] = m_new;
                sl[r] = sl[r] * corr + sum;
                sc[r] = corr;
            }
        }
        __syncwarp();
        for (int k = lane; k < 16 * HD; k += 32) {
            int r = warp * 16 + k / HD;
            so[r * HD + k % HD] *= sc[r];
        }
        __syncwarp();

        /* O += P V for this warp's rows */
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> pa;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> vb;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> oc;

            for (int n = 0; n < HD / 16; n++) {
                float *o = so + warp * 16 * HD + n * 16;

                wmma::load_matrix_sync(oc, o, HD, wmma::mem_row_major);
                for (int kk = 0; kk < TILE_KEYS; kk += 16) {
                    wmma::load_matrix_sync(pa, sp + warp * 16 * TILE_KEYS + kk, TILE_KEYS);
                    wmma::load_matrix_sync(vb, sv + kk * HD + n * 16, HD);
                    wmma::mma_sync(oc, pa, vb, oc);
                }
                wmma::store_matrix_sync(o, oc, HD, wmma::mem_row_major);
            }
        }
        __syncthreads();            /* before the next tile replaces K and V */
    }

    for (int k = threadIdx.x; k < PLAN_TILE_ROWS * HD; k += TILE_THREADS) {
        int r = k / HD, c = k % HD;

        if (r < n_rows)
            out[(size_t) (row0 + r) * q_dim + (size_t) h * HD + c]
                = __float2bfloat16_rn(sl[r] > 0 ? so[k] / sl[r] : 0.0f);
    }
}

extern "C" int cuda_attention_tiles_ok(int head_dim)
{
    return head_dim == 64 || head_dim == 128;
}

extern "C" int cuda_attention_setup(void)
{
    if (cudaFuncSetAttribute(attention_tiles_kernel<64>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                             tile_smem<64>::bytes) != cudaSuccess
        || cudaFuncSetAttribute(attention_tiles_kernel<128>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                tile_smem<128>::bytes) != cudaSuccess)
        return -1;
    return 0;
}

extern "C" void cuda_attention_tiles(cudaStream_t s, const int32_t *plan,
    const float *q, const uint16_t *pool, struct cuda_dims d, int layer,
    uint16_t *out, int n_tiles)
{
    dim3 grid(n_tiles, d.n_heads);

    if (n_tiles == 0)
        return;
    if (d.head_dim == 64)
        attention_tiles_kernel<64><<<grid, TILE_THREADS, tile_smem<64>::bytes, s>>>(
            plan, q, (const bf16 *) pool, d, layer, (bf16 *) out);
    else
        attention_tiles_kernel<128><<<grid, TILE_THREADS, tile_smem<128>::bytes, s>>>(
            plan, q, (const bf16 *) pool, d, layer, (bf16 *) out);
}
