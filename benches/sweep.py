#!/usr/bin/env python3
"""The load sweep: for each server setting (the baseline, the pipeline on one or more
TOMLs), the closed-loop client at each client count × batch, chosen settings repeated for the
spread, and one open-loop run at a share of the best closed-loop QPS; writes
<out-dir>/sweep-<date>-<machine>.{json,md}.

Each setting: `client_qps` with its warm-up, then the measured part, with --server-pid (server CPU,
RSS and GPU use sampled). The open-loop row (`--request-rate`) counts latency from each request's
due time, so a server that stalls shows the stall (the closed loop's clients wait with it).
Standard library only; the server handling is benches/compare.py's.

  python3 benches/sweep.py --server dist/server --client dist/client_qps \\
      --setting baseline=configs/resnet50.toml --setting seed=configs/resnet50.toml \\
      --setting gpu=configs/resnet50_gpu.toml --duration 5 --machine h200

A setting may carry the server's own flags after its TOML:
`--setting "gpu-spin=configs/resnet50_gpu.toml --gpu-wait spin"`, and run another server
binary: `--server-of old=dist-old/server` (the same call's reference for a change).
`--ceilings` adds the parts' own rates (`preprocess-check --json`, `model-check --json`), so
that each GPU row reads as a fraction of the slower part. `--render SWEEP.json` writes the
Markdown again from a sweep's JSON (with `--ceilings`, their figures read again).
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the Server class, run_client(), commit(), device_name())


def per_node(before, after):
    """What the run added: the server's mean time per request (from reading the call to
    writing the answer), and per node the mean batch, each item's mean wait in the queue and
    each batch's mean time in forward (ms)."""
    d = {k: v - before.get(k, 0.0) for k, v in after.items()}
    out = {}
    calls = d.get(("torchpipe_request_duration_seconds_count", None), 0)
    if calls:
        out["server_ms"] = round(d[("torchpipe_request_duration_seconds_sum", None)] / calls * 1e3, 3)
    nodes = {}
    for (name, node), items in d.items():
        if name != "torchpipe_node_items_total" or not items:
            continue
        batches = d.get(("torchpipe_node_batches_total", node), 0) or 1
        nodes[node] = {
            "items": int(items), "mean_batch": round(items / batches, 2),
            "wait_ms": round(d.get(("torchpipe_node_queue_wait_seconds_total", node), 0) / items * 1e3, 3),
            "run_ms": round(d.get(("torchpipe_node_busy_seconds_total", node), 0) / batches * 1e3, 3)}
    if nodes:
        out["nodes"] = nodes
    return out


def client(a, server, clients, batch, tmp, rate=None):
    """One client_qps run, its warm-up first as a run of its own so that the server's counters
    read around the measured part alone."""
    row = {"clients": clients, "batch": batch}
    if a.warmup:
        compare.run_client(argparse.Namespace(**{**vars(a), "duration": None, "total": a.warmup,
                                                 "warmup": 0}), server, clients, batch, tmp)
    before = compare.scrape_metrics(server)
    measured = argparse.Namespace(**{**vars(a), "warmup": 0})
    row.update(compare.run_client(measured, server, clients, batch, tmp, rate))
    row.update(per_node(before, compare.scrape_metrics(server)))
    return row


def cpu_per_kqps(row):
    cpu, qps = row.get("server_cpu_pct"), row.get("qps")
    return round(cpu / 100 / (qps / 1000), 3) if cpu and qps else None


def fmt(v, digits=1):
    return "–" if v is None else f"{v:.{digits}f}"


