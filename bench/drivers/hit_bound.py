#!/usr/bin/python3
"""The prefix-cache hit rate a routing run's traffic allows.

    bench/drivers/hit_bound.py RESULTS_DIR

Regenerates the requests of every rung of a shared-prefix or hot-spot run
(llmd-bench --dump-trace, same seed, rates and flags as results.json) and
replays them, in the order the run sent them, against two caches that
count hits as the sim worker does (whole 16-token blocks of the canonical
prompt bytes, the last token never matched, hits and queries in tokens):

- unlimited: one cache that never evicts.  No placement can do better, so
  this is what the workload allows.
- pinned: every group always on the same worker (group mod workers), each
  worker an LRU of --kv-blocks blocks.  A reference for a fleet of that
  size, not a bound (it ignores blocks held by running requests).

The cache persists across the rungs of a policy, as the fleet does in the
run.  Prints one line per rung and writes RESULTS_DIR/hit_bound.json.
"""

import collections
import json
import os
import subprocess
import sys
import tempfile

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(TOP, "bench/build/llmd-bench")
BT = 16


def canonical(body):
    out = bytearray()
    for m in body["messages"]:
        out += m["content"].encode() + b"\x1f" + m["role"].encode() + b"\x1e"
    return bytes(out)


def block_keys(prompt):
    keys, parent = [], 0
    for i in range((len(prompt) - 1) // BT):
        parent = hash((parent, prompt[i * BT:(i + 1) * BT]))
        keys.append(parent)
    return keys


def main():
    out = sys.argv[1]
    res = json.load(open(os.path.join(out, "results.json")))
    a = res["args"]
    if a["workload"] not in ("shared-prefix", "hot-spot"):
        raise SystemExit("only workloads of independent requests")
    rates = [float(x) for x in a["rates"].split(",")]
    unlimited = set()
    pinned = [collections.OrderedDict() for _ in range(a["workers"])]
    rungs = []
    with tempfile.TemporaryDirectory() as tmp:
        for frac in rates:
            trace = os.path.join(tmp, "t.jsonl")
            subprocess.run([BENCH, "--url", "http://127.0.0.1:1/v1/chat/completions",
                            "--workload", a["workload"], "--seed", str(a["seed"]),
                            "--rate", "%.3f" % (frac * res["capacity_rps"]),
                            "--duration", str(a["duration"]), "--dump-trace", trace]
                           + a["workload_args"], check=True, stdout=subprocess.DEVNULL)
            q = hu = hp = 0
            for line in open(trace):
                rec = json.loads(line)
                prompt = canonical(rec["body"])
                keys = block_keys(prompt)
                q += len(prompt)
                n = 0
                while n < len(keys) and keys[n] in unlimited:
                    n += 1
                hu += n * BT
                unlimited.update(keys)
                lru = pinned[(rec.get("group") or 0) % len(pinned)]
                n = 0
                while n < len(keys) and keys[n] in lru:
                    n += 1
                hp += n * BT
                for k in keys:
                    lru[k] = True
                    lru.move_to_end(k)
                while len(lru) > a["kv_blocks"]:
                    lru.popitem(last=False)
            rungs.append({"fraction": frac, "unlimited": hu / q, "pinned": hp / q})
            print("%d%%: unlimited cache %.3f, groups pinned (LRU of %d blocks) %.3f"
                  % (round(frac * 100), hu / q, a["kv_blocks"], hp / q))
    json.dump({"rungs": rungs}, open(os.path.join(out, "hit_bound.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
