#!/usr/bin/env bash
# Gateway overhead: CPU per request of nginx with `llmd` against stock
# round-robin, same nginx binary, same backends, same run; for 1 KiB and
# 64 KiB prompts.  Also the raw prompt-inspection throughput of common/.
#
#   bench/drivers/gateway.sh [seconds-per-run] [repeats]
#
# Needs: nginx, the built module (make module), wrk.
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${1:-4}
REPS=${2:-3}
TOP=$PWD
SO=$TOP/build/ngx/ngx_llmd_module.so
W=$(mktemp -d /tmp/llmd-bench.XXXXXX)
trap 'kill $(cat $W/*/logs/nginx.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf $W' EXIT

[ -f "$SO" ] || make -s module
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }

port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GW=$(port); B1=$(port); B2=$(port)
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"

mkconf() {   # dir body
    mkdir -p "$W/$1/logs" "$W/$1/tmp"
    cat > "$W/$1/nginx.conf" <<END
$3
$USER_LINE
worker_processes 1;
error_log $W/$1/logs/error.log warn;
pid $W/$1/logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $W/$1/tmp;
    proxy_temp_path $W/$1/tmp;
    client_max_body_size 1m;
    client_body_buffer_size 128k;
    $2
}
END
}

mkconf backend "
    server {
        listen 127.0.0.1:$B1; listen 127.0.0.1:$B2;
        keepalive_requests 1000000;
        location / { return 200 'ok'; }
    }" ""

mkconf gateway "
    upstream rr {
        server 127.0.0.1:$B1; server 127.0.0.1:$B2;
        keepalive 64;
    }
    upstream llm {
        llmd;
        llmd_zone llm 16m;
        server 127.0.0.1:$B1; server 127.0.0.1:$B2;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$GW;
        keepalive_requests 1000000;
        proxy_http_version 1.1;
        proxy_set_header Connection '';
        location /rr/ { proxy_pass http://rr/; }
        location /llmd/ { proxy_pass http://llm/; }
    }" "load_module $SO;"

taskset -c 1 nginx -p "$W/backend/" -c "$W/backend/nginx.conf"
taskset -c 0 nginx -p "$W/gateway/" -c "$W/gateway/nginx.conf"
sleep 0.5
GW_WORKER=$(pgrep -P "$(cat $W/gateway/logs/nginx.pid)" | head -1)

cat > "$W/post.lua" <<'END'
local size = tonumber(os.getenv("PROMPT_BYTES"))
local prefix = string.rep("You are a helpful assistant. ", math.floor(size / 29))
local n = 0
request = function()
    n = n + 1
    local body = '{"model":"m","max_tokens":64,"stream":false,"messages":[' ..
        '{"role":"system","content":"' .. prefix .. '"},' ..
        '{"role":"user","content":"question ' .. n .. '"}]}'
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
END

cpu_ticks() { awk '{print $14 + $15}' /proc/$GW_WORKER/stat; }
HZ=$(getconf CLK_TCK)

# prints µs of gateway CPU per request
run() {   # path prompt_bytes
    local t0 t1 out reqs
    t0=$(cpu_ticks)
    out=$(PROMPT_BYTES=$2 taskset -c 1 wrk -t1 -c16 -d"${DUR}s" -s "$W/post.lua" \
          "http://127.0.0.1:$GW$1v1/chat/completions")
    t1=$(cpu_ticks)
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    if echo "$out" | grep -q "Non-2xx"; then echo "errors: $out" >&2; exit 1; fi
    /usr/bin/python3 -c "print('%.2f' % (($t1 - $t0) / $HZ * 1e6 / $reqs))"
}

median() { /usr/bin/python3 -c 'import sys,statistics;print("%.2f" % statistics.median(map(float,sys.argv[1:])))' "$@"; }

echo "gateway CPU per request (µs), ${REPS} interleaved runs of ${DUR}s, 16 connections"
printf "%-10s %10s %10s %10s %8s\n" prompt round-robin llmd added ratio
for size in 1024 65536; do
    rr=(); ll=()
    for i in $(seq "$REPS"); do
        rr+=("$(run /rr/ $size)")
        ll+=("$(run /llmd/ $size)")
    done
    r=$(median "${rr[@]}"); l=$(median "${ll[@]}")
    /usr/bin/python3 -c "
r, l, s = $r, $l, $size
print('%-10s %10.2f %10.2f %10.2f %8.2f' % ('%d B' % s, r, l, l - r, l / r))
if s >= 65536 and l > r:
    print('  -> inspection through the gateway: %.2f GB/s of prompt' % (s / ((l - r) * 1e-6) / 1e9))
"
done

echo
echo "prompt inspection alone (common/, one core):"
cc -O2 -Icommon bench/tools/inspect_bench.c common/llmd_canon.c common/llmd_prefix.c common/llmd_request.c \
   -lyajl -lxxhash -o "$W/inspect_bench"
taskset -c 0 "$W/inspect_bench" 1024 200000
taskset -c 0 "$W/inspect_bench" 65536 5000
