#!/usr/bin/python3
"""Routing benchmark driver: one sim fleet, one traffic, one policy swapped.

For each policy this starts nginx (Debian's binary, with ngx_llmd_module
loaded for every policy so the only change is the upstream block) in front
of the same N llmd-worker sim processes and the same Redis, runs llmd-bench
at each rate of the sweep, and records the summaries, the workers' own
prefix-cache counters and per-worker load over time.  Then it writes a
markdown table and PNG plots.

    bench/drivers/routing.py --out bench/results/NAME [--smoke] [options]

Burst mode (--burst-sizes N1,N2,...; the default for the bursty workload):
each rung sends --bursts bursts of N requests at once, the next burst when
all of the previous one ended, instead of Poisson arrivals at a rate; rung k
uses seed + k, so that no prompt of an earlier rung is still cached; no
capacity is measured.  --bench-args passes further workload flags to
llmd-bench (e.g. the mixed workload's lengths).

Run it with Debian's /usr/bin/python3 (python3-matplotlib for the plots).
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKER = os.path.join(TOP, "workers/build/llmd-worker")
BENCH = os.path.join(TOP, "bench/build/llmd-bench")
MODULE = os.path.join(TOP, "build/ngx/ngx_llmd_module.so")

# upstream{} bodies; SERVERS and REDIS are filled in
POLICIES = {
    "round-robin": "SERVERS",
    "least_conn": "least_conn;\nSERVERS",
    "random-two": "random two least_conn;\nSERVERS",
    "hash-session": "hash $http_x_session_id consistent;\nSERVERS",
    "llmd-approx": "llmd;\nllmd_zone llm 32m;\nSERVERS",
    "llmd-precise": "llmd;\nllmd_zone llm 32m;\nllmd_redis unix:REDIS interval=50ms;\n"
                    "llmd_predict off;\nSERVERS",
    "llmd": "llmd;\nllmd_zone llm 32m;\nllmd_redis unix:REDIS interval=50ms;\n"
            "llmd_predict on;\nSERVERS",
    # precise routing with flow control: requests wait at the gateway while
    # every worker has max_batch requests in flight (llmd_saturation auto)
    "llmd-flow": "llmd;\nllmd_zone llm 32m;\nllmd_redis unix:REDIS interval=50ms;\n"
                 "llmd_predict off;\nllmd_queue size=1000 timeout=30s;\n"
                 "llmd_saturation inflight=auto;\nSERVERS",
    "llm-d-ref": "llmd;\nllmd_policy llm-d;\nllmd_zone llm 32m;\nSERVERS",
    "dynamo-ref": "llmd;\nllmd_policy dynamo;\nllmd_zone llm 32m;\nSERVERS",
}

DEFAULT_POLICIES = ["round-robin", "least_conn", "random-two", "hash-session",
                    "llmd-approx", "llmd-precise", "llmd", "llm-d-ref",
                    "dynamo-ref"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, secs=10):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return True
        except Exception:
            time.sleep(0.05)
    return False


def get(url):
    return urllib.request.urlopen(url, timeout=5).read().decode()


def metric(text, name):
    """Sum of a Prometheus counter over its label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Fleet:
    """Redis and the sim workers, shared by every policy of the run."""

    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.procs = []
        self.ports = []
        self.redis = os.path.join(work, "redis.sock")

    def start(self):
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.redis,
             "--unixsocketperm", "777", "--save", "", "--appendonly", "no",
             "--dir", self.work], stdout=subprocess.DEVNULL))
        for _ in range(100):
            if os.path.exists(self.redis):
                break
            time.sleep(0.05)
        self.start_workers()

    def worker_flags(self, i):
        """What worker i serves, and with how much KV; the rest is common."""
        return ["--model-name", "llmd-sim", "--kv-blocks", str(self.args.kv_blocks)]

    def start_workers(self):
        a = self.args
        self.workers = []
        self.ports = [free_port() for _ in range(a.workers)]
        for i, port in enumerate(self.ports):
            log = open(os.path.join(self.work, "worker%d.log" % i), "ab")
            self.workers.append(subprocess.Popen(
                [WORKER, "--listen", "127.0.0.1:%d" % port, "--backend", "sim",
                 "--sim-profile", a.profile, "--speed", str(a.speed),
                 "--max-batch", str(a.max_batch),
                 "--worker-id", "w%d" % i, "--heartbeat-ms", "50",
                 "--redis", "unix://" + self.redis] + self.worker_flags(i),
                stdout=log, stderr=subprocess.STDOUT))
        for port in self.ports:
            if not wait_http("http://127.0.0.1:%d/health" % port):
                raise SystemExit("worker on %d did not start" % port)

    def restart_workers(self):
        """A cold fleet for every policy: empty caches, same settings."""
        for w in self.workers:
            w.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.wait()
        subprocess.run(["redis-cli", "-s", self.redis, "FLUSHALL"],
                       stdout=subprocess.DEVNULL)
        self.start_workers()

    def counters(self):
        out = []
        for port in self.ports:
            text = get("http://127.0.0.1:%d/metrics" % port)
            out.append({
                "port": port,
                "prefix_queries": metric(text, "vllm:prefix_cache_queries_total"),
                "prefix_hits": metric(text, "vllm:prefix_cache_hits_total"),
                "running": metric(text, "vllm:num_requests_running"),
                "waiting": metric(text, "vllm:num_requests_waiting"),
            })
        return out

    def stop(self):
        for p in getattr(self, "workers", []) + self.procs:
            p.send_signal(signal.SIGTERM)
        for p in getattr(self, "workers", []) + self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


