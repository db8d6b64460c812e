#!/bin/sh
# llmd-bench checks: flags, workload shapes and determinism from
# --dump-trace, then live runs against a real llmd-worker (sim backend,
# --speed 0) on a loopback port, and a stub server for headers and
# failures.  Needs jq, curl and node.
#   BENCH=build/llmd-bench-asan WORKER=../workers/build/llmd-worker sh tests/run.sh
set -u
BENCH=${BENCH:-build/llmd-bench}
WORKER=${WORKER:-../workers/build/llmd-worker}
TMP=$(mktemp -d)
PORT=$((20000 + $$ % 20000))
STUB_PORT=$((PORT + 1))
URL=http://127.0.0.1:$PORT/v1/chat/completions
pass=0
fail=0
pids=""

cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# check NAME JQ-EXPRESSION FILE: the expression must print true
check() {
    if [ "$(jq -s "$2" "$3" 2>&1)" = "true" ]; then ok; else bad "$1"; cp "$3" "$TMP/../llmd-bench-failed.jsonl"; fi
}

# bench ARGS: a run that must exit 0 with nothing on stderr (the sanitizers
# report there)
bench() {
    $BENCH "$@" >"$TMP/stdout" 2>"$TMP/stderr"
    rc=$?
    if [ $rc -ne 0 ] || [ -s "$TMP/stderr" ]; then
        bad "llmd-bench $*: rc $rc: $(head -c 400 "$TMP/stderr")"
    fi
}

wait_up() {
    i=0
    while ! curl -sf "http://127.0.0.1:$1/$2" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 100 ] && { echo "server on port $1 did not start"; exit 1; }
        sleep 0.05
    done
}

# --- flags --------------------------------------------------------------
for args in "--bogus" "--url $URL --workload nope --rate 1" \
            "--url $URL --workload uniform" "--url ftp://x --workload uniform --rate 1" \
            "--url $URL --workload uniform --rate -3" \
            "--url $URL --workload multi-turn --concurrency-burst 4" \
            "--url $URL --workload mixed --rate 1 --long-min-tokens 30000"; do
    $BENCH $args >"$TMP/out" 2>"$TMP/err"
    rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && [ ! -s "$TMP/out" ]; then ok
    else bad "flags '$args': rc $rc, $(cat "$TMP/err")"; fi
done

# --- determinism ----------------------------------------------------------
for w in shared-prefix mixed multi-turn hot-spot bursty uniform; do
    bench --dump-trace "$TMP/a.jsonl" --workload $w --rate 10 --requests 300 --seed 7 \
        --long-min-tokens 1000 --long-max-tokens 8000
    bench --dump-trace "$TMP/b.jsonl" --workload $w --rate 10 --requests 300 --seed 7 \
        --long-min-tokens 1000 --long-max-tokens 8000
    bench --dump-trace "$TMP/c.jsonl" --workload $w --rate 10 --requests 300 --seed 8 \
        --long-min-tokens 1000 --long-max-tokens 8000
    if cmp -s "$TMP/a.jsonl" "$TMP/b.jsonl" && ! cmp -s "$TMP/a.jsonl" "$TMP/c.jsonl" \
       && [ "$(wc -l <"$TMP/a.jsonl")" -eq 300 ]; then ok
    else bad "determinism of $w"; fi
done

# --- workload shapes (chat rendering: content + US + role + RS) -----------
D=$TMP/shape.jsonl
bench --dump-trace $D --workload shared-prefix --rate 100 --requests 2000 \
    --groups 6 --users 4 --system-tokens 700 --question-tokens 150 --output-tokens 40
check "shared-prefix lengths" 'all(.[]; (.body.messages[0].content|length) == 692
    and (.body.messages[1].content|length) == 144 and .body.max_tokens == 40)' $D
check "shared-prefix: one system prompt per group, 6 groups" \
    '(group_by(.group) | length == 6 and all(.[]; (map(.body.messages[0].content)|unique|length) == 1))
     and (map(.body.messages[0].content)|unique|length) == 6' $D
check "shared-prefix: one fixed question per user, 24 users" \
    '(group_by(.session) | length == 24 and all(.[]; (map(.body.messages[1].content)|unique|length) == 1))
     and (map(.body.messages[1].content)|unique|length) == 24' $D
