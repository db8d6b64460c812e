#!/usr/bin/python3
"""Spiky multi-tenant benchmark: flow control at the gateway.

One sim fleet serving two models (half the workers each) behind Redis, and
one traffic replayed against each policy:
  - 3 tenants, one sending 5x the others;
  - 2 models, half the requests each;
  - interactive: short prompts, a TTFT SLO, priority 1;
  - batch: long prompts, priority 0;
  - sheddable: priority -1;
  - Poisson arrivals at 50% of the fleet's capacity, with a spike in the
    middle third of each rung to 150%, 200% and 300% (the 50% rung has none).
Policies: llmd with flow control (llmd_queue, llmd_priority from the class,
llmd_fairness from the tenant), llmd without it (today's behaviour), plain
round-robin and the llm-d reference policy, on the same fleet and traffic.

Figures per policy and rung: TTFT p50/p99 per class (streamed: the first
token's arrival), goodput (requests meeting their class's SLO, per second),
answers by status, misroutes (a worker's 404 for another model), and Jain's
fairness index over the tenants' served requests against their max-min fair
shares, during the spike.

    /usr/bin/python3 bench/drivers/flow.py --out bench/results/spiky-multi-tenant
"""

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import routing  # noqa: E402
from routing import MODULE, free_port, wait_http, build_info, machine  # noqa: E402

MODELS = ["model-a", "model-b"]
TENANTS = [("heavy", 5), ("t2", 1), ("t3", 1)]
# class: share of requests, priority, prompt words, max_tokens, TTFT SLO (ms)
CLASSES = {
    "interactive": (0.4, 1, 120, 32, 1500),
    "batch":       (0.4, 0, 1500, 128, 15000),
    "sheddable":   (0.2, -1, 400, 64, 15000),
}

UPSTREAMS = {
    # reserve=2: of each model's 16 batch slots (2 workers x max batch 8),
    # 2 are kept for priority 1, about what the interactive class holds at
    # the 50% base (40% of requests, a quarter of the batch class's answer)
    "llmd-flow": "llmd;\nllmd_redis unix:REDIS interval=50ms;\n"
                 "llmd_queue size=1000 timeout=30s reserve=2 displace;\n"
                 "llmd_saturation inflight=auto;\n",
    "llmd": "llmd;\nllmd_redis unix:REDIS interval=50ms;\n",
    "round-robin": "SERVERS",
    "llm-d-ref": "llmd;\nllmd_policy llm-d;\nSERVERS",
}
# flow control is a gateway feature: only llmd-flow gives the class's
# priority and the tenant to the gateway
FLOW_LOCATION = "llmd_priority $http_x_prio;\nllmd_fairness $http_x_tenant;\n"


def pct(vals, q):
    if not vals:
        return None
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(q * len(vals)))]


def jain(xs):
    xs = [x for x in xs if x is not None]
    if not xs or sum(x * x for x in xs) == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def maxmin_shares(demand, capacity):
    """Max-min fair shares of `capacity` for these demands (water filling)."""
    share = {k: 0.0 for k in demand}
    left = dict(demand)
    cap = capacity
    while left and cap > 1e-9:
        each = cap / len(left)
        done = [k for k, d in left.items() if d <= each]
        if not done:
            for k in left:
                share[k] += each
            break
        for k in done:
            share[k] += left[k]
            cap -= left[k]
            del left[k]
    return share


class Fleet(routing.Fleet):
    """routing.py's fleet, serving two models: half the workers each, with
    the sim's own KV size."""

    def worker_flags(self, i):
        return ["--model-name", MODELS[i % 2]]


