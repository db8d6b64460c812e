#!/usr/bin/env bash
# CUDA backend speed against the GPU's physical limits and PyTorch.
#
# Two random models in bf16 written by `llmd-worker mkmodel` (vocabulary
# padded to Llama-3's 128256 rows):
#   1b   Llama-3.2-1B shape: dim 2048, 16 layers, 32 heads, 8 KV heads,
#        ffn 8192, tied head
#   8b   Llama-3-8B shape: dim 4096, 32 layers, 32 heads, 8 KV heads,
#        ffn 14336, separate head
# For each, `llmd-worker bench --backend cuda`: decode tokens/s at batch 1,
# 8 and 64 (each sequence at a 512-token context) and prefill tokens/s for
# one 2048-token prompt.  Limits, from the same device in the same run:
#   decode   copy bandwidth (read + write, cudaMemcpy device to device) /
#            bytes read per step (bf16 layer matrices and head, plus every
#            sequence's KV) x batch
#   prefill  cuBLAS bf16 GEMM throughput (8192^3) / (2 x layer parameters)
#            per token (the head runs once per prompt; attention is extra)
# The vendor's peak figures are printed beside the measured ones.  PyTorch
# (workers/tests/gpu/torch_reference.py: eager, scaled_dot_product_attention)
# runs the same shapes in the same run when it is installed.
#
# Prints SKIP and exits 0 where no GPU is visible or the worker was built
# without nvcc.  Models are kept in $LLMD_BENCH_DIR (default
# /tmp/llmd-bench-cuda; the 8b file is 16 GB).
#
#   bench/drivers/cuda.sh [DEVICE]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
worker=$root/workers/build/llmd-worker
device=${1:-0}
dir=${LLMD_BENCH_DIR:-/tmp/llmd-bench-cuda}
python=${PYTHON:-python3}
context=512
prompt=2048

make -s -C "$root/workers" build/llmd-worker

probe=$("$worker" bench --backend cuda --device "$device" --model /nonexistent.gguf 2>&1 || true)
case $probe in
*"not available in this build"*) echo "SKIP: the worker was built without nvcc"; exit 0 ;;
*"no CUDA device visible"*|*"CUDA device"*|*"--device"*) echo "SKIP: $probe"; exit 0 ;;
esac

mkdir -p "$dir"
declare -A shape=(
    [1b]="--dim 2048 --layers 16 --heads 32 --kv-heads 8 --ffn 8192 --tied"
    [8b]="--dim 4096 --layers 32 --heads 32 --kv-heads 8 --ffn 14336"
)
results=$dir/results.jsonl
: > "$results"
for name in 1b 8b; do
    model=$dir/llama-$name-bf16.gguf
    if [ ! -s "$model" ]; then
        echo "# writing $model"
        # shellcheck disable=SC2086
        "$worker" mkmodel --out "$model" --type bf16 --vocab llama3 --vocab-size 128256 \
            --context 4096 --seed 1 ${shape[$name]}
    fi
    for batch in 1 8 64; do
        p=16
        [ "$batch" = 1 ] && p=$prompt
        echo "# $name: batch $batch" >&2
        "$worker" bench --backend cuda --device "$device" --model "$model" --batch "$batch" \
            --steps 32 --prompt "$p" --context "$context" \
            | sed "s/^{/{\"shape\":\"$name\",\"impl\":\"llmd\",/" >> "$results"
    done
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$device "$python" "$root/workers/tests/gpu/torch_reference.py" \
        ${shape[$name]} --vocab 128256 --batches 1,8,64 --context "$context" \
        --steps 32 --prompt "$prompt" --name "$name" >> "$results" \
        || echo "# torch reference failed for $name" >&2
done
grep '^SKIP' "$results" || true

/usr/bin/python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
llmd = [r for r in rows if r.get('impl') == 'llmd']
torch = {(r['shape'], r.get('batch'), r['kind']): r for r in rows if r.get('impl') == 'torch'}
# vendor peaks: dense bf16 tensor TFLOP/s, HBM TB/s
peaks = [('H200', 989, 4.8), ('GH200', 989, 4.0), ('H100 NVL', 835, 3.9),
         ('H100 PCIe', 756, 2.0), ('H100', 989, 3.35), ('A100', 312, 2.0)]
dims = {'1b': (2048, 16, 8, 128), '8b': (4096, 32, 8, 128)}
vocab = 128256
first = llmd[0]
peak = next(((t, b) for n, t, b in peaks if n in first['device']), (None, None))
print(f"\ndevice: {first['device']}; measured copy {first['copy_gb_s']:.0f} GB/s, "
      f"bf16 GEMM {first['gemm_tflops']:.0f} TFLOP/s; vendor peak "
      f"{peak[1] or '?'} TB/s, {peak[0] or '?'} TFLOP/s\n")
print('| model | batch | decode tok/s | limit tok/s | % of limit | PyTorch tok/s |')
print('|---|---|---|---|---|---|')
for r in llmd:
    dim, layers, kvh, hd = dims[r['shape']]
    ctx = r['decode_context'] + 3 + r['decode_steps'] / 2        # mean keys per step
    kv = r['batch'] * ctx * layers * 2 * kvh * hd * 2
    limit = r['batch'] * r['copy_gb_s'] * 1e9 / (r['decode_weight_bytes'] + kv)
    t = torch.get((r['shape'], r['batch'], 'decode'))
    print(f"| {r['shape']} | {r['batch']} | {r['decode_tok_s']:.0f} | {limit:.0f} | "
          f"{100 * r['decode_tok_s'] / limit:.0f}% | {t['tok_s']:.0f} |" if t else
          f"| {r['shape']} | {r['batch']} | {r['decode_tok_s']:.0f} | {limit:.0f} | "
          f"{100 * r['decode_tok_s'] / limit:.0f}% | n/a |")
print('\n| model | prefill tokens | prefill tok/s | limit tok/s | % of limit | PyTorch tok/s |')
print('|---|---|---|---|---|---|')
for r in llmd:
    if r['batch'] != 1:
        continue
    dim = dims[r['shape']][0]
    layer_params = r['decode_weight_bytes'] / 2 - vocab * dim
    limit = r['gemm_tflops'] * 1e12 / (2 * layer_params)
    t = torch.get((r['shape'], None, 'prefill'))
    print(f"| {r['shape']} | {r['prefill_tokens']} | {r['prefill_tok_s']:.0f} | {limit:.0f} | "
          f"{100 * r['prefill_tok_s'] / limit:.0f}% | " + (f"{t['tok_s']:.0f} |" if t else 'n/a |'))
PY
