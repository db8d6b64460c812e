/*
 * `llmd-worker bench`: a backend's own speed, without HTTP: prefill
 * tokens/s for one long prompt, then decode tokens/s with B sequences
 * stepping together, plus peak RSS; with --backend cuda also the device's
 * measured copy bandwidth and bf16 GEMM throughput.  Used by
 * bench/drivers/cpu.sh and bench/drivers/cuda.sh.
 */

#ifndef LLMD_MODEL_BENCH_H
#define LLMD_MODEL_BENCH_H

int model_bench_main(int argc, char **argv);

#endif
