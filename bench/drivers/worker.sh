#!/usr/bin/env bash
# Engine + HTTP overhead of one llmd-worker on one core.
#
# The worker runs the sim backend with --speed 0 (no model time) pinned to
# one core; llmd-loadgen runs on another core with 64 concurrent streaming
# clients.  Reports streamed tokens/s (counted by the clients) and the
# worker's CPU time per generated token (utime + stime from /proc/PID/stat
# over the measured run).
#
#   bench/drivers/worker.sh [--clients N] [--duration S] [--max-tokens N]
#                           [--worker-cpu C] [--client-cpu C]
#                           [--speed X] [--sim-profile NAME]
# Targets: >= 50,000 tokens/s and <= 20 us of CPU per token.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
clients=64 duration=10 max_tokens=256 worker_cpu=0 client_cpu=1 speed=0
profile=llama3-8b-h100
while [ $# -gt 0 ]; do
    case "$1" in
        --clients) clients=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --max-tokens) max_tokens=$2; shift 2 ;;
        --worker-cpu) worker_cpu=$2; shift 2 ;;
        --client-cpu) client_cpu=$2; shift 2 ;;
        --speed) speed=$2; shift 2 ;;           # e.g. with tiny-fast: one token per chunk
        --sim-profile) profile=$2; shift 2 ;;
        *) echo "bench-worker: unknown option $1" >&2; exit 2 ;;
    esac
done

make -s -C "$root/workers" >/dev/null
worker=$root/workers/build/llmd-worker
loadgen=$root/bench/build/llmd-loadgen
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

# a free loopback port in 18000-18999
for _ in $(seq 20); do
    port=$((18000 + RANDOM % 1000))
    taskset -c "$worker_cpu" "$worker" --listen "127.0.0.1:$port" --speed "$speed" \
        --sim-profile "$profile" --max-batch 256 2>"$log" &
    pid=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "listening on" "$log" && break
    kill "$pid" 2>/dev/null || true
done
grep -q "listening on" "$log" || { cat "$log" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

# warm up: first connections, allocations, page faults
taskset -c "$client_cpu" "$loadgen" --port "$port" --clients "$clients" \
    --duration 1 --max-tokens "$max_tokens" >/dev/null

gen_tokens() {
    curl -s "http://127.0.0.1:$port/metrics" \
        | awk '/^vllm:generation_tokens_total/ {print $2}'
}
g0=$(gen_tokens)
t0=$(cpu_ticks)
out=$(taskset -c "$client_cpu" "$loadgen" --port "$port" --clients "$clients" \
    --duration "$duration" --max-tokens "$max_tokens")
t1=$(cpu_ticks)
g1=$(gen_tokens)

tokens=$(sed -n 's/.* tokens \([0-9]*\) .*/\1/p' <<<"$out")
rate=$(sed -n 's/.*tokens\/s \([0-9]*\).*/\1/p' <<<"$out")
echo "loadgen: $out"
awk -v t="$tokens" -v r="$rate" -v d=$((t1 - t0)) -v hz="$hz" -v c="$clients" \
    -v g0="$g0" -v g1="$g1" 'BEGIN {
    us = d / hz * 1e6 / t
    printf "worker CPU %.2f s (user + system, all threads); worker-side generated tokens %d\n", d / hz, g1 - g0
    printf "worker (1 core, %d streaming clients): %d tokens/s, %.2f us CPU per token\n", c, r, us
    ok = (r >= 50000 && us <= 20)
    printf "targets (>= 50000 tokens/s, <= 20 us/token): %s\n", ok ? "met" : "NOT met"
}'
