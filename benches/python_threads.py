"""Python threads on one in-process pipe against the Thrift server on the same TOML.

usage: python_threads.py [--toml configs/tiny_cpu.toml] [--threads 20] [--duration 8]
                         [--server target/debug/server] [--client target/debug/client_qps]

Run with the Python that has torchpipe_rs installed (python/test.sh builds it into
target/pyenv, in the same profile as `cargo build`'s target/debug binaries: compare like with
like). First `server --toml` with `client_qps --request_client THREADS --request_batch 1` for
DURATION seconds, then THREADS Python threads each calling `pipe` with one photo at a time for
DURATION seconds, in turn, never at once (on a small machine they would share its cores).
Writes benches/results/python-<date>-<machine>.{json,md}.
"""
import argparse
import datetime
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (Server, run_client, commit, device_name)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_run(toml, photos, threads, duration, warmup):
    import torchpipe_rs
    p = torchpipe_rs.pipe(toml)
    for data in photos[:warmup]:
        p({torchpipe_rs.TASK_DATA_KEY: data})
    lat, errors, lock = [], [0], threading.Lock()
    start = threading.Barrier(threads + 1)

    def worker(k):
        mine, bad, i = [], 0, k
        start.wait()
        end = time.perf_counter() + duration
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            d = {torchpipe_rs.TASK_DATA_KEY: photos[i % len(photos)]}
            p(d)
            mine.append(time.perf_counter() - t0)
            bad += torchpipe_rs.TASK_RESULT_KEY not in d
            i += threads
        with lock:
            lat.extend(mine)
            errors[0] += bad

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    start.wait()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {"qps": len(lat) / wall, "tp50_ms": float(np.percentile(ms, 50)),
            "tp99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "errors": errors[0], "total": len(lat)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toml", default="configs/tiny_cpu.toml")
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--server", default="target/debug/server")
    ap.add_argument("--client", default="target/debug/client_qps")
    ap.add_argument("--img_dir", default="benches/imgs")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--machine", default="dev-2vcpu")
    ap.add_argument("--out-dir", default="benches/results")
    a = ap.parse_args()
    a.total = None
    os.chdir(ROOT)
    photos = [p.read_bytes() for p in sorted(pathlib.Path(a.img_dir).iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")]
    with tempfile.TemporaryDirectory() as tmp:
        # Model paths made absolute, so both sides read the same file from anywhere.
        text = pathlib.Path(a.toml).read_text().replace('"models/', f'"{ROOT}/models/')
        toml = os.path.join(tmp, os.path.basename(a.toml))
        pathlib.Path(toml).write_text(text)
        server = compare.Server(a.server, toml, False, os.path.join(tmp, "server.log"), 600)
        try:
            thrift = compare.run_client(a, server, a.threads, 1, tmp)
        finally:
            server.stop()
        py = python_run(toml, photos, a.threads, a.duration, a.warmup)
    ratio = py["qps"] / thrift["qps"]
    date = datetime.date.today().isoformat()
    doc = {"date": date, "machine": a.machine, "device": compare.device_name(),
           "commit": compare.commit(), "toml": a.toml, "threads": a.threads,
           "duration_s": a.duration, "thrift_server": thrift, "python_threads": py,
           "python_over_server": ratio,
           "how": "benches/python_threads.py: server --toml + client_qps (request_batch 1), "
                  "then the same number of Python threads on one torchpipe_rs.pipe, one "
                  "photo per call, each for the same duration, in turn"}
    os.makedirs(a.out_dir, exist_ok=True)
    base = os.path.join(a.out_dir, f"python-{date}-{a.machine}")
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    md = (f"# Python threads on one pipe against the Thrift server, {date}, {a.machine}, "
          f"commit {doc['commit']}\n\n`{a.toml}`, {a.threads} clients / threads × 1 photo, "
          f"{a.duration:g} s each.\n\n| | QPS | TP50 ms | TP99 ms | max ms | errors |\n"
          "|---|---:|---:|---:|---:|---:|\n")
    for name, r in (("server + client_qps", thrift), ("Python threads, in-process", py)):
        md += (f"| {name} | {r['qps']:.0f} | {r['tp50_ms']:.2f} | {r['tp99_ms']:.2f} | "
               f"{r['max_ms']:.1f} | {r['errors']} |\n")
    md += f"\nPython ÷ server: {ratio:.2f}\n"
    with open(base + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
    main()