class Gateway:
    def __init__(self, work, policy, fleet, instances=1):
        self.work = os.path.join(work, "nginx-" + policy)
        self.policy = policy
        self.fleet = fleet
        self.ports = [free_port() for _ in range(instances)]
        self.masters = []

    def start(self):
        servers = "".join("server 127.0.0.1:%d max_fails=0;\n" % p
                          for p in self.fleet.ports)
        body = POLICIES[self.policy].replace("SERVERS", servers) \
                                    .replace("REDIS", self.fleet.redis)
        user = "user root;" if os.geteuid() == 0 else ""
        for i, port in enumerate(self.ports):
            d = "%s-%d" % (self.work, i)
            os.makedirs(d + "/logs", exist_ok=True)
            os.makedirs(d + "/tmp", exist_ok=True)
            conf = """load_module %(module)s;
%(user)s
worker_processes 1;
error_log %(d)s/logs/error.log notice;
pid %(d)s/logs/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path %(d)s/tmp; proxy_temp_path %(d)s/tmp;
    client_max_body_size 8m;
    client_body_buffer_size 1m;
    upstream llm {
%(body)s
        keepalive 256;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location /v1/ {
            llmd_debug_headers on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_pass http://llm;
        }
        location = /llmd/status { llmd_status; }
    }
}
""" % {"module": MODULE, "user": user, "d": d, "body": body, "port": port}
            with open(d + "/nginx.conf", "w") as f:
                f.write(conf)
            subprocess.run(["nginx", "-p", d + "/", "-c", d + "/nginx.conf",
                            "-t", "-q"], check=True)
            subprocess.run(["nginx", "-p", d + "/", "-c", d + "/nginx.conf"],
                           check=True)
            self.masters.append(d)
        for port in self.ports:
            if not wait_http("http://127.0.0.1:%d/llmd/status" % port):
                raise SystemExit("nginx did not start")
        # let the Redis mirror see the workers
        time.sleep(0.5)

    def stop(self):
        for d in self.masters:
            subprocess.run(["nginx", "-p", d + "/", "-c", d + "/nginx.conf",
                            "-s", "quit"], stderr=subprocess.DEVNULL)
        time.sleep(0.5)


def sample_load(fleet, out, stop):
    """Per-worker running+waiting every 0.5 s, for the load-over-time plot."""
    t0 = time.time()
    while not stop.is_set():
        try:
            c = fleet.counters()
            out.append({"t": round(time.time() - t0, 2),
                        "load": [w["running"] + w["waiting"] for w in c]})
        except Exception:
            pass
        stop.wait(0.5)


