/*
 * Block-wide reductions and scans for the cuda kernels.  Every thread of
 * the block must call them (they synchronise), blockDim.x a multiple of 32
 * up to 1024; every thread gets the result.  `scratch` is __shared__ room
 * for 33 values, reusable by the next call.
 */

#ifndef LLMD_CUDA_REDUCE_CUH
#define LLMD_CUDA_REDUCE_CUH

#define FULL_MASK 0xffffffffu

__device__ static inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ static inline float block_sum(float v, float *scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n_warps = blockDim.x >> 5;

    v = warp_sum(v);
    __syncthreads();            /* the previous call's readers are done */
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < n_warps ? scratch[lane] : 0.0f);
}

/* the larger value; the smaller index among equal ones (as a sequential
 * argmax that keeps the first maximum) */
__device__ static inline void better_of(float *v, int *i, float v2, int i2)
{
    if (v2 > *v || (v2 == *v && i2 < *i)) {
        *v = v2;
        *i = i2;
    }
}

__device__ static inline void block_argmax(float *v, int *i, float *sv, int *si)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n_warps = blockDim.x >> 5;

    for (int o = 16; o > 0; o >>= 1)
        better_of(v, i, __shfl_xor_sync(FULL_MASK, *v, o),
                  __shfl_xor_sync(FULL_MASK, *i, o));
    __syncthreads();
    if (lane == 0) {
        sv[warp] = *v;
        si[warp] = *i;
    }
    __syncthreads();
    *v = lane < n_warps ? sv[lane] : -INFINITY;
    *i = lane < n_warps ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1)
        better_of(v, i, __shfl_xor_sync(FULL_MASK, *v, o),
                  __shfl_xor_sync(FULL_MASK, *i, o));
}

/* Exclusive prefix sum of v in thread order; *total gets the block's sum. */
__device__ static inline float block_exclusive_scan(float v, float *scratch,
    float *total)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n_warps = blockDim.x >> 5;
    float inc = v;

    for (int o = 1; o < 32; o <<= 1) {
        float up = __shfl_up_sync(FULL_MASK, inc, o);
        if (lane >= o)
            inc += up;
    }
    __syncthreads();
    if (lane == 31)
        scratch[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        float w = lane < n_warps ? scratch[lane] : 0.0f, winc = w;

        for (int o = 1; o < 32; o <<= 1) {
            float up = __shfl_up_sync(FULL_MASK, winc, o);
            if (lane >= o)
                winc += up;
        }
        scratch[lane] = winc - w;           /* warps before this one */
        if (lane == 31)
            scratch[32] = winc;
    }
    __syncthreads();
    *total = scratch[32];
    return scratch[warp] + inc - v;
}

#endif
