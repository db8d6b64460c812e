#!/usr/bin/env bash
# The llmd demo on one machine: Redis, three sim workers and a prefill
# worker, nginx (Debian's binary) with ngx_llmd_module in front, and a few
# sample requests showing prefix affinity, disaggregated prefill/decode,
# streaming and error handling.
#
#   scripts/demo.sh          run the requests, then stop everything
#   scripts/demo.sh --keep   leave the fleet running until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."

TOP=$PWD
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
SO=$TOP/build/ngx/ngx_llmd_module.so
WORKER=$TOP/workers/build/llmd-worker
D=$(mktemp -d /tmp/llmd-demo.XXXXXX)
PIDS=()

cleanup() {
    [ -f "$D/nginx/logs/nginx.pid" ] && kill -QUIT "$(cat $D/nginx/logs/nginx.pid)" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT INT TERM

[ -x "$WORKER" ] && [ -f "$SO" ] || make -s all

port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GW=${LLMD_DEMO_PORT:-$(port)}

RP=$(port)
echo "== redis-server (fleet state rendezvous) on 127.0.0.1:$RP"
redis-server --port "$RP" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$D" --logfile "$D/redis.log" &
PIDS+=($!)

SERVERS=""
for i in 1 2 3; do
    p=$(port)
    "$WORKER" --listen 127.0.0.1:$p --backend sim --model-name llmd-sim \
        --sim-profile llama3-8b-h100 --speed 1 --redis "redis://127.0.0.1:$RP" \
        > "$D/worker$i.log" 2>&1 &
    PIDS+=($!)
    SERVERS="$SERVERS        server 127.0.0.1:$p max_fails=2 fail_timeout=5s;
"
    echo "== llmd-worker $i (sim, llama3-8b-h100 profile) on 127.0.0.1:$p"
done
PP=$(port)
"$WORKER" --listen 127.0.0.1:$PP --role prefill --kv-listen 127.0.0.1:0 \
    --backend sim --model-name llmd-sim --sim-profile llama3-8b-h100 --speed 1 \
    --redis "redis://127.0.0.1:$RP" > "$D/prefill.log" 2>&1 &
PIDS+=($!)
echo "== llmd-worker --role prefill on 127.0.0.1:$PP (found by the gateway through Redis)"

mkdir -p "$D/nginx/logs" "$D/nginx/tmp"
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat > "$D/nginx/nginx.conf" <<END
load_module $SO;
$USER_LINE
worker_processes 2;
error_log $D/nginx/logs/error.log info;
pid $D/nginx/logs/nginx.pid;
events { worker_connections 1024; }
http {
    log_format llmd '"\$request" \$status peer=\$llmd_peer prefix=\$llmd_prefix_hit pick=\$llmd_pick_reason pd=\$llmd_pd';
    access_log $D/nginx/logs/access.log llmd;
    client_body_temp_path $D/nginx/tmp; proxy_temp_path $D/nginx/tmp;
    upstream llm {
        llmd;
        llmd_zone llm 16m;
        llmd_redis 127.0.0.1:$RP interval=50ms allow=127.0.0.0/8;
        llmd_pd threshold=1024;
$SERVERS        keepalive 32;
    }
    server {
        listen 127.0.0.1:$GW;
        location / {
            llmd_debug_headers on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-LLMD-Prefill-Peer \$llmd_prefill_peer;
            proxy_set_header X-LLMD-Transfer-Id \$llmd_transfer_id;
            proxy_read_timeout 300s;
            proxy_pass http://llm;
        }
        location = /llmd/status { llmd_status; }
    }
}
END
nginx -p "$D/nginx/" -c "$D/nginx/nginx.conf" -t -q
nginx -p "$D/nginx/" -c "$D/nginx/nginx.conf"
echo "== nginx + ngx_llmd_module on http://127.0.0.1:$GW"

for _ in $(seq 50); do
    curl -sf "http://127.0.0.1:$GW/health" >/dev/null 2>&1 && break
    sleep 0.1
done
# the gateway mirrors the fleet state from Redis: wait until it is live, so
# the first requests' cache events are seen
for _ in $(seq 50); do
    curl -s "http://127.0.0.1:$GW/llmd/status" | grep -q '"state":"fresh"' && break
    sleep 0.1
done

SYS="You are the support assistant of ACME Rockets. Answer in one short paragraph, cite the manual section, and never promise delivery dates. $(printf 'Manual excerpt %d: rockets must be fuelled only in the open air. ' $(seq 1 12))"
ask() {
    curl -s -D "$D/h" -o "$D/b" "http://127.0.0.1:$GW/v1/chat/completions" \
        -H 'Content-Type: application/json' \
        -d "{\"model\":\"llmd-sim\",\"max_tokens\":12,\"messages\":[{\"role\":\"system\",\"content\":\"$SYS\"},{\"role\":\"user\",\"content\":\"$1\"}]}"
    printf '  %-28s -> %s  blocks %s  (%s)\n' "\"$1\"" \
        "$(grep -i '^x-llmd-upstream' $D/h | tr -d '\r' | cut -d' ' -f2)" \
        "$(grep -i '^x-llmd-prefix-blocks' $D/h | tr -d '\r' | cut -d' ' -f2)" \
        "$(grep -i '^x-llmd-pick' $D/h | tr -d '\r' | cut -d' ' -f2)"
}

echo
echo "== GET /v1/models"
curl -s "http://127.0.0.1:$GW/v1/models"; echo

echo
echo "== one long system prompt, four questions: the same worker keeps the prefix"
for q in "How do I fuel a rocket?" "Can I fuel it indoors?" "Which manual section?" "When will mine ship?"; do
    ask "$q"
    sleep 0.2   # the worker's cache event for the prefix reaches the gateway
done
echo "  answer to the last one: $(head -c 300 $D/b)"

echo
echo "== distinct prompts spread over the workers"
for i in 1 2 3; do
    curl -s -D "$D/h" -o /dev/null "http://127.0.0.1:$GW/v1/completions" \
        -H 'Content-Type: application/json' \
        -d "{\"model\":\"llmd-sim\",\"max_tokens\":4,\"prompt\":\"$(printf "unrelated prompt number $i %.0s" $(seq 30))\"}"
    printf '  prompt %d -> %s\n' "$i" "$(grep -i '^x-llmd-upstream' $D/h | tr -d '\r' | cut -d' ' -f2)"
done

echo
echo "== a 3,000-token prompt: prefilled by the prefill worker, decoded by a worker"
for _ in $(seq 50); do    # the prefill worker's first heartbeat
    redis-cli -p "$RP" hlen llmd:default:hb 2>/dev/null | grep -qx 4 && break
    sleep 0.1
done
sleep 0.3
LONG=$(printf 'Incident report line %04d: pressure nominal, valves closed. ' $(seq 1 50))
curl -s -D "$D/h" -o "$D/b" "http://127.0.0.1:$GW/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\":\"llmd-sim\",\"max_tokens\":8,\"prompt\":\"$LONG Summary:\"}"
printf '  decode worker %s, prefill worker %s (%s)\n' \
    "$(grep -i '^x-llmd-upstream' $D/h | tr -d '\r' | cut -d' ' -f2)" \
    "$(grep -i '^x-llmd-prefill-peer' $D/h | tr -d '\r' | cut -d' ' -f2)" \
    "$(grep -i '^x-llmd-pd' $D/h | tr -d '\r' | cut -d' ' -f2)"
DEC=$(grep -i '^x-llmd-upstream' $D/h | tr -d '\r' | cut -d' ' -f2)
curl -s "http://$DEC/metrics" | grep -E '^llmd:kv_transfer(s_total\{.*landed|_bytes_total)' | sed 's/^/  /'

echo
echo "== streaming (SSE) through the gateway"
curl -sN "http://127.0.0.1:$GW/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"llmd-sim","prompt":"Once upon a time","max_tokens":5,"stream":true}' | sed 's/^/  /'

echo
echo "== malformed JSON: an OpenAI-style 400 from the gateway, nothing reaches a worker"
curl -s -w '  HTTP %{http_code}\n' "http://127.0.0.1:$GW/v1/chat/completions" \
    -H 'Content-Type: application/json' -d '{"messages": [' | sed 's/^/  /'

echo
echo "== the gateway's access log"
sleep 0.2
sed 's/^/  /' "$D/nginx/logs/access.log"

if [ "$KEEP" = 1 ]; then
    echo
    echo "fleet running: http://127.0.0.1:$GW  (Ctrl-C stops it)"
    while sleep 3600; do :; done
fi
