/*
 * Sampling on the device: one block of SAMPLE_THREADS per sampled row, so
 * only the chosen token ids cross to the host.
 *
 *   temperature 0   argmax (the first of equal maxima, as on the cpu)
 *   otherwise       p_i = exp((x_i - max) / T); the nucleus is every token
 *                   with p_i >= tau, tau the largest value whose tokens
 *                   carry more than top_p of the mass (found by bisection
 *                   on the float bits of tau, ~30 block reductions, no
 *                   sort); then the first token, in vocabulary order, where
 *                   the nucleus' running sum passes u * its mass.
 *
 * The nucleus and the distribution are those of the cpu backend; the cpu
 * walks the nucleus in probability order, this kernel in vocabulary order,
 * so the same seed picks a different token (the same one at top_p >= 1).
 */

#include <cuda_runtime.h>

#include "cuda_api.h"
#include "cuda_plan_layout.h"
#include "cuda_reduce.cuh"

#define SAMPLE_THREADS 1024
#define LOG2E 1.4426950408889634f

/* p of token i, relative to the maximum (which has p = 1) */
__device__ static inline float prob(const float *x, int i, float mx, float k)
{
    return exp2f((x[i] - mx) * k);
}

/* Sum of p over this thread's tokens with p >= tau; the block's sum. */
__device__ static float mass_from(const float *x, int vocab, float mx, float k,
    float tau, float *scratch)
{
    float s = 0;

    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float p = prob(x, i, mx, k);
        if (p >= tau)
            s += p;
    }
    return block_sum(s, scratch);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(
    const int32_t *plan, const float *logits, int vocab, int32_t *tokens)
{
    __shared__ float scratch[33];
    __shared__ int iscratch[33];
    __shared__ int chosen;
    int r = blockIdx.x, best_i = 0x7fffffff, chunk, lo, hi;
    const float *x, *par;
    float best = -INFINITY, temp, top_p, u, k, tau = 0, local = 0, before, total;

    if (r >= plan[PLAN_N_SAMPLE])
        return;
    x = logits + (size_t) r * vocab;
    par = (const float *) (plan + plan[PLAN_SAMPLE_PAR]) + PLAN_PAR_WORDS * r;
    temp = par[0];
    top_p = par[1];
    u = par[2];

    for (int i = threadIdx.x; i < vocab; i += blockDim.x)
        better_of(&best, &best_i, x[i], i);
    block_argmax(&best, &best_i, scratch, iscratch);
    if (best_i >= vocab)        /* every logit NaN or -inf: some valid id */
        best_i = 0;
    if (temp <= 0 || best == -INFINITY) {
        if (threadIdx.x == 0)
            tokens[r] = best_i;
        return;
    }
    k = LOG2E / temp;

    if (top_p < 1) {
        float want = top_p * mass_from(x, vocab, best, k, 0, scratch);
        /* invariant: mass(p >= lo) > want >= mass(p >= hi); p <= 1 */
        unsigned lo_bits = 0, hi_bits = __float_as_uint(1.0f) + 1;

        while (hi_bits - lo_bits > 1) {
            unsigned mid = lo_bits + (hi_bits - lo_bits) / 2;
            if (mass_from(x, vocab, best, k, __uint_as_float(mid), scratch) > want)
                lo_bits = mid;
            else
                hi_bits = mid;
        }
        tau = __uint_as_float(lo_bits);
    }

    /* inverse CDF in vocabulary order: contiguous chunks per thread, an
     * exclusive scan of the chunk sums finds the chunk, the thread its token */
    chunk = (vocab + blockDim.x - 1) / blockDim.x;
    lo = threadIdx.x * chunk;
    hi = min(vocab, lo + chunk);
    for (int i = lo; i < hi; i++) {
        float p = prob(x, i, best, k);
        if (p >= tau)
            local += p;
    }
    if (threadIdx.x == 0)
        chosen = 0x7fffffff;
    before = block_exclusive_scan(local, scratch, &total);
    {
        float target = u * total;

        if (local > 0 && before <= target && target < before + local) {
            int pick = -1;
            float acc = before;

            for (int i = lo; i < hi; i++) {
                float p = prob(x, i, best, k);
                if (p < tau)
                    continue;
                pick = i;       /* rounding may leave acc short: the last one */
                acc += p;
                if (target < acc)
                    break;
            }
            atomicMin(&chosen, pick);
        }
    }
    __syncthreads();
    if (threadIdx.x == 0)
        tokens[r] = chosen != 0x7fffffff ? chosen : best_i;
}

extern "C" void cuda_sample(cudaStream_t s, const int32_t *plan,
    const float *logits, int vocab, int32_t *tokens, int n)
{
    sample_kernel<<<n, SAMPLE_THREADS, 0, s>>>(plan, logits, vocab, tokens);
}
