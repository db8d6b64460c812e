#!/usr/bin/env bash
# The routing decision measured inside nginx ($llmd_decision_us: body
# inspection + prefix hashing + admission + scoring + pick), with 64
# upstream peers, for 256-token, 8k-token and 100k-token prompts (4 bytes a
# token).  Prints p50/p99, once as configured by default and once with flow
# control on (llmd_queue, not saturated), in the same run.
#
#   bench/drivers/decision.sh [requests-per-size]
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${1:-300}
TOP=$PWD
SO=$TOP/build/ngx/ngx_llmd_module.so
W=$(mktemp -d /tmp/llmd-dec.XXXXXX)
trap 'kill $(cat $W/logs/nginx.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf $W' EXIT
[ -f "$SO" ] || make -s module

port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
GW=$(port)
PEERS=$(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(64)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
SERVERS=""; LISTENS=""
for p in $PEERS; do
    SERVERS="$SERVERS        server 127.0.0.1:$p;
"
    LISTENS="$LISTENS        listen 127.0.0.1:$p;
"
done
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
run() {
FLOW=$1
mkdir -p "$W/logs" "$W/tmp"
cat > "$W/nginx.conf" <<END
load_module $SO;
$USER_LINE
worker_processes 1;
error_log $W/logs/error.log warn;
pid $W/logs/nginx.pid;
events { worker_connections 1024; }
http {
    log_format d '\$llmd_decision_us \$llmd_prefix_hit';
    client_body_temp_path $W/tmp; proxy_temp_path $W/tmp;
    client_max_body_size 4m;
    client_body_buffer_size 1m;
    upstream llm {
        llmd;
        llmd_zone llm 64m;
$FLOW
$SERVERS    }
    server {
$LISTENS        access_log off;
        location / { return 200 'ok'; }
    }
    server {
        listen 127.0.0.1:$GW;
        location / {
            access_log $W/logs/decision.log d;
            proxy_pass http://llm;
        }
    }
}
END
# nginx on one core and the client on another, where there are two: the
# client's JSON encoding otherwise preempts the nginx worker mid-decision
# and shows up in its p99
PIN_NGINX=""; PIN_CLIENT=""
if [ "$(nproc)" -ge 2 ]; then
    PIN_NGINX="taskset -c 1"; PIN_CLIENT="taskset -c 0"
fi
$PIN_NGINX nginx -p "$W/" -c "$W/nginx.conf"
sleep 0.5

$PIN_CLIENT /usr/bin/python3 - "$GW" "$N" "$W" "$2" <<'PY'
import http.client, json, random, statistics, sys
gw, n, w, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
random.seed(1)
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
def prompt(nbytes, group):
    rnd = random.Random(group)
    out = []
    size = 0
    while size < nbytes:
        w_ = rnd.choice(words)
        out.append(w_)
        size += len(w_) + 1
    return " ".join(out)[:nbytes]
conn = http.client.HTTPConnection("127.0.0.1", gw)
open(w + "/logs/decision.log", "w").close()
results = {}
for tokens in (256, 8192, 102400):
    base = prompt(tokens * 4 - 200, 7)
    for i in range(n):
        # 16 shared prefixes, each with its own question
        body = json.dumps({"model": "m", "max_tokens": 16, "messages": [
            {"role": "system", "content": str(i % 16) + base},
            {"role": "user", "content": "question %d" % i}]})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse(); r.read()
        assert r.status == 200, r.status
    lines = open(w + "/logs/decision.log").read().split("\n")
    vals = [float(l.split()[0]) for l in lines if l.strip()]
    open(w + "/logs/decision.log", "w").close()
    results[tokens] = vals
for tokens, vals in results.items():
    vals = sorted(vals)
    p = lambda q: vals[min(len(vals) - 1, int(q * len(vals)))]
    print("%-13s prompt %6d tokens (%4d KiB), 64 peers: decision p50 %.1f us, p99 %.1f us, max %.1f us (%d requests)"
          % (label, tokens, tokens * 4 // 1024, p(0.5), p(0.99), vals[-1], len(vals)))
PY
kill "$(cat "$W/logs/nginx.pid")"
sleep 0.5
}

run "" "default"
# admission on, a limit the benchmark never reaches: the cost of deciding
# that there is room
run "        llmd_queue; llmd_saturation inflight=100000;" "flow-control"
