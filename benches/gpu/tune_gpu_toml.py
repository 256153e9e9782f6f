"""On the device: configs/resnet50_gpu.toml against variants of itself, to choose
its shipped values from measurements.

usage: tune_gpu_toml.py OUTDIR [--duration 4] [--deadline SECONDS] [--only NAME,NAME]

Each variant is the shipped TOML with some keys changed (VARIANTS below). For each: a fresh
server, 128 clients × 1 for DURATION seconds (then the per-node profile from /metrics: mean
batch, busy time per batch, queue wait per item), then 20 × 1; the same client and photos as
benches/sweep.py. Variants not started before --deadline are skipped; --only runs the named
ones (in VARIANTS' order). Writes
OUTDIR/tune-gpu-toml.json and prints a table.
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import compare  # noqa: E402

ROOT = compare.ROOT
# (name, {node or "": {key: value}}): "" is the globals.
VARIANTS = [
    ("shipped", {}),
    ("model 2 instances", {"resnet50": {"instance_num": 2}}),
    ("model 8 instances", {"resnet50": {"instance_num": 8}}),
    ("model max 32", {"resnet50": {"max": 32}}),
    ("decoder max 32", {"gpu_decoder": {"max": 32}}),
    ("decoder 8 instances", {"gpu_decoder": {"instance_num": 8}}),
    ("decoders 8 + 4 instances", {"gpu_decoder": {"instance_num": 8},
                                  "cpu_decoder": {"instance_num": 4}}),
    ("batching_timeout 1", {"": {"batching_timeout": 1}}),
    ("batching_timeout 4", {"": {"batching_timeout": 4}}),
]


def variant(text, changes):
    """The TOML text with `changes` applied: a key replaced where its table (or the globals)
    sets it, else added at the end of that table."""
    for table, keys in changes.items():
        for key, value in keys.items():
            # The table's span: from after its header (the file's start for the globals) to
            # the next header.
            start = re.search(rf"^\[{re.escape(table)}\]\n", text, re.M).end() if table else 0
            end = re.search(r"^\[", text[start:], re.M)
            stop = start + end.start() if end else len(text)
            body = text[start:stop]
            line = re.compile(rf"^{key} = .*$", re.M)
            body = line.sub(f"{key} = {value}", body) if line.search(body) else \
                f"{body.rstrip()}\n{key} = {value}\n\n"
            text = text[:start] + body + text[stop:]
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--deadline", type=float, default=420.0)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    a = ap.parse_args()
    t0 = time.time()
    os.chdir(ROOT)
    shipped = open("configs/resnet50_gpu.toml").read().replace('"models/', f'"{ROOT}/models/')
    client = types.SimpleNamespace(client="dist/client_qps", img_dir="benches/imgs", warmup=200,
                                   duration=a.duration, total=None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        only = [n for n in a.only.split(",") if n]
        unknown = [n for n in only if n not in dict(VARIANTS)]
        if unknown:
            raise SystemExit(f"--only: no variant {unknown}; the variants: "
                             f"{', '.join(n for n, _ in VARIANTS)}")
        for name, changes in VARIANTS:
            if only and name not in only:
                continue
            if time.time() - t0 > a.deadline:
                print(f"{name}: skipped (deadline)", flush=True)
                continue
            path = os.path.join(tmp, "v.toml")
            with open(path, "w") as f:
                f.write(variant(shipped, changes))
            log = os.path.join(a.out, f"tune-{re.sub(r'[^a-z0-9]+', '_', name)}.log")
            row = {"variant": name, "changes": changes}
            try:
                server = compare.Server("dist/server", path, False, log, 300)
            except SystemExit as e:
                row["error"] = str(e)
                rows.append(row)
                print(name, row["error"], flush=True)
                continue
            try:
                row["128x1"] = compare.run_client(client, server, 128, 1, tmp)
                row["profile_128"] = compare.node_profile(server)
                row["20x1"] = compare.run_client(client, server, 20, 1, tmp)
            except SystemExit as e:
                row["error"] = str(e)
            finally:
                server.stop()
            rows.append(row)
            print(json.dumps(row), flush=True)
    json.dump({"commit": compare.commit(), "device": compare.device_name(),
               "duration_s": a.duration, "rows": rows},
              open(os.path.join(a.out, "tune-gpu-toml.json"), "w"), indent=1)
    print("| variant | 128×1 QPS | TP99 | max | GPU % | 20×1 QPS | TP99 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "128x1" not in r or "20x1" not in r:
            print(f"| {r['variant']} | {r.get('error', 'not run')[:60]} |")
            continue
        h, t = r["128x1"], r["20x1"]
        print(f"| {r['variant']} | {h['qps']:.0f} | {h['tp99_ms']:.1f} | {h['max_ms']:.0f} | "
              f"{h['gpu_util_pct'] or 0:.0f} | {t['qps']:.0f} | {t['tp99_ms']:.1f} | "
              f"{t['max_ms']:.0f} |")


if __name__ == "__main__":
    main()
