/*
 * `llmd-worker bench`: the cpu backend's own speed, without HTTP: prefill
 * tokens/s for one long prompt, then decode tokens/s with B sequences
 * stepping together, plus peak RSS.  Used by scripts/bench-cpu.sh.
 */

#ifndef LLMD_MODEL_BENCH_H
#define LLMD_MODEL_BENCH_H

int model_bench_main(int argc, char **argv);

#endif
