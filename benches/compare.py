#!/usr/bin/env python3
"""The seed's side-by-side comparison: `server --baseline` (one locked batch-1 model, preprocessing
in the request threads) against the pipeline, same TOML, same client, same machine, one run.

For each server it starts the binary, waits for /health/ready, runs `client_qps` once per
--request_client x --request_batch setting (its warm-up first, then the measured part, with
--server-pid so the server's CPU, RSS and GPU use are sampled), and stops it with SIGINT. Then it
prints the three tables (throughput; TP50/TP99; CPU, GPU, memory) with the ratios and writes
benches/results/compare-<date>-<machine>-<config>.{json,md}.

Standard library only, so it runs wherever the binaries do.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0] + f", {os.cpu_count()} CPU cores"
    except (OSError, subprocess.TimeoutExpired):
        pass
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPU cores, no GPU"


def commit():
    """$COMMIT when set (a copied tree's .git may be stale), else HEAD, marked -dirty when
    tracked files differ from it (the binaries may too)."""
    if os.environ.get("COMMIT"):
        return os.environ["COMMIT"]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()
    if not head:
        return os.environ.get("COMMIT", "unknown")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return head + ("-dirty" if dirty else "")


class Server:
    def __init__(self, binary, toml, baseline, log_path, ready_timeout, extra=()):
        self.port, self.metrics = free_port(), free_port()
        args = [binary, "--toml", toml, "--port", str(self.port), "--metrics-port",
                str(self.metrics), *extra]
        if baseline:
            args.append("--baseline")
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + ready_timeout
        url = f"http://127.0.0.1:{self.metrics}/health/ready"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{' '.join(args)} exited with {self.proc.returncode}; "
                                 f"see {log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{' '.join(args)} not ready after {ready_timeout} s; see {log_path}")

    def stop(self):
        if self.proc.poll() is None:
            # SIGINT: stop now. SIGTERM would first wait out the server's drain period
            # (--drain-seconds), there for balancers, not for a benchmark that is done.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_client(a, server, clients, batch, tmp, rate=None):
    """One client_qps run; `rate`: open loop at that many requests per second (the report's
    `open_loop` then comes along)."""
    out = os.path.join(tmp, f"client-{server.port}-{clients}x{batch}-{rate or 'closed'}.json")
    args = [a.client, "--img_dir", a.img_dir, "--port", str(server.port),
            "--request_client", str(clients), "--request_batch", str(batch),
            "--warmup", str(a.warmup), "--server-pid", str(server.proc.pid), "--json", out]
    args += ["--duration", str(a.duration)] if a.duration else ["--total_number", str(a.total)]
    if rate:
        args += ["--request-rate", f"{rate:.1f}"]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0 or not os.path.exists(out):
        raise SystemExit(f"client_qps failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    with open(out) as f:
        r = json.load(f)
    keys = ["qps", "tp50_ms", "tp90_ms", "tp99_ms", "mean_ms", "max_ms", "server_cpu_pct",
            "gpu_util_pct", "server_rss_mb", "errors", "total"] + (["open_loop"] if rate else [])
    return {k: r.get(k) for k in keys}


def scrape_metrics(server):
    """The server's series from /metrics other than histogram buckets: {(name, node): value},
    node None for a series without a node label; {} when it does not answer."""
    url = f"http://127.0.0.1:{server.metrics}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or "le=" in line or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        node = labels.split('node="', 1)[1].split('"', 1)[0] if 'node="' in labels else None
        out[(name, node)] = float(value)
    return out


def node_profile(server):
    """Per-node totals from the pipeline's /metrics: where a request's time goes."""
    series = scrape_metrics(server)
    if not series:
        return None
    nodes = {}
    for (name, node), value in series.items():
        if node is not None and name.startswith("torchpipe_node_"):
            nodes.setdefault(node, {})[name[len("torchpipe_node_"):]] = value
    out = {}
    for node, m in nodes.items():
        items, batches = m.get("items_total", 0), m.get("batches_total", 0)
        out[node] = {
            "instances": int(m.get("instances", 0)),
            "items": int(items),
            "mean_batch": items / batches if batches else None,
            "busy_ms_per_batch": 1e3 * m.get("busy_seconds_total", 0) / batches if batches else None,
            "busy_ms_per_item": 1e3 * m.get("busy_seconds_total", 0) / items if items else None,
            "queue_wait_ms_per_item":
                1e3 * m.get("queue_wait_seconds_total", 0) / items if items else None,
        }
    return out


def profile_table(profile):
    lines = ["### Where the time goes (pipeline, all settings together, from /metrics)", "",
             "| node | instances | items | mean batch | busy ms/batch | busy ms/item | "
             "queue wait ms/item |", "|---|---:|---:|---:|---:|---:|---:|"]
    for node, m in profile.items():
        lines.append(f"| {node} | {m['instances']} | {m['items']:,} | {fmt(m['mean_batch'], 2)} | "
                     f"{fmt(m['busy_ms_per_batch'], 3)} | {fmt(m['busy_ms_per_item'], 3)} | "
                     f"{fmt(m['queue_wait_ms_per_item'], 3)} |")
    return "\n".join(lines)


def fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(p, b):
    return "-" if not p or not b else f"{p / b:.2f}x"


def side_by_side(runs, title, header, cells):
    """A table with one row per setting; `cells(baseline, pipeline)` gives the row's values."""
    lines = [title, "", header, "|---" + "|---:" * (header.count("|") - 2) + "|"]
    for r in runs:
        lines.append(f"| {r['request_client']} x {r['request_batch']} | "
                     + " | ".join(cells(r["baseline"], r["pipeline"])) + " |")
    return lines


def tables(runs):
    lines = side_by_side(
        runs, "### Throughput (requests/s)",
        "| clients x batch | baseline QPS | pipeline QPS | pipeline / baseline |",
        lambda b, p: [fmt(b["qps"]), fmt(p["qps"]), ratio(p["qps"], b["qps"])])
    lines += [""] + side_by_side(
        runs, "### Response time (ms)",
        "| clients x batch | baseline TP50 | baseline TP99 | pipeline TP50 | pipeline TP99 |",
        lambda b, p: [fmt(b["tp50_ms"], 2), fmt(b["tp99_ms"], 2), fmt(p["tp50_ms"], 2),
                      fmt(p["tp99_ms"], 2)])
    lines += ["", "### Resources (server process)", "",
              "| clients x batch | server | CPU % (100 = 1 core) | CPU cores per 1,000 QPS | "
              "GPU util % | RSS MB | errors |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        for name in ("baseline", "pipeline"):
            x = r[name]
            per_k = (x["server_cpu_pct"] / 100) / (x["qps"] / 1000) if x["qps"] and \
                x["server_cpu_pct"] is not None else None
            lines.append(f"| {r['request_client']} x {r['request_batch']} | {name} | "
                         f"{fmt(x['server_cpu_pct'])} | {fmt(per_k, 2)} | "
                         f"{fmt(x['gpu_util_pct'])} | {fmt(x['server_rss_mb'])} | "
                         f"{x['errors']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toml", required=True, help="the pipeline TOML (both servers load it)")
    p.add_argument("--baseline-toml", dest="baseline_toml",
                   help="the TOML the baseline loads instead (for a pipeline that decodes on the "
                        "GPU, whose nodes the CPU-preprocessing baseline cannot run)")
    p.add_argument("--img_dir", "--img-dir", dest="img_dir", default="benches/imgs")
    p.add_argument("--server", default="target/release/server")
    p.add_argument("--client", default="target/release/client_qps")
    p.add_argument("--request_client", "--request-client", dest="clients", default="10,20",
                   help="comma-separated client counts (the docs recommend 10x1, 10x4, 20x1)")
    p.add_argument("--request_batch", "--request-batch", dest="batches", default="1",
                   help="comma-separated request batch sizes")
    p.add_argument("--total", type=int, default=2000, help="measured requests per setting")
    p.add_argument("--duration", type=float, help="seconds per setting instead of --total")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--machine", default=platform.node(), help="name for the output files")
    p.add_argument("--out-dir", default="benches/results")
    p.add_argument("--ready-timeout", type=float, default=600)
    a = p.parse_args()
    settings = [(int(c), int(b)) for c in a.clients.split(",") for b in a.batches.split(",")]
    config = os.path.splitext(os.path.basename(a.toml))[0]
    tmp = tempfile.mkdtemp(prefix="compare-")
    results = {}
    profile = None
    for name, baseline in (("baseline", True), ("pipeline", False)):
        log = os.path.join(tmp, f"{name}.log")
        started = time.time()
        toml = (a.baseline_toml or a.toml) if baseline else a.toml
        server = Server(a.server, toml, baseline, log, a.ready_timeout)
        print(f"{name}: ready in {time.time() - started:.1f} s (log {log})", flush=True)
        try:
            for c, b in settings:
                results[(name, c, b)] = run_client(a, server, c, b, tmp)
                r = results[(name, c, b)]
                print(f"  {c} x {b}: {r['qps']:.1f} QPS, TP50 {r['tp50_ms']:.2f} ms, "
                      f"TP99 {r['tp99_ms']:.2f} ms, {r['errors']} errors", flush=True)
            if not baseline:
                profile = node_profile(server)
        finally:
            server.stop()
    runs = [{"request_client": c, "request_batch": b, "baseline": results[("baseline", c, b)],
             "pipeline": results[("pipeline", c, b)]} for c, b in settings]
    date = datetime.date.today().isoformat()
    doc = {"device": device_name(), "date": date, "commit": commit(), "config": a.toml,
           "baseline_config": a.baseline_toml or a.toml,
           "request_client": settings[0][0], "request_batch": settings[0][1],
           "baseline": runs[0]["baseline"], "pipeline": runs[0]["pipeline"],
           "settings": {"total": a.total, "duration_s": a.duration, "warmup": a.warmup,
                        "img_dir": a.img_dir, "server": a.server, "client": a.client},
           "runs": runs, "pipeline_nodes": profile}
    md = (f"# Compare: {a.toml} on {doc['device']}\n\n{date}, commit {doc['commit']}; "
          + (f"baseline from {a.baseline_toml}; " if a.baseline_toml else "")
          + f"client_qps --img_dir {a.img_dir}, "
          + (f"{a.duration} s" if a.duration else f"{a.total} requests")
          + f" per setting after {a.warmup} warm-up requests; both servers built from the same "
          f"commit, started one after the other on this machine.\n\n{tables(runs)}\n"
          + (f"\n{profile_table(profile)}\n" if profile else ""))
    print("\n" + tables(runs))
    if profile:
        print("\n" + profile_table(profile))
    os.makedirs(a.out_dir, exist_ok=True)
    stem = os.path.join(a.out_dir, f"compare-{date}-{a.machine}-{config}")
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(f"\nwrote {stem}.json and {stem}.md")
    bad = [r for r in runs for k in ("baseline", "pipeline") if r[k]["errors"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