check "shared-prefix: Poisson arrivals near --rate" \
    '(.[-1].t) as $T | ($T > 16 and $T < 24) and ([.[].t] == ([.[].t]|sort))' $D

bench --dump-trace $D --workload hot-spot --rate 1000 --system-tokens 1000 --question-tokens 40
check "hot-spot: 4096 requests, one prefix, unique questions" \
    'length == 4096 and (map(.body.messages[0].content)|unique|length) == 1
     and (map(.body.messages[1].content)|unique|length) == 4096
     and all(.[]; (.body.messages[0].content|length) == 992 and (.body.messages[1].content|length) == 34)' $D

bench --dump-trace $D --workload uniform --rate 100 --requests 500 --input-tokens 300
check "uniform: unique prompts of the asked length, no shared first block" \
    'length == 500 and all(.[]; (.body.messages|length) == 1 and (.body.messages[0].content|length) == 294)
     and (map(.body.messages[0].content[0:16])|unique|length) == 500' $D

bench --dump-trace $D --workload bursty --concurrency-burst 50 --bursts 3
check "bursty: bursts of 50 x 3, 1k in / 1k out" \
    'length == 150 and all(.[]; .group == (.id / 50 | floor) and .body.max_tokens == 1024
     and (.body.messages[0].content|length) == 1018)' $D

bench --dump-trace $D --workload multi-turn --rate 10 --requests 100 --turns 4 \
    --system-tokens 300 --question-tokens 60
check "multi-turn: sessions of 4 turns, chained with think time" \
    'group_by(.session) | length == 25 and all(.[]; length == 4 and (map(.turn) == [0,1,2,3])
     and (.[0]|has("after")|not) and all(.[1:][]; .after >= 0)
     and (.[0].body.messages|length) == 2 and all(.[1:][]; (.body.messages|length) == 1))' $D

bench --dump-trace $D --workload mixed --rate 10 --requests 3000 --seed 3
check "mixed: short lookups <= 512 in, <= 64 out" \
    'map(select(.tag == "short")) | length > 1000 and all(.[];
     (.body.messages[0].content|length) + 6 <= 512 and .body.max_tokens <= 64)' $D
check "mixed: long jobs of 4 steps, 8k-32k in, 512 out" \
    'map(select(.tag == "long")) | group_by(.session) | length > 20 and all(.[]; length == 4
     and ((.[0].body.messages[0].content|length) + 6) as $first
     | $first >= 8192 and $first + 3 * (512 + 11 + 1024) <= 32768
     and all(.[]; .body.max_tokens == 512))' $D

# --- live, against the sim worker -------------------------------------------
$WORKER --listen 127.0.0.1:$PORT --speed 0 >"$TMP/worker.log" 2>&1 &
pids="$pids $!"
wait_up $PORT health

O=$TMP/o.jsonl S=$TMP/s.json
bench --url $URL --workload uniform --rate 400 --requests 300 --input-tokens 200 \
    --output-tokens 32 --out $O --summary $S --slo-ttft 10000 --slo-itl 10000
check "uniform live: summary counts" '.[0] | .requests == 300 and .succeeded == 300
    and .failed == 0 and .slo.attainment == 1 and .upstreams.none == 300
    and .output_tokens == 300 * 32' $S
check "uniform live: one record per request, TTFT <= e2e, usage = sent lengths" \
    'length == 300 and (map(.id)|sort) == [range(300)] and all(.[]; .status == 200
     and .error == null and .ttft_ms <= .e2e_ms and .prompt_tokens == 200
     and .output_tokens == 32 and .chunks == 32 and (.itl_ms|length) == 31)' $O

bench --url $URL --workload uniform --rate 400 --requests 50 --input-tokens 200 \
    --output-tokens 8 --slo-ttft 0.001 --summary $S
check "SLO: an impossible TTFT target is met by none" \
    '.[0] | .slo.attainment == 0 and .slo.goodput_rps == 0 and .success_rate == 1' $S

bench --url $URL --workload shared-prefix --rate 500 --requests 200 --groups 3 --users 2 \
    --system-tokens 600 --question-tokens 100 --output-tokens 16 --out $O --summary $S
