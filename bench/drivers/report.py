#!/usr/bin/python3
"""Tables and plots of a routing benchmark run (bench/drivers/routing.py).

    bench/drivers/report.py RESULTS_DIR

Writes RESULTS_DIR/REPORT.md and RESULTS_DIR/*.png from results.json.
"""

import json
import math
import os
import shlex
import sys


def num(s, key, sub=None):
    vals = []
    for x in s:
        v = x.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(float(v))
    return sum(vals) / len(vals) if vals else float("nan")


def total(s, key, sub=None):
    vals = []
    for x in s:
        v = x.get(key)
        if sub is not None:
            v = v.get(sub) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(float(v))
    return sum(vals) if vals else float("nan")


def tagged(s, tag, key, sub):
    """A figure of the requests of one tag (mixed: short, long)."""
    return num([x.get("by_tag", {}).get(tag, {}) for x in s], key, sub)


def has_tag(res, tag):
    return any(tag in x.get("by_tag", {}) for rungs in res["policies"].values()
               for r in rungs for x in r["summaries"])


def rows(res):
    for policy, rungs in res["policies"].items():
        for r in rungs:
            s = r["summaries"]
            yield policy, r, {
                "rate": r["rate"],
                "burst": r.get("burst") or 0,
                "frac": r.get("burst") or r.get("fraction", 0),
                "short_ttft_p90": tagged(s, "short", "ttft_ms", "p90"),
                "short_itl_p90": tagged(s, "short", "itl_ms", "p90"),
                "ttft_p50": num(s, "ttft_ms", "p50"),
                "ttft_p90": num(s, "ttft_ms", "p90"),
                "ttft_p99": num(s, "ttft_ms", "p99"),
                "itl_p90": num(s, "itl_ms", "p90"),
                "rps": total(s, "throughput_rps"),
                "tok_s": total(s, "output_tokens_per_s"),
                "success": num(s, "success_rate"),
                "goodput": total(s, "slo", "goodput_rps"),
                "attain": num(s, "slo", "attainment"),
                "hit": r["prefix_hit_rate"],
                "max_mean": max_over_mean(r),
            }


def max_over_mean(r):
    """Peak per-worker load over the mean, averaged over the samples."""
    ratios = []
    for smp in r.get("load_over_time", []):
        load = smp["load"]
        mean = sum(load) / len(load) if load else 0
        if mean > 0:
            ratios.append(max(load) / mean)
    return sum(ratios) / len(ratios) if ratios else float("nan")


def fmt(v, spec):
    return "-" if v != v else spec % v


def ratio(a, b):
    return a / b if b else float("nan")


def load_label(m):
    return "burst %d" % m["burst"] if m["burst"] else "%d%%" % round(m["frac"] * 100)