def run_rung(args, gw, fleet, rate, rung_dir, burst=0, seed=None):
    os.makedirs(rung_dir, exist_ok=True)
    before = fleet.counters()
    samples, stop = [], threading.Event()
    # a daemon: an interrupted run must not wait for it at exit
    sampler = threading.Thread(target=sample_load, args=(fleet, samples, stop),
                               daemon=True)
    sampler.start()

    procs = []
    n = len(gw.ports)
    url = "http://127.0.0.1:%d/v1/chat/completions"
    if burst > 0:
        arrivals = ["--concurrency-burst", str(burst), "--bursts", str(args.bursts)]
    else:
        arrivals = ["--rate", "%.3f" % rate, "--duration", str(args.duration)]
    seed = args.seed if seed is None else seed
    source = ["--workload", args.workload, "--seed", str(seed)] + arrivals \
             + args.workload_args
    shards = [source]
    if n > 1:
        # several gateways: one traffic, split by session so that every
        # client drives its share of the same users at their original times
        trace = os.path.join(rung_dir, "trace.jsonl")
        subprocess.run([BENCH, "--url", url % gw.ports[0], "--dump-trace", trace]
                       + source, check=True, stdout=subprocess.DEVNULL)
        parts = [open(os.path.join(rung_dir, "trace-%d.jsonl" % i), "w")
                 for i in range(n)]
        for line in open(trace):
            rec = json.loads(line)
            parts[int(rec.get("session") or 0) % n].write(line)
        for f in parts:
            f.close()
        os.unlink(trace)
        shards = [["--trace", os.path.join(rung_dir, "trace-%d.jsonl" % i)]
                  for i in range(n)]
    for i, port in enumerate(gw.ports):
        cmd = [BENCH, "--url", url % port] + shards[i] + [
               "--slo-ttft", str(args.slo_ttft), "--slo-itl", str(args.slo_itl),
               "--out", os.path.join(rung_dir, "requests-%d.jsonl" % i),
               "--summary", os.path.join(rung_dir, "summary-%d.json" % i),
               "--timeout", "120"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(
                                          rung_dir, "bench-%d.log" % i), "w")))
    for p in procs:
        p.wait()
        if p.returncode != 0:
            raise SystemExit("llmd-bench failed, see " + rung_dir)

    stop.set()
    sampler.join()
    after = fleet.counters()

    summaries = [json.load(open(os.path.join(rung_dir, "summary-%d.json" % i)))
                 for i in range(n)]
    q = sum(a["prefix_queries"] - b["prefix_queries"] for a, b in zip(after, before))
    h = sum(a["prefix_hits"] - b["prefix_hits"] for a, b in zip(after, before))
    result = {"rate": rate, "summaries": summaries,
              "burst": burst or None, "seed": seed,
              "prefix_hit_rate": h / q if q else 0.0,
              "load_over_time": samples}
    json.dump(result, open(os.path.join(rung_dir, "rung.json"), "w"), indent=1)
    return result


def merged(summaries, key, sub=None):
    """The first gateway's figure (several gateways: the mean)."""
    vals = []
    for s in summaries:
        v = s.get(key)
        if sub is not None and isinstance(v, dict):
            v = v.get(sub)
        if isinstance(v, (int, float)):
            vals.append(v)
    return sum(vals) / len(vals) if vals else float("nan")