def stamp():
    """The time a run ended, in UTC as the server logs write it (to line the two up)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")


def read_ceilings(spec, batch):
    """The parts' ceilings as the pipeline runs them: the decoder at the node's batch size with
    the node's instances decoding at once (one instance alone ran batch 16 at half its batch-8
    rate per image on an H100, so a one-instance figure understates the node), the model with
    its instances."""
    pre_path, model_path = spec.split(",")
    with open(pre_path) as f:
        pre = json.load(f)
    with open(model_path) as f:
        model = json.load(f)
    row = {t["batch"]: t for t in pre["timings"]}[batch]
    conc = model["concurrency"]
    batches = sorted({b["batch"] for b in model.get("batches", [])}) or [None]
    together = row.get("decode_resize_cvtcolor_concurrent")
    return {"decoder": together or row["decode_resize_cvtcolor"], "decoder_batch": batch,
            "decoder_instances": row["decode_resize_cvtcolor_instances"] if together else 1,
            "decoder_one_instance": row["decode_resize_cvtcolor"],
            "model": conc["images_per_s"], "model_instances": conc["instances"],
            "model_batch": batches[-1], "model_inputs": conc.get("inputs", "host")}


def render(doc, ceiling):
    """The sweep's Markdown from its JSON."""
    lines = [f"# Load sweep, {doc['date']}, {doc['device']}, commit {doc['commit']}", "",
             f"`benches/sweep.py`, {doc['duration_s']:g} s per setting after "
             f"{doc.get('warmup', 200)} warm-up requests; the open-loop row's latency counts "
             "from each request's due time.", "",
             "| setting | clients × batch | loop | QPS | TP50 ms | TP90 ms | TP99 ms | max ms | "
             "server CPU % | cores per 1k QPS | GPU % | errors |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in doc["settings"]:
        for r in s["runs"]:
            loop = (f"open {r['open_loop']['request_rate']:.0f}/s "
                    f"({r['open_loop']['late_sends']} late)" if r.get("open_loop") else "closed")
            lines.append(
                f"| {s['name']} | {r['clients']} × {r['batch']} | {loop} | {fmt(r['qps'], 0)} | "
                f"{fmt(r['tp50_ms'], 2)} | {fmt(r['tp90_ms'], 2)} | {fmt(r['tp99_ms'], 2)} | "
                f"{fmt(r['max_ms'])} | {fmt(r['server_cpu_pct'])} | "
                f"{fmt(r['cpu_cores_per_kqps'], 2)} | {fmt(r['gpu_util_pct'])} | {r['errors']} |")
    # Every 128 × 1 run: a fresh server's first loaded run differs from the ones after it.
    detail = [(s["name"], r) for s in doc["settings"] for r in s["runs"]
              if "server_ms" in r and (r["clients"] in (1, 128) or r.get("open_loop"))]
    if detail:
        lines += ["", "Inside the server in some of those runs (its `/metrics` before and after): "
                  "the mean time from reading a call to writing its answer, and per node the mean "
                  "batch, each item's mean wait in the queue and each batch's mean time in "
                  "forward (ms); what the nodes do not account for is the hand-offs between "
                  "threads.", "",
                  "| setting | run | server ms | per node: batch, wait ms, forward ms |",
                  "|---|---|---:|---|"]
        for name, r in detail:
            run = (f"open {r['open_loop']['request_rate']:.0f}/s" if r.get("open_loop")
                   else f"{r['clients']} × {r['batch']}"
                   + (f" #{r['rep']}" if r["clients"] == 128 and "rep" in r else ""))
            nodes = "; ".join(f"{n}: {v['mean_batch']:g}, {v['wait_ms']:.3f}, {v['run_ms']:.3f}"
                              for n, v in r.get("nodes", {}).items()) or "–"
            lines.append(f"| {name} | {run} | {r['server_ms']:.3f} | {nodes} |")
    if ceiling:
        lines += ["", f"The parts alone in the same call: decode + resize + cvtColor "
                  f"{ceiling['decoder']:.0f} images/s (`preprocess-check`, "
                  f"{ceiling.get('decoder_instances', 1)} instance(s) at once, batch "
                  f"{ceiling['decoder_batch']}), the model {ceiling['model']:.0f} images/s "
                  f"(`model-check`, {ceiling['model_instances']} instances at once, batch "
                  f"{ceiling['model_batch']}, inputs from the "
                  f"{ceiling.get('model_inputs', 'host')}). Closed-loop rows of settings on a "
                  "GPU TOML as a share of the slower part:", ""]
        low = min(ceiling["decoder"], ceiling["model"])
        for s in doc["settings"]:
            if "gpu" not in s["toml"]:
                continue
            shares = [f"{r['clients']} × {r['batch']}: {r['qps'] / low:.2f}"
                      for r in s["runs"] if not r.get("open_loop") and r["clients"] >= 64]
            lines.append(f"- {s['name']}: " + ", ".join(shares))
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", action="append", default=[],
                   help="NAME=TOML; the name `baseline` runs `server --baseline` on that TOML")
    p.add_argument("--render", metavar="SWEEP.json",
                   help="run nothing: write SWEEP.md from SWEEP.json (its ceilings read again "
                        "when --ceilings is given)")
    p.add_argument("--server", default="target/release/server")
    p.add_argument("--server-of", action="append", default=[], metavar="NAME=PATH",
                   help="the server binary of one setting (default: --server)")
    p.add_argument("--open-rates", default="",
                   help="more open-loop runs at these fixed rates (requests/s, comma-separated)")
    p.add_argument("--ceilings", default="", metavar="PRE.json,MODEL.json",
                   help="preprocess-check's and model-check's JSON from the same call")
    p.add_argument("--ceiling-batch", type=int, default=16,
                   help="the decoder node's batch size whose preprocess-check rate is its ceiling")
    p.add_argument("--client", default="target/release/client_qps")
    p.add_argument("--img_dir", "--img-dir", dest="img_dir", default="benches/imgs")
    p.add_argument("--clients", default="1,4,20,64,128,256",
                   help="closed-loop client counts at batch 1")
    p.add_argument("--extra", default="", help="more CLIENTSxBATCH settings, comma-separated")
    p.add_argument("--repeat", default="20x1,128x1",
                   help="settings run three times in all, for the spread")
    p.add_argument("--open-share", type=float, default=0.8,
                   help="the open-loop run's rate as a share of the best closed-loop QPS")
    p.add_argument("--open-clients", type=int, default=128,
                   help="connections of the open-loop run")
    p.add_argument("--duration", type=float, default=5.0,
                   help="seconds per setting (more than 0)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--machine", default="dev")
    p.add_argument("--out-dir", default="benches/results")
    p.add_argument("--ready-timeout", type=float, default=600)
    a = p.parse_args()
    if not a.duration > 0:
        p.error("--duration must be more than 0 seconds")
    if a.render:
        with open(a.render) as f:
            doc = json.load(f)
        if a.ceilings:
            doc["ceilings"] = read_ceilings(a.ceilings, a.ceiling_batch)
            with open(a.render, "w") as f:
                json.dump(doc, f, indent=1)
        md = os.path.splitext(a.render)[0] + ".md"
        with open(md, "w") as f:
            f.write(render(doc, doc.get("ceilings")))
        print(f"wrote {md}")
        return
    if not a.setting:
        p.error("give at least one --setting (or --render)")

    def pairs(text):
        out = []
        for s in filter(None, text.split(",")):
            c, b = s.split("x")
            out.append((int(c), int(b)))
        return out

    plan = [(int(c), 1) for c in a.clients.split(",")] + pairs(a.extra)
    repeat = pairs(a.repeat)
    date = datetime.date.today().isoformat()
    doc = {"date": date, "commit": compare.commit(), "device": compare.device_name(),
           "duration_s": a.duration, "warmup": a.warmup, "settings": []}
    os.makedirs(a.out_dir, exist_ok=True)
    binaries = dict(x.split("=", 1) for x in a.server_of)
    fixed_rates = [float(r) for r in a.open_rates.split(",") if r]
    ceiling = read_ceilings(a.ceilings, a.ceiling_batch) if a.ceilings else None
    if ceiling:
        doc["ceilings"] = ceiling
    with tempfile.TemporaryDirectory() as tmp:
        for spec in a.setting:
            name, rest = spec.split("=", 1)
            # "NAME=TOML --flag value ...": the server's own flags after the TOML.
            toml, *server_args = shlex.split(rest)
            baseline = name == "baseline"
            log = os.path.join(a.out_dir, f"sweep-{date}-{a.machine}-{name}.log")
            binary = binaries.get(name, a.server)
            server = compare.Server(binary, toml, baseline, log, a.ready_timeout, server_args)
            runs = []
            try:
                for clients, batch in plan:
                    reps = 3 if (clients, batch) in repeat else 1
                    for rep in range(reps):
                        row = client(a, server, clients, batch, tmp)
                        row["rep"] = rep
                        row["cpu_cores_per_kqps"] = cpu_per_kqps(row)
                        runs.append(row)
                        print(f"{stamp()} {name} {clients}x{batch} #{rep}: {row['qps']:.0f} QPS, "
                              f"TP99 {row['tp99_ms']:.2f} ms, max {row['max_ms']:.1f} ms, "
                              f"errors {row['errors']}", flush=True)
                best = max(r["qps"] for r in runs if r["batch"] == 1)
                # --open-share 0: no open-loop row at a share of the best.
                rates = ([best * a.open_share] if a.open_share > 0 else []) + fixed_rates
                for rate in rates:
                    row = client(a, server, a.open_clients, 1, tmp, rate=rate)
                    row["rep"] = 0
                    row["cpu_cores_per_kqps"] = cpu_per_kqps(row)
                    runs.append(row)
                    print(f"{stamp()} {name} open loop at {rate:.0f}/s: {row['qps']:.0f} QPS, TP99 "
                          f"{row['tp99_ms']:.2f} ms, max {row['max_ms']:.1f} ms, late "
                          f"{row['open_loop']['late_sends']}", flush=True)
            finally:
                server.stop()
            doc["settings"].append({"name": name, "toml": toml, "baseline": baseline,
                                    "server": binary, "server_args": server_args,
                                    "runs": runs})
    base = os.path.join(a.out_dir, f"sweep-{date}-{a.machine}")
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(render(doc, ceiling))
    print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
    main()