check "shared-prefix live: prompt tokens = system + question" \
    'length == 200 and all(.[]; .prompt_tokens == 700 and .output_tokens == 16 and .error == null)' $O

bench --url $URL --workload multi-turn --rate 100 --requests 24 --turns 3 --think-time 0.01 \
    --system-tokens 100 --question-tokens 40 --output-tokens 10 --out $O --summary $S
check "multi-turn live: history grows by question + answer each turn" \
    'length == 24 and all(.[]; .error == null
     and .prompt_tokens == 100 + 40 + .turn * (40 + 10 + 11))' $O

bench --url $URL --workload mixed --rate 100 --requests 40 --long-fraction 0.3 --long-steps 3 \
    --long-min-tokens 1000 --long-max-tokens 4000 --long-output-tokens 32 --tool-tokens 64 \
    --think-time 0.01 --out $O --summary $S
check "mixed live: long steps grow by answer + tool result, per-tag summary" \
    'all(.[]; .error == null) and (map(select(.tag == "long")) | group_by(.session)
     | all(.[]; . as $s | all(.[]; .prompt_tokens == $s[0].prompt_tokens + .turn * (32 + 11 + 64))))' $O
check "mixed live: by_tag adds up" \
    '.[0] | .by_tag.short.requests + .by_tag.long.requests == 40' $S

bench --url $URL --workload bursty --concurrency-burst 100 --bursts 2 --input-tokens 100 \
    --output-tokens 20 --out $O --summary $S
check "bursty live: 2 bursts of 100, the second after the first ended" \
    '(map(select(.group == 0)) | map(.send_s + .e2e_ms / 1000) | max) as $fin
     | length == 200 and all(.[]; .error == null)
     and all(map(select(.group == 1))[]; .send_s >= $fin - 0.0005)' $O

bench --dump-trace "$TMP/t.jsonl" --workload multi-turn --rate 50 --requests 12 --turns 3 \
    --think-time 0.01 --system-tokens 64 --question-tokens 32 --output-tokens 8
bench --url $URL --trace "$TMP/t.jsonl" --out $O --summary $S
check "trace replay: every line sent, history rebuilt" \
    'length == 12 and all(.[]; .error == null and .prompt_tokens == 64 + 32 + .turn * (32 + 8 + 11))' $O

bench --url http://127.0.0.1:$PORT/v1/completions --workload uniform --rate 200 --requests 20 \
    --input-tokens 100 --output-tokens 5 --out $O
check "completions endpoint: prompt tokens exact" \
    'length == 20 and all(.[]; .prompt_tokens == 100 and .output_tokens == 5 and .error == null)' $O

bench --url http://127.0.0.1:$PORT/v1/nothing --workload uniform --rate 200 --requests 10 \
    --input-tokens 100 --output-tokens 5 --out $O --summary $S
check "HTTP errors are failures with their text" \
    'length == 10 and all(.[]; .status == 404 and (.error|startswith("HTTP 404")))' $O
check "HTTP errors in the summary" '.[0] | .failed == 10 and .success_rate == 0' $S

# --- stub server: upstream header, several tokens per chunk, closes --------
node tests/stub_server.js $STUB_PORT >"$TMP/stub.log" 2>&1 &
pids="$pids $!"
wait_up $STUB_PORT health
bench --url http://127.0.0.1:$STUB_PORT/v1/chat/completions --workload uniform --rate 300 \
    --requests 60 --input-tokens 100 --output-tokens 6 --out $O --summary $S
check "stub: X-LLMD-Upstream counted, usage tokens vs chunks" \
    '.[0] | .requests == 60 and .upstreams["w-a"] == 20 and .upstreams["w-b"] == 20
     and .failed == 20' $S
check "stub: per-chunk gaps, truncated streams fail" \
    'all(.[]; if .upstream == "w-c" then (.error|test("DONE|closed"))
              else .error == null and .output_tokens == 6 and .chunks == 3
                   and (.itl_ms|length) == 2 end)' $O

bench --url http://127.0.0.1:1/v1/chat/completions --workload uniform --rate 100 --requests 5 \
    --input-tokens 100 --summary $S
check "refused connections are failures" '.[0] | .failed == 5' $S

echo "bench: $pass passed, $fail failed"
[ $fail -eq 0 ]