def capacity_probe(args, fleet, work):
    """Requests/s the fleet completes under round-robin at a rate well past
    saturation: the 100% mark of the sweep."""
    gw = Gateway(work, "round-robin", fleet)
    gw.start()
    try:
        r = run_rung(args, gw, fleet, args.probe_rate,
                     os.path.join(work, "capacity-probe"))
    finally:
        gw.stop()
    return merged(r["summaries"], "throughput_rps")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny fleet and rates: checks the pipeline, not speed")
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES))
    ap.add_argument("--workload", default="shared-prefix")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--profile", default="llama3-8b-h100")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--kv-blocks", type=int, default=0,
                    help="per worker; 0: sized so the shared-prefix "
                         "workload's distinct tokens (every group's system "
                         "prompt and its users' questions) fill 73%% of the "
                         "fleet's KV capacity, as in llm-d's benchmark")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--rates", default="0.3,0.5,0.7,0.9,1.1",
                    help="fractions of the measured capacity")
    ap.add_argument("--capacity", type=float, default=0,
                    help="fleet capacity in requests/s (0: measure it)")
    ap.add_argument("--probe-rate", type=float, default=0)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--gateways", type=int, default=1,
                    help="nginx instances sharing the Redis state")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slo-ttft", type=float, default=2000)
    ap.add_argument("--slo-itl", type=float, default=100)
    ap.add_argument("--groups", type=int, default=40)
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--system-tokens", type=int, default=3000)
    ap.add_argument("--question-tokens", type=int, default=600)
    ap.add_argument("--output-tokens", type=int, default=100)
    ap.add_argument("--burst-sizes", default="",
                    help="burst mode: one rung per burst size (requests sent "
                         "at once); bursty: 800")
    ap.add_argument("--bursts", type=int, default=3,
                    help="bursts per rung in burst mode")
    ap.add_argument("--bench-args", default="",
                    help="further llmd-bench workload flags, e.g. "
                         "'--long-min-tokens 3000 --long-max-tokens 7000'")
    args = ap.parse_args()

    if args.smoke:
        args.workers, args.duration, args.speed = 2, 4, 0.2
        args.groups, args.users = 4, 2
        args.system_tokens, args.question_tokens, args.output_tokens = 600, 100, 8
        args.rates = "0.5"
        if args.capacity == 0:
            args.capacity = 8
        if args.policies == ",".join(DEFAULT_POLICIES):
            args.policies = "round-robin,llmd"

    args.workload_args = []
    if args.workload == "shared-prefix":
        args.workload_args = ["--groups", str(args.groups), "--users", str(args.users),
                              "--system-tokens", str(args.system_tokens),
                              "--question-tokens", str(args.question_tokens),
                              "--output-tokens", str(args.output_tokens)]
        if args.kv_blocks == 0:
            # llm-d's 73%: 150 x (6,000 + 5 x 1,200) tokens against
            # 8 x 307,328.  The questions recur too, so they count.
            demand = args.groups * (args.system_tokens
                                    + args.users * args.question_tokens) / 16.0
            args.kv_blocks = max(256, int(demand / 0.73 / args.workers))
    elif args.kv_blocks == 0:
        args.kv_blocks = 4096
    args.workload_args += shlex.split(args.bench_args)
    if args.workload == "bursty" and not args.burst_sizes:
        args.burst_sizes = "800"
    bursts = [int(x) for x in args.burst_sizes.split(",") if x]
    if bursts and args.gateways > 1:
        raise SystemExit("--burst-sizes: one gateway only")

    for exe in (WORKER, BENCH, MODULE):
        if not os.path.exists(exe):
            raise SystemExit("%s is missing: run make" % exe)

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="llmd-rb-")
    snapshot_binaries(work)
    fleet = Fleet(args, work)
    results = {"args": {k: v for k, v in vars(args).items()},
               "machine": machine(), "build": build_info(), "policies": {}}
    try:
        fleet.start()
        results["capacity_measured"] = args.capacity == 0 and not bursts
        if args.capacity == 0 and not bursts:
            if args.probe_rate == 0:
                args.probe_rate = 4.0 * args.workers
            args.capacity = capacity_probe(args, fleet, work)
            fleet.restart_workers()
        results["capacity_rps"] = args.capacity
        if not bursts:
            print("fleet capacity: %.2f requests/s" % args.capacity, flush=True)
        # (fraction of capacity, burst size) per rung
        ladder = [(float(b), b) for b in bursts] if bursts else \
                 [(float(x), 0) for x in args.rates.split(",")]

        for policy in args.policies.split(","):
            gw = Gateway(work, policy, fleet, args.gateways)
            gw.start()
            rungs = []
            try:
                for k, (frac, burst) in enumerate(ladder):
                    rate = 0.0 if burst else frac * args.capacity
                    r = run_rung(args, gw, fleet, rate,
                                 os.path.join(out, "raw", policy,
                                              "burst-%d" % burst if burst
                                              else "%.2f" % frac), burst,
                                 # bursts: new texts per rung, so that no
                                 # prompt is still cached from the last one
                                 args.seed + k if burst else args.seed)
                    r["fraction"] = 0.0 if burst else frac
                    rungs.append(r)
                    s = r["summaries"]
                    print("%-13s %s: TTFT p90 %8.1f ms, ITL p90 %6.1f ms, "
                          "%7.1f out tok/s, success %.3f, prefix hits %.2f"
                          % (policy, "burst %4d" % burst if burst
                             else "rate %5.2f/s" % rate, merged(s, "ttft_ms", "p90"),
                             merged(s, "itl_ms", "p90"),
                             merged(s, "output_tokens_per_s") * len(s),
                             merged(s, "success_rate"), r["prefix_hit_rate"]),
                          flush=True)
            finally:
                gw.stop()
            results["policies"][policy] = rungs
            fleet.restart_workers()
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)

    json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
    subprocess.run([sys.executable, os.path.join(TOP, "bench/drivers/report.py"),
                    out], check=True)


def build_info():
    """The commit the binaries were built from, as far as the tree tells:
    HEAD and the uncommitted source files they may include."""
    def git(*a):
        # a tree from a tarball, or a machine without git, has no commit
        try:
            r = subprocess.run(["git", "-C", TOP] + list(a), capture_output=True, text=True)
        except OSError:
            return ""
        return r.stdout.rstrip("\n") if r.returncode == 0 else ""
    dirty = git("status", "--porcelain", "--", "ngx_llmd_module", "workers/src",
                "common", "bench/src").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": [line[3:] for line in dirty]}


def snapshot_binaries(work):
    """Run copies, so that a rebuild during a long run cannot mix builds
    between policies."""
    global WORKER, BENCH, MODULE
    d = os.path.join(work, "bin")
    os.makedirs(d)
    copies = []
    for exe in (WORKER, BENCH, MODULE):
        dst = os.path.join(d, os.path.basename(exe))
        shutil.copy2(exe, dst)
        copies.append(dst)
    WORKER, BENCH, MODULE = copies


def machine():
    info = {"cores": os.cpu_count()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE")
                                * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except Exception:
        pass
    return info


if __name__ == "__main__":
    main()
