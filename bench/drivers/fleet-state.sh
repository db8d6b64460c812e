#!/usr/bin/env bash
# Fleet-state sync: the gateway's Redis mirror under 64 workers x 10
# heartbeats/s plus 50,000 cache events/s.  Reports the CPU share of the
# nginx worker that owns the mirror, Redis's own share in the same run, and
# the event-to-shared-memory staleness histogram from llmd_status.
#
#   bench/drivers/fleet-state.sh [seconds] [workers] [events_per_s]
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=${1:-10}
WORKERS=${2:-64}
EVENTS=${3:-50000}
TOP=$PWD
SO=$TOP/build/ngx/ngx_llmd_module.so
W=$(mktemp -d /tmp/llmd-fsb.XXXXXX)
trap 'kill $(cat $W/nginx/logs/nginx.pid 2>/dev/null) 2>/dev/null || true; kill $RPID 2>/dev/null || true; sleep 0.3; rm -rf $W' EXIT

[ -f "$SO" ] || make -s module
cc -O2 -Icommon bench/tools/fleet_load.c common/llmd_wire.c -lhiredis -lmsgpackc -o "$W/fleet_load"

redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 777 --save '' \
    --appendonly no --dir "$W" --logfile "$W/redis.log" &
RPID=$!
for _ in $(seq 50); do [ -S "$W/redis.sock" ] && break; sleep 0.05; done

GW=$(/usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
USER_LINE=""; [ "$(id -u)" = 0 ] && USER_LINE="user root;"
mkdir -p "$W/nginx/logs" "$W/nginx/tmp"
cat > "$W/nginx/nginx.conf" <<END
load_module $SO;
$USER_LINE
worker_processes 2;
error_log $W/nginx/logs/error.log notice;
pid $W/nginx/logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $W/nginx/tmp; proxy_temp_path $W/nginx/tmp;
    upstream llm {
        llmd;
        llmd_zone llm 64m;
        llmd_redis unix:$W/redis.sock interval=100ms;
    }
    server {
        listen 127.0.0.1:$GW;
        location = /status { llmd_status; }
    }
}
END
nginx -p "$W/nginx/" -c "$W/nginx/nginx.conf"
sleep 1

status() { curl -s "http://127.0.0.1:$GW/status"; }
OWNER=$(status | /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)["upstreams"][0]["redis"]["owner_pid"])')
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)

o0=$(ticks "$OWNER"); r0=$(ticks "$RPID"); t0=$(date +%s.%N)
"$W/fleet_load" "$W/redis.sock" "$SECS" "$WORKERS" 10 "$EVENTS"
sleep 0.5
o1=$(ticks "$OWNER"); r1=$(ticks "$RPID"); t1=$(date +%s.%N)

status > "$W/status.json"
/usr/bin/python3 - "$W/status.json" "$o0" "$o1" "$r0" "$r1" "$t0" "$t1" "$HZ" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))["upstreams"][0]
o0, o1, r0, r1 = map(float, sys.argv[2:6])
t0, t1, hz = float(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
wall = t1 - t0
rd = st["redis"]
print("gateway mirror (one nginx worker): %.1f%% of a core; redis-server: %.1f%% (same run)"
      % ((o1 - o0) / hz / wall * 100, (r1 - r0) / hz / wall * 100))
print("applied: %d events, %d heartbeats, %d rejected, %d peers known"
      % (rd["events_applied"], rd["heartbeats"], rd["records_rejected"], len(st["peers"])))
le = [1, 2, 5, 10, 20, 50, 100, float("inf")]
b = rd["staleness_ms_le"]
total = sum(b)
cum = 0
for bound, n in zip(le, b):
    cum += n
    if cum >= 0.99 * total:
        print("event-to-shm staleness p99 <= %s ms (%d events; buckets %s)" % (bound, total, b))
        break
PY