class Gateway:
    def __init__(self, work, policy, fleet):
        self.dir = os.path.join(work, "nginx-" + policy)
        self.policy, self.fleet = policy, fleet
        self.port = free_port()

    def start(self):
        servers = "".join("server 127.0.0.1:%d max_fails=0;\n" % p
                          for p in self.fleet.ports)
        body = UPSTREAMS[self.policy].replace("SERVERS", servers) \
                                     .replace("REDIS", self.fleet.redis)
        loc = FLOW_LOCATION if self.policy == "llmd-flow" else ""
        d = self.dir
        os.makedirs(d + "/logs", exist_ok=True)
        os.makedirs(d + "/tmp", exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        conf = """load_module %(module)s;
%(user)s
worker_processes 1;
error_log %(d)s/logs/error.log notice;
pid %(d)s/logs/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path %(d)s/tmp; proxy_temp_path %(d)s/tmp;
    upstream llm {
%(body)s
        keepalive 256;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location /v1/ {
%(loc)s
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_pass http://llm;
        }
        location = /llmd/status { llmd_status; }
    }
}
""" % {"module": MODULE, "user": user, "d": d, "body": body,
       "port": self.port, "loc": loc}
        with open(d + "/nginx.conf", "w") as f:
            f.write(conf)
        subprocess.run(["nginx", "-p", d + "/", "-c", d + "/nginx.conf"],
                       check=True)
        if not wait_http("http://127.0.0.1:%d/llmd/status" % self.port):
            raise SystemExit("nginx did not start")
        time.sleep(0.5)

    def stop(self):
        subprocess.run(["nginx", "-p", self.dir + "/", "-c",
                        self.dir + "/nginx.conf", "-s", "quit"],
                       stderr=subprocess.DEVNULL)
        time.sleep(0.5)


def traffic(args, base_rate, spike, seed):
    """The rung's requests: (t, tenant, class, model, words), Poisson."""
    rnd = random.Random(seed)
    third = args.duration / 3
    out, t = [], 0.0
    weights = [w for _, w in TENANTS]
    classes = list(CLASSES)
    cweights = [CLASSES[c][0] for c in classes]
    while True:
        rate = base_rate * (spike / 0.5 if third <= t < 2 * third else 1.0)
        t += rnd.expovariate(rate)
        if t >= args.duration:
            break
        tenant = rnd.choices([n for n, _ in TENANTS], weights)[0]
        cls = rnd.choices(classes, cweights)[0]
        out.append((t, tenant, cls, rnd.choice(MODELS), rnd.random()))
    return out


WORDS = "the of and to in is was for on are with as his they be at one have".split()


def send(port, req, t0, results, idx):
    t, tenant, cls, model, salt = req
    _, prio, words, max_tokens, _ = CLASSES[cls]
    text = ("%s %d " % (tenant, idx)) + " ".join(
        WORDS[(idx * 7 + i) % len(WORDS)] for i in range(words))
    body = json.dumps({"model": model, "max_tokens": max_tokens,
                       "stream": True,
                       "messages": [{"role": "user", "content": text}]})
    headers = {"Content-Type": "application/json", "X-Tenant": tenant,
               "X-Prio": str(prio)}
    rec = {"t": t, "tenant": tenant, "class": cls, "model": model,
           "status": 0, "ttft_ms": None}
    start = time.time()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("POST", "/v1/chat/completions", body, headers)
        r = c.getresponse()
        rec["status"] = r.status
        if r.status == 200:
            while True:
                line = r.readline()
                if not line:
                    break
                if line.startswith(b"data:") and rec["ttft_ms"] is None:
                    rec["ttft_ms"] = (time.time() - start) * 1000
                if line.strip() == b"data: [DONE]":
                    break
        else:
            r.read()
        c.close()
    except Exception as e:  # noqa: BLE001
        rec["error"] = str(e)
    rec["end"] = time.time() - t0
    results[idx] = rec


def run_rung(args, gw, reqs):
    results = [None] * len(reqs)
    threads = []
    t0 = time.time()
    for i, req in enumerate(reqs):
        delay = t0 + req[0] - time.time()
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=send, args=(gw.port, req, t0, results, i),
                              daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(180)
    return [r for r in results if r]


def summarize(args, recs, spike):
    third = args.duration / 3
    s = {"requests": len(recs), "status": {}}
    for r in recs:
        s["status"][str(r["status"])] = s["status"].get(str(r["status"]), 0) + 1
    s["misroutes"] = s["status"].get("404", 0)
    good = 0
    for cls, (_, _, _, _, slo) in CLASSES.items():
        mine = [r for r in recs if r["class"] == cls]
        ok = [r["ttft_ms"] for r in mine if r["status"] == 200 and r["ttft_ms"] is not None]
        met = sum(1 for x in ok if x <= slo)
        good += met
        s[cls] = {"sent": len(mine), "served": len(ok),
                  "failed": len(mine) - len(ok), "met_slo": met,
                  "ttft_p50_ms": pct(ok, 0.5), "ttft_p99_ms": pct(ok, 0.99)}
    s["goodput_rps"] = good / args.duration
    # fairness while saturated: requests sent in the spike, served or not
    win = [r for r in recs if (third <= r["t"] < 2 * third) or spike <= 0.5]
    demand = {n: sum(1 for r in win if r["tenant"] == n) for n, _ in TENANTS}
    served = {n: sum(1 for r in win if r["tenant"] == n and r["status"] == 200)
              for n, _ in TENANTS}
    shares = maxmin_shares(demand, sum(served.values()))
    s["tenants"] = {n: {"sent": demand[n], "served": served[n],
                        "fair_share": round(shares[n], 1)} for n in demand}
    s["jain"] = jain([served[n] / shares[n] if shares[n] else None for n in demand])
    return s


def capacity_probe(args, fleet, work):
    """Completions/s of the fleet under llmd without flow control at a rate
    well past saturation, batch-class-free traffic being the mix itself."""
    gw = Gateway(work, "llmd", fleet)
    gw.start()
    try:
        reqs = traffic(args, args.probe_rate, 0.5, args.seed + 99)
        recs = run_rung(args, gw, reqs)
    finally:
        gw.stop()
    done = [r for r in recs if r["status"] == 200]
    span = max(r["end"] for r in done) if done else 1
    return len(done) / span


def report(results, out):
    """REPORT.md: the figures of every rung, and the ratios the goals ask for,
    from results.json."""
    rungs = results["rungs"]
    pol = [p for p in UPSTREAMS if any(p in r for r in rungs.values())]
    lines = ["# Spiky multi-tenant: flow control at the gateway", "",
             "Made by `%s` (%s). Capacity (llmd, no flow control, far past "
             "saturation): %.1f requests/s; rungs are 50%% of it with a spike "
             "in the middle third." % (results["command"],
                                      results["build"], results["capacity_rps"]),
             "",
             "| spike | policy | goodput/s | interactive p50 / p99 ms | batch p99 ms "
             "| failed i/b/s | 429 | 503 | misroutes | Jain |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for spike in sorted(rungs, key=float):
        for p in pol:
            s = rungs[spike].get(p)
            if not s:
                continue
            f = lambda v: "-" if v is None else "%.0f" % v
            lines.append("| %.0f%% | %s | %.2f | %s / %s | %s | %d/%d/%d | %d | %d | %d | %s |" % (
                float(spike) * 100, p, s["goodput_rps"],
                f(s["interactive"]["ttft_p50_ms"]), f(s["interactive"]["ttft_p99_ms"]),
                f(s["batch"]["ttft_p99_ms"]), s["interactive"]["failed"],
                s["batch"]["failed"], s["sheddable"]["failed"],
                s["status"].get("429", 0), s["status"].get("503", 0),
                s["misroutes"], "-" if s["jain"] is None else "%.3f" % s["jain"]))
    lines += ["", "## Against the goals (ratios within this run)", ""]
    fl = lambda sp, p: rungs.get(sp, {}).get(p)
    base = fl("0.5", "llmd-flow")
    for sp in ("2.0", "3.0"):
        a, b = fl(sp, "llmd-flow"), fl(sp, "llmd")
        if a and b and b["goodput_rps"]:
            lines.append("- goodput at %.0f%%: llmd-flow / llmd without flow "
                         "control = %.2f× (goal ≥ 1.5×)"
                         % (float(sp) * 100, a["goodput_rps"] / b["goodput_rps"]))
            # the most any policy could reach: every request within its SLO
            met = sum(b[c]["met_slo"] for c in CLASSES)
            sent = sum(b[c]["sent"] for c in CLASSES)
            if met:
                ceil = b["goodput_rps"] * sent / met
                lines.append("  - ceiling (all %d requests within their SLO): "
                             "%.2f/s = %.2f× llmd's; llmd without flow control "
                             "already meets %d of them (%s)"
                             % (sent, ceil, ceil / b["goodput_rps"], met,
                                ", ".join("%s %d/%d" % (c, b[c]["met_slo"], b[c]["sent"])
                                          for c in CLASSES)))
    a = fl("2.0", "llmd-flow")
    if a and base and base["interactive"]["ttft_p99_ms"]:
        lines.append("- interactive TTFT p99 at 200%% / at 50%% (llmd-flow) = "
                     "%.2f× (goal ≤ 2×)" % (a["interactive"]["ttft_p99_ms"]
                                           / base["interactive"]["ttft_p99_ms"]))
    b = fl("2.0", "llmd")
    if a and b:
        lines.append("- interactive TTFT p99 at 200%%: llmd-flow / llmd without "
                     "flow control = %.2f×" % (a["interactive"]["ttft_p99_ms"]
                                               / b["interactive"]["ttft_p99_ms"]))
    for sp in sorted(rungs, key=float):
        a = fl(sp, "llmd-flow")
        if a and float(sp) > 0.5:
            lines.append("- %.0f%%: Jain %.3f over the tenants (goal ≥ 0.95); "
                         "failed interactive %d, batch %d; misroutes %d"
                         % (float(sp) * 100, a["jain"], a["interactive"]["failed"],
                            a["batch"]["failed"], a["misroutes"]))
    lines += ["", "![goodput and interactive TTFT p99](flow.png)"]
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(results, out)


def plot(results, out):
    """flow.png: goodput and interactive TTFT p99 per spike and policy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = results["rungs"]
    spikes = sorted(rungs, key=float)
    pol = [p for p in UPSTREAMS if any(p in r for r in rungs.values())]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for p in pol:
        xs = [float(sp) * 100 for sp in spikes if p in rungs[sp]]
        ax1.plot(xs, [rungs[sp][p]["goodput_rps"] for sp in spikes if p in rungs[sp]],
                 marker="o", label=p)
        ax2.plot(xs, [rungs[sp][p]["interactive"]["ttft_p99_ms"] or float("nan")
                      for sp in spikes if p in rungs[sp]], marker="o", label=p)
    ax1.set(xlabel="spike, % of fleet capacity", ylabel="goodput, requests/s",
            title="requests meeting their SLO")
    ax2.set(xlabel="spike, % of fleet capacity", ylabel="ms", yscale="log",
            title="interactive TTFT p99")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend()
    fig.suptitle("spiky multi-tenant, capacity %.1f req/s (%s)"
                 % (results["capacity_rps"], results["build"].get("commit")))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "flow.png"), dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--policies", default="llmd-flow,llmd,round-robin,llm-d-ref")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--profile", default="llama3-8b-h100")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--spikes", default="0.5,1.5,2.0,3.0")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--capacity", type=float, default=0)
    ap.add_argument("--probe-rate", type=float, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite REPORT.md from OUT/results.json")
    args = ap.parse_args()

    if args.report_only:
        report(json.load(open(os.path.join(args.out, "results.json"))), args.out)
        return

    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="llmd-flow-bench.")
    fleet = Fleet(args, work)
    fleet.start()
    results = {"command": " ".join(["bench/drivers/flow.py"] + sys.argv[1:]),
               "build": build_info(), "machine": machine(),
               "classes": CLASSES, "tenants": TENANTS, "rungs": {}}
    try:
        cap = args.capacity or capacity_probe(args, fleet, work)
        results["capacity_rps"] = cap
        print("capacity %.1f req/s" % cap, flush=True)
        spikes = [float(x) for x in args.spikes.split(",")]
        for k, spike in enumerate(spikes):
            reqs = traffic(args, 0.5 * cap, spike, args.seed + k)
            rung = results["rungs"].setdefault(str(spike), {})
            for policy in args.policies.split(","):
                fleet.restart_workers()
                gw = Gateway(work, policy, fleet)
                gw.start()
                try:
                    recs = run_rung(args, gw, reqs)
                finally:
                    gw.stop()
                s = summarize(args, recs, spike)
                rung[policy] = s
                with open(os.path.join(work, "requests-%s-%s.jsonl"
                                       % (spike, policy)), "w") as f:
                    for r in recs:
                        f.write(json.dumps(r) + "\n")
                print("spike %.0f%% %-11s goodput %.2f/s  interactive p99 %s ms "
                      "failed %d  jain %s  misroutes %d  status %s" % (
                          spike * 100, policy, s["goodput_rps"],
                          s["interactive"]["ttft_p99_ms"] and
                          round(s["interactive"]["ttft_p99_ms"]),
                          s["interactive"]["failed"],
                          s["jain"] and round(s["jain"], 3), s["misroutes"],
                          s["status"]), flush=True)
                json.dump(results, open(os.path.join(args.out, "results.json"), "w"),
                          indent=1)
        report(results, args.out)
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
