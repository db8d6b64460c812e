#!/usr/bin/python3
"""Disaggregated prefill/decode benchmark, three parts:

1. transport: workers/build/llmd-pd-bench, the KV transfer's TCP transport
   against raw loopback TCP in the same run (GB/s and ratio); on a GPU,
   workers/build/llmd-pd-bench-cuda, the cuda-ipc copies against a
   device-to-device copy and the time to move one layer (part "gpu");
2. exposed time and overlap: a prefill and a decode worker with an
   8B-shaped KV (32 layers, 8 KV heads, head_dim 128, bf16: 128 KiB per
   token) and the llama3-8b-h100 sim profile's prefill times; prompts of
   1k and 4k tokens prefilled remotely, at the profile's speed and at half
   of it (a link faster than the prefill); from the decode worker's metrics:
   the exposed time (prefill's last layer -> decode can schedule) per 1k
   tokens and the share of bytes sent before the prefill's last layer;
3. end to end: the benchmark's mixed workload through nginx against three
   colocated workers, then against one prefill + two decode workers with
   llmd_pd at each --thresholds value; inter-token latency (p50 to max) of
   the short requests and TTFT of all, from llmd-bench's per-request
   records.

    bench/drivers/pd.py --out bench/results/pd [--smoke]

Run it with Debian's /usr/bin/python3.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKER = os.path.join(TOP, "workers/build/llmd-worker")
PDBENCH = os.path.join(TOP, "workers/build/llmd-pd-bench")
PDBENCH_CUDA = os.path.join(TOP, "workers/build/llmd-pd-bench-cuda")
BENCH = os.path.join(TOP, "bench/build/llmd-bench")
MODULE = os.path.join(TOP, "build/ngx/ngx_llmd_module.so")
PROFILE = os.path.join(TOP, "workers/profiles/llama3-8b-h100.profile")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def post(url, body, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **(headers or {})})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def metric(text, name, labels=""):
    m = re.search(r"^%s\{[^}]*%s[^}]*\} (\S+)$" % (re.escape(name), labels),
                  text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_http(url, secs=15):
    end = time.time() + secs
    while time.time() < end:
        try:
            get(url)
            return True
        except Exception:
            time.sleep(0.05)
    return False


class Procs:
    def __init__(self, work):
        self.work = work
        self.procs = []

    def worker(self, name, args):
        port = free_port()
        log = open(os.path.join(self.work, name + ".log"), "ab")
        p = subprocess.Popen([WORKER, "--listen", "127.0.0.1:%d" % port,
                              "--worker-id", name] + args,
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        if not wait_http("http://127.0.0.1:%d/health" % port):
            raise SystemExit("worker %s did not start" % name)
        return "http://127.0.0.1:%d" % port

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def kv_addr(work, name):
    with open(os.path.join(work, name + ".log")) as f:
        m = re.search(r"KV transfer listener on (\S+)", f.read())
    return m.group(1)


# ---------------------------------------------------------------- part 1

def transport(args):
    out = subprocess.run([PDBENCH, "--tokens", args.transport_tokens,
                          "--repeat", str(args.repeat)],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def gpu_transport(args):
    """cuda-ipc copies against a device-to-device copy, on a GPU."""
    if not os.path.exists(PDBENCH_CUDA):
        return {"skipped": "built without nvcc"}
    out = subprocess.run([PDBENCH_CUDA, "--tokens", args.transport_tokens,
                          "--repeat", str(args.repeat)],
                         capture_output=True, text=True).stdout
    if out.startswith("SKIP"):
        return {"skipped": out.strip()}
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------- part 2

def full_kv_profile(work):
    """llama3-8b-h100's step times with the real model's KV geometry."""
    text = open(PROFILE).read()
    for key, val in (("kv_layers", 32), ("kv_heads", 8), ("head_dim", 128),
                     ("dtype_bytes", 2)):
        text = re.sub(r"^%s\s+\S+" % key, "%s %d" % (key, val), text, flags=re.M)
    path = os.path.join(work, "llama3-8b-fullkv.profile")
    with open(path, "w") as f:
        f.write(text)
    return path


def exposed(args, work, speed):
    work = os.path.join(work, "exposed-%g" % speed)
    os.makedirs(work, exist_ok=True)
    procs = Procs(work)
    prof = full_kv_profile(work)
    sizes = [int(x) for x in args.exposed_tokens.split(",")]
    blocks = max(sizes) // 16 + 64
    common = ["--backend", "sim", "--sim-profile", prof, "--speed", str(speed),
              "--kv-blocks", str(blocks), "--max-model-len", str(max(sizes) + 64)]
    rows = []
    try:
        procs.worker("prefill", common + ["--role", "prefill", "--kv-listen",
                                          "127.0.0.1:0"])
        kv = kv_addr(work, "prefill")
        dec = procs.worker("decode", common + ["--role", "decode"])
        pre = open(os.path.join(work, "prefill.log")).read()
        pre_url = "http://" + re.search(r"listening on (\S+) ", pre).group(1)
        # touch every page of both pools once, as a long-running worker has:
        # a first touch costs a page fault and zeroing, which is not the
        # transfer's cost
        for url in (pre_url, dec):
            for i in range(3):
                post(url + "/v1/completions",
                     {"prompt": "%07d " % i * (max(sizes) // 8), "max_tokens": 1})
        xfer = 1
        for n in sizes:
            for i in range(args.repeat):
                # a byte is a token: a distinct prompt of exactly n tokens
                prompt = ("%08d " % (i * 7919 + n)) * (n // 9)
                prompt += "x" * (n - len(prompt))
                before = get(dec + "/metrics")
                t0 = time.time()
                r = post(dec + "/v1/completions",
                         {"prompt": prompt, "max_tokens": 1, "temperature": 0},
                         {"X-LLMD-Prefill-Peer": kv,
                          "X-LLMD-Transfer-Id": "%x" % xfer})
                wall = time.time() - t0
                xfer += 1
                after = get(dec + "/metrics")
                d = lambda name, lab="": metric(after, name, lab) - metric(before, name, lab)
                got = d("llmd:kv_transfer_bytes_total", 'direction="received"')
                rows.append({
                    "tokens": r["usage"]["prompt_tokens"],
                    "landed": d("llmd:kv_transfers_total", 'outcome="landed"'),
                    "bytes": got,
                    "exposed_ms": 1000 * d("llmd:kv_transfer_exposed_seconds_sum"),
                    "early_share": d("llmd:kv_transfer_early_bytes_total") / got if got else 0,
                    "request_ms": 1000 * wall,
                })
    finally:
        procs.stop()
    summary = []
    for n in sizes:
        rs = sorted((r for r in rows if abs(r["tokens"] - n) < 2 and r["landed"] == 1),
                    key=lambda r: r["exposed_ms"])
        if not rs:
            continue
        med = rs[len(rs) // 2]
        summary.append({
            "speed": speed, "tokens": n, "runs": len(rs),
            "mib": round(med["bytes"] / 2**20, 1),
            "exposed_ms_median": round(med["exposed_ms"], 3),
            "exposed_ms_per_1k_tokens": round(med["exposed_ms"] * 1000 / n, 3),
            "early_share_median": round(sorted(r["early_share"] for r in rs)[len(rs) // 2], 4),
            "request_ms_median": round(sorted(r["request_ms"] for r in rs)[len(rs) // 2], 1),
        })
    return summary, rows


# ---------------------------------------------------------------- part 3

NGINX_CONF = """load_module %(module)s;
%(user)s
worker_processes 1;
error_log %(d)s/error.log notice;
pid %(d)s/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(d)s; proxy_temp_path %(d)s;
    client_max_body_size 8m;
    client_body_buffer_size 1m;
    upstream llm {
        llmd;
        llmd_zone llm 32m;
        llmd_redis unix:%(redis)s interval=50ms;
        %(pd)s
        keepalive 64;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location /v1/ {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-LLMD-Prefill-Peer $llmd_prefill_peer;
            proxy_set_header X-LLMD-Transfer-Id $llmd_transfer_id;
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_pass http://llm;
        }
        location = /llmd/status { llmd_status; }
    }
}
"""


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


def end_to_end(args, work, mode, threshold):
    d = os.path.join(work, "e2e-%s-%d" % (mode, threshold))
    os.makedirs(d, exist_ok=True)
    redis = os.path.join(d, "redis.sock")
    procs = Procs(d)
    rp = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", redis,
                           "--unixsocketperm", "777", "--save", "",
                           "--appendonly", "no", "--dir", d],
                          stdout=subprocess.DEVNULL)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    try:
        for _ in range(100):
            if os.path.exists(redis):
                break
            time.sleep(0.05)
        common = ["--backend", "sim", "--sim-profile", "llama3-8b-h100",
                  "--speed", str(args.speed), "--max-batch", "64",
                  "--heartbeat-ms", "50", "--redis", "unix://" + redis]
        roles = (["both"] * 3 if mode == "colocated"
                 else ["prefill", "decode", "decode"])
        decode_urls = []
        for i, role in enumerate(roles):
            extra = ["--kv-listen", "127.0.0.1:0"] if role == "prefill" else []
            url = procs.worker("%s-%d" % (role, i), common + ["--role", role] + extra)
            if role != "prefill":
                decode_urls.append(url)
        pd = ("llmd_pd threshold=%d max_queue=%d;" % (threshold, 65536)
              if mode == "disaggregated" else "")
        with open(conf, "w") as f:
            f.write(NGINX_CONF % {"module": MODULE, "d": d, "redis": redis,
                                  "pd": pd, "port": port,
                                  "user": "user root;" if os.geteuid() == 0 else ""})
        subprocess.run(["nginx", "-p", d + "/", "-c", conf], check=True)
        if not wait_http("http://127.0.0.1:%d/llmd/status" % port):
            raise SystemExit("nginx did not start")
        time.sleep(0.5)
        out = os.path.join(d, "requests.jsonl")
        summ = os.path.join(d, "summary.json")
        subprocess.run([BENCH, "--url", "http://127.0.0.1:%d/v1/chat/completions" % port,
                        "--workload", "mixed", "--rate", str(args.rate),
                        "--duration", str(args.duration), "--seed", "7",
                        "--long-min-tokens", str(args.long_min),
                        "--long-max-tokens", "7000",
                        "--long-output-tokens", "128", "--tool-tokens", "256",
                        "--long-fraction", str(args.long_fraction),
                        "--short-max-tokens", "512", "--short-max-output", "64",
                        "--out", out, "--summary", summ],
                       check=True, stdout=subprocess.DEVNULL)
        recs = [json.loads(line) for line in open(out)]
        # short: the RAG-style lookups, whatever the threshold
        short = [r for r in recs if r.get("tag") == "short"]
        gaps = [g for r in short for g in r.get("itl_ms", [])]
        ttft = [r["ttft_ms"] for r in recs if r.get("ttft_ms") is not None]
        landed = sum(metric(get(u + "/metrics"), "llmd:kv_transfers_total",
                            'outcome="landed"') for u in decode_urls)
        ok = sum(1 for r in recs if r.get("status") == 200)
        return {
            "mode": mode, "threshold": threshold if mode == "disaggregated" else None,
            "requests": len(recs), "ok": ok,
            "short_requests": len(short),
            "short_itl_ms_p50": round(percentile(gaps, 50), 2),
            "short_itl_ms_p90": round(percentile(gaps, 90), 2),
            "short_itl_ms_p99": round(percentile(gaps, 99), 2),
            "short_itl_ms_p999": round(percentile(gaps, 99.9), 2),
            "short_itl_ms_max": round(max(gaps) if gaps else 0, 2),
            "short_gaps_over_50ms": sum(1 for g in gaps if g > 50),
            "short_gaps": len(gaps),
            "ttft_ms_p50": round(percentile(ttft, 50), 1),
            "ttft_ms_p90": round(percentile(ttft, 90), 1),
            "remote_prefills": int(landed),
        }
    finally:
        subprocess.run(["nginx", "-p", d + "/", "-c", conf, "-s", "quit"],
                       stderr=subprocess.DEVNULL)
        procs.stop()
        rp.send_signal(signal.SIGTERM)
        rp.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--transport-tokens", default="128,1024,4096")
    ap.add_argument("--exposed-tokens", default="1024,4096")
    ap.add_argument("--exposed-speeds", default="1,2",
                    help="sim time scales of the prefill: 2 = a prefill half "
                         "as fast as the profile's H100")
    ap.add_argument("--rate", type=float, default=3.0)
    ap.add_argument("--duration", type=float, default=40)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--thresholds", default="1024,256",
                    help="llmd_pd thresholds of the disaggregated runs")
    ap.add_argument("--long-fraction", type=float, default=0.15)
    ap.add_argument("--long-min", type=int, default=3000)
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--parts", default="transport,gpu,exposed,e2e")
    args = ap.parse_args()
    if args.smoke:
        args.repeat, args.transport_tokens, args.exposed_tokens = 1, "128", "256"
        args.duration, args.rate = 4, 2.0
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="llmd-pd-bench-")
    summary_path = os.path.join(args.out, "summary.json")
    result = {}
    if os.path.exists(summary_path):
        # a run of some parts keeps the other parts' figures
        with open(summary_path) as f:
            result = json.load(f)
    result["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release}
    parts = args.parts.split(",")
    if "transport" in parts:
        result["transport"] = transport(args)
        print(json.dumps({"transport": result["transport"]}), flush=True)
    if "gpu" in parts:
        result["gpu_transport"] = gpu_transport(args)
        print(json.dumps({"gpu_transport": result["gpu_transport"]}), flush=True)
    if "exposed" in parts:
        result["exposed"] = []
        with open(os.path.join(args.out, "exposed.jsonl"), "w") as f:
            for speed in args.exposed_speeds.split(","):
                summ, rows = exposed(args, work, float(speed))
                result["exposed"] += summ
                for r in rows:
                    f.write(json.dumps(dict(r, speed=float(speed))) + "\n")
        print(json.dumps({"exposed": result["exposed"]}), flush=True)
    if "e2e" in parts:
        result["end_to_end"] = [end_to_end(args, work, "colocated", 0)] + [
            end_to_end(args, work, "disaggregated", int(t))
            for t in args.thresholds.split(",")]
        print(json.dumps({"end_to_end": result["end_to_end"]}), flush=True)
    with open(summary_path, "w") as f:
        json.dump(result, f, indent=1)
    if not args.keep:
        subprocess.run(["rm", "-rf", work])
    else:
        print("work dir:", work)


if __name__ == "__main__":
    main()