def main():
    out = sys.argv[1]
    res = json.load(open(os.path.join(out, "results.json")))
    a = res["args"]

    bursty = bool(a.get("burst_sizes"))
    short = has_tag(res, "short")
    lines = ["# Routing benchmark: %s" % a["workload"], ""]
    if bursty:
        lines.append("Fleet: %d sim workers (`%s` profile, `--speed %s`, %d KV blocks "
                     "each, max batch %d); %d gateway instance(s); burst mode: each "
                     "rung sends %d bursts of N requests at once, the next when all "
                     "of the previous burst ended; seed %d (+k at the k-th rung, "
                     "so that no prompt repeats across rungs)."
                     % (a["workers"], a["profile"], a["speed"], a["kv_blocks"],
                        a["max_batch"], a["gateways"], a["bursts"], a["seed"]))
    else:
        lines.append("Fleet: %d sim workers (`%s` profile, `--speed %s`, %d KV blocks "
                     "each, max batch %d); %d gateway instance(s); capacity %.2f "
                     "requests/s (%s); %.0f s per rung; seed %d."
                     % (a["workers"], a["profile"], a["speed"], a["kv_blocks"],
                        a["max_batch"], a["gateways"], res.get("capacity_rps", 0),
                        "round-robin, measured in the same run"
                        if res.get("capacity_measured", True)
                        else "given with --capacity, not measured",
                        a["duration"], a["seed"]))
        if a["workload"] in ("mixed", "multi-turn") and res.get("capacity_measured", True):
            lines.append("")
            lines.append("The workload chains turns: later turns are sent after earlier "
                         "ones end, past the arrival window, so the probe's completion "
                         "rate (requests over the whole run) understates what the fleet "
                         "can serve, and the percentages are of that figure.")
    if a.get("bench_args"):
        lines.append("")
        lines.append("Workload flags: `%s`." % a["bench_args"])
    lines.append("")
    lines.append("Machine: %s, %s cores, %s GiB; everything (Redis, workers, nginx, "
                 "load generator) on this one machine." % (
                     res["machine"].get("cpu", "?"), res["machine"].get("cores"),
                     res["machine"].get("mem_gib", "?")))
    b = res.get("build")
    if b:
        lines.append("")
        lines.append("Built at commit %s%s." % (
            b.get("commit") or "?",
            ", with uncommitted changes to %s" % ", ".join("`%s`" % f for f in b["uncommitted"])
            if b.get("uncommitted") else ""))
    lines.append("")
    lines.append("SLO for goodput: TTFT ≤ %s ms and ITL ≤ %s ms." % (a["slo_ttft"], a["slo_itl"]))
    lines.append("")
    lines.append("| policy | load | rate req/s | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | "
                 "ITL p90 ms | " + ("short TTFT p90 ms | short ITL p90 ms | " if short else "")
                 + "req/s | out tok/s | success | goodput req/s | prefix hit | max/mean load |")
    lines.append("|---" * (15 if short else 13) + "|")
    for policy, r, m in rows(res):
        extra = ""
        if short:
            extra = "%s | %s | " % (fmt(m["short_ttft_p90"], "%.0f"),
                                    fmt(m["short_itl_p90"], "%.1f"))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s%s | %s | %s | %s | %s | %s |" % (
            policy, load_label(m), "-" if m["burst"] else "%.2f" % m["rate"],
            fmt(m["ttft_p50"], "%.0f"),
            fmt(m["ttft_p90"], "%.0f"), fmt(m["ttft_p99"], "%.0f"),
            fmt(m["itl_p90"], "%.1f"), extra, fmt(m["rps"], "%.2f"), fmt(m["tok_s"], "%.0f"),
            fmt(m["success"], "%.3f"), fmt(m["goodput"], "%.2f"), fmt(m["hit"], "%.2f"),
            fmt(m["max_mean"], "%.2f")))
    lines.append("")

    # ratios at the top rung against round-robin, same run
    top = {}
    for policy, r, m in rows(res):
        if policy not in top or m["frac"] > top[policy]["frac"]:
            top[policy] = m
    # ratios against both stock baselines, success next to them
    lines += ratio_tables(res, top, short)

    plots = plot(res, out)
    for p in plots:
        lines.append("![%s](%s)" % (p, p))
    lines.append("")
    lines.append("Command: `%s`" % command(a))
    open(os.path.join(out, "REPORT.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    print("wrote %s/REPORT.md" % out)


def ratio_tables(res, top, short):
    lines = []
    for base in ("round-robin", "least_conn"):
        if base not in top:
            continue
        b = top[base]
        lines.append("At the top rung (%s), against %s in the same run:"
                     % (load_label(b), base))
        lines.append("")
        lines.append("| policy | TTFT p90 ÷ %s's | " % base
                     + ("short TTFT p90 ÷ %s's | " % base if short else "")
                     + "ITL p90 ÷ %s's | out tok/s × %s's | success | prefix hit rate |"
                     % (base, base))
        lines.append("|---" * (7 if short else 6) + "|")
        for policy, m in top.items():
            lines.append("| %s | %s | %s%s | %s | %.3f | %.2f |" % (
                policy, fmt(ratio(m["ttft_p90"], b["ttft_p90"]), "%.3f"),
                fmt(ratio(m["short_ttft_p90"], b["short_ttft_p90"]), "%.3f") + " | "
                if short else "",
                fmt(ratio(m["itl_p90"], b["itl_p90"]), "%.3f"),
                fmt(ratio(m["tok_s"], b["tok_s"]), "%.3f"), m["success"], m["hit"]))
        lines.append("")

    # the best output rate each policy reached anywhere in the sweep
    peak = {}
    for policy, r, m in rows(res):
        if m["tok_s"] == m["tok_s"] and (policy not in peak
                                         or m["tok_s"] > peak[policy]["tok_s"]):
            peak[policy] = m
    if "round-robin" in peak and len(peak) > 1:
        rr = peak["round-robin"]
        lines.append("Peak output tokens/s over the whole sweep, against round-robin's peak:")
        lines.append("")
        lines.append("| policy | peak out tok/s | at | × round-robin's peak | success there |")
        lines.append("|---|---|---|---|---|")
        for policy, m in peak.items():
            lines.append("| %s | %.0f | %s | %.3f | %.3f |" % (
                policy, m["tok_s"], load_label(m), ratio(m["tok_s"], rr["tok_s"]),
                m["success"]))
        lines.append("")
    return lines


def command(a):
    """The routing.py command line that reproduces the run."""
    parts = []
    for k, v in sorted(a.items()):
        if k in ("out", "workload_args", "smoke") or v in (None, False, ""):
            continue
        if k == "bursts" and not a.get("burst_sizes"):
            continue
        parts.append("--%s %s" % (k.replace("_", "-"), shlex.quote(str(v))))
    return "bench/drivers/routing.py " + " ".join(parts)


def plot(res, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("python3-matplotlib is missing: no plots")
        return []

    data = {}
    for policy, r, m in rows(res):
        data.setdefault(policy, []).append(m)

    bursty = bool(res["args"].get("burst_sizes"))
    xkey = "burst" if bursty else "rate"
    made = []
    panels = [("ttft_p90", "TTFT p90 (ms)", True), ("itl_p90", "ITL p90 (ms)", False),
              ("goodput", "goodput (req/s within SLO)", False),
              ("success", "success rate", False), ("hit", "prefix cache hit rate", False),
              ("tok_s", "output tokens/s", False)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, label, log) in zip(axes.flat, panels):
        for policy, ms in data.items():
            ms = sorted(ms, key=lambda m: m[xkey])
            ax.plot([m[xkey] for m in ms], [m[key] for m in ms], marker="o",
                    label=policy)
        ax.set_xlabel("burst size (requests at once)" if bursty
                      else "offered load (requests/s)")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("%s workload" % res["args"]["workload"])
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sweep.png"), dpi=90)
    plt.close(fig)
    made.append("sweep.png")

    # per-worker load over time at the top rung
    policies = list(res["policies"].items())
    if policies:
        fig, axes = plt.subplots(1, len(policies), figsize=(4 * len(policies), 3),
                                 squeeze=False)
        for ax, (policy, rungs) in zip(axes[0], policies):
            r = max(rungs, key=lambda r: r.get("burst") or r["rate"])
            smp = r.get("load_over_time", [])
            if smp:
                for w in range(len(smp[0]["load"])):
                    ax.plot([x["t"] for x in smp], [x["load"][w] for x in smp],
                            linewidth=0.8)
            ax.set_title(policy, fontsize=9)
            ax.set_xlabel("s")
            ax.set_ylabel("running+waiting")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "load.png"), dpi=80)
        plt.close(fig)
        made.append("load.png")
    return made


if __name__ == "__main__":
    main()
