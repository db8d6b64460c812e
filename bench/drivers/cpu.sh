#!/usr/bin/env bash
# CPU backend speed against this machine's memory-bandwidth limit.
#
# Generates a ~100M-parameter random llama model (dim 768, 12 layers,
# ffn 2560) in F32 and Q8_0, measures a STREAM-like copy bandwidth in the
# same run, then with `llmd-worker bench`: prefill tokens/s (one 128-token
# prompt), decode tokens/s at batch 1 and 16, and peak RSS.  The batch-1
# decode limit is bandwidth / weight bytes read per token.
#
#   bench/drivers/cpu.sh [THREADS]        (default: every core)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
worker=$root/workers/build/llmd-worker
threads=${1:-$(nproc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make -s -C "$root/workers" build/llmd-worker

# STREAM "copy": a[i] = b[i] over 2 x 256 MiB, best of 5, bytes read + written
cat > "$tmp/copy.c" <<'C'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define N (32L << 20)           /* doubles per array: 256 MiB */
static double *a, *b;
static int nt;
static void *part(void *arg) {
    long i = (long) arg, lo = N / nt * i, hi = i == nt - 1 ? N : lo + N / nt;
    for (long k = lo; k < hi; k++) a[k] = b[k];
    return NULL;
}
static void *init(void *arg) {
    long i = (long) arg, lo = N / nt * i, hi = i == nt - 1 ? N : lo + N / nt;
    for (long k = lo; k < hi; k++) { a[k] = 0; b[k] = k; }
    return NULL;
}
static void run(void *(*fn)(void *)) {
    pthread_t t[64];
    for (long i = 0; i < nt; i++) pthread_create(&t[i], NULL, fn, (void *) i);
    for (int i = 0; i < nt; i++) pthread_join(t[i], NULL);
}
int main(int argc, char **argv) {
    double best = 0;
    nt = atoi(argv[1]);
    a = malloc(N * 8); b = malloc(N * 8);
    run(init);
    for (int r = 0; r < 5; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        run(part);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        if (2.0 * N * 8 / s > best) best = 2.0 * N * 8 / s;
    }
    printf("%.2f\n", best / 1e9);
    return a[N / 2] == 0;
}
C
cc -O2 -o "$tmp/copy" "$tmp/copy.c" -lpthread
bw=$("$tmp/copy" "$threads")
echo "memory bandwidth (STREAM copy, $threads threads): $bw GB/s"

# the fastest of several JSON result lines, field by field
best() {
    /usr/bin/python3 -c 'import json,sys
rows=[json.loads(l) for l in sys.stdin]
out=rows[0]
for k in ("prefill_tok_s","decode_tok_s"): out[k]=max(r[k] for r in rows)
out["peak_rss_mb"]=max(r["peak_rss_mb"] for r in rows)
print(json.dumps(out))'
}

printf '\n| type | model MB | weight MB/token | limit tok/s | decode b=1 tok/s | %% of limit | decode b=16 tok/s | prefill tok/s | peak RSS MB |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for type in f32 q8_0; do
    model=$tmp/bench-$type.gguf
    "$worker" mkmodel --out "$model" --type "$type" --dim 768 --layers 12 --heads 12 \
        --kv-heads 12 --ffn 2560 --context 1024 --tied --seed 1
    size_mb=$(( $(stat -c %s "$model") / 1000000 ))
    # best of three: the machine may be shared
    b1=$(for i in 1 2 3; do "$worker" bench --model "$model" --batch 1 --steps 16 \
             --prompt 128 --threads "$threads"; done | best)
    b16=$(for i in 1 2 3; do "$worker" bench --model "$model" --batch 16 --steps 4 \
              --prompt 16 --threads "$threads"; done | best)
    /usr/bin/python3 - "$bw" "$size_mb" "$type" "$b1" "$b16" <<'PY'
import json, sys
bw, size_mb, typ = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
b1, b16 = json.loads(sys.argv[4]), json.loads(sys.argv[5])
# weights read per decoded token: every layer matrix and the head; the
# embedding table (tied here) is the head, so that is the whole file
per_token_mb = size_mb
limit = bw * 1000 / per_token_mb
print(f"| {typ} | {size_mb} | {per_token_mb} | {limit:.1f} | {b1['decode_tok_s']:.1f} | "
      f"{100 * b1['decode_tok_s'] / limit:.0f}% | {b16['decode_tok_s']:.1f} | "
      f"{b1['prefill_tok_s']:.1f} | {max(b1['peak_rss_mb'], b16['peak_rss_mb']):.0f} |")
PY
done
