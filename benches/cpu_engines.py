#!/usr/bin/env python3
"""The CPU path against onnxruntime in Python, one run, same machine, model and photos.

onnxruntime's own rate: `models/resnet50.onnx` in an InferenceSession with --threads intra-op
threads (default: every core), on the committed photos decoded by OpenCV, resized to 224×224,
RGB, normalised, at batch 1 and 8: the median of 5 rounds of --seconds / 5 each, after a warm-up.

Ours: `server` (--bin, default target/release) on --toml (default configs/resnet50_cpu.toml)
as shipped, the model path made absolute and the model node (`model = "models/resnet50.onnx"`)
given `device = "cpu"` where the TOML does not say so already (the seed's configs/resnet50.toml
runs it on the GPU; its `model::cache` line, the GPU engine's, dropped), once per `cpu_engine`
in --engines, each driven by `client_qps` (--clients × 1 for --seconds, after its warm-up) on
the same photos, end to end: decoding, resizing and the model. Prints the rates and their
ratios and writes benches/results/cpu-engines-<date>-<machine>.json (or --out).

usage: cpu_engines.py [--threads N] [--seconds S] [--engines onnxruntime,tract] [--toml FILE]
                      [--bin DIR] [--clients N] [--out FILE]
"""
import argparse
import datetime
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import cv2
import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
MEAN = np.array([123.675, 116.28, 103.53], np.float32)[:, None, None]
STD = np.array([58.395, 57.120, 57.375], np.float32)[:, None, None]


def photos():
    out = []
    for p in sorted((ROOT / "benches/imgs").iterdir()):
        if p.suffix.lower() not in (".jpg", ".png", ".bmp"):
            continue
        img = cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        x = cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2RGB).astype(np.float32).transpose(2, 0, 1)
        out.append((x - MEAN) / STD)
    return np.stack(out)


def onnxruntime_rate(threads, seconds, batch, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(str(ROOT / "models/resnet50.onnx"), opts,
                             providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    xb = np.concatenate([x] * (batch // len(x) + 1))[:batch]
    for _ in range(3):
        s.run(None, {name: xb})
    rates = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            s.run(None, {name: xb})
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours(engine, seconds, toml_path, bindir, clients):
    text = pathlib.Path(toml_path).read_text()
    if 'device = "cpu"' not in text:
        text = text.replace('model = "models/resnet50.onnx"',
                            'model = "models/resnet50.onnx"\ndevice = "cpu"')
        text = "\n".join(line for line in text.splitlines()
                         if not line.startswith('"model::cache"'))
    text = text.replace('model = "models/', f'model = "{ROOT}/models/')
    text = text.replace('device = "cpu"', f'device = "cpu"\ncpu_engine = "{engine}"')
    with tempfile.TemporaryDirectory() as d:
        toml = pathlib.Path(d) / "cpu.toml"
        toml.write_text(text)
        port, metrics = free_port(), free_port()
        server = subprocess.Popen([str(bindir / "server"), "--toml", str(toml),
                                   "--host", "127.0.0.1", "--port", str(port),
                                   "--metrics-port", str(metrics)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health/ready", timeout=1)
                    break
                except OSError:
                    if server.poll() is not None:
                        sys.exit(f"the server ({engine}) exited: {server.stderr.read()[-2000:]}")
                    time.sleep(0.1)
            report = pathlib.Path(d) / "report.json"
            subprocess.run([str(bindir / "client_qps"), "--img_dir",
                            str(ROOT / "benches/imgs"), "--port", str(port),
                            "--request_client", str(clients), "--request_batch", "1",
                            "--duration", str(seconds), "--warmup", "20",
                            "--server-pid", str(server.pid), "--json", str(report)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return json.loads(report.read_text())
        finally:
            server.terminate()
            server.wait()


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--threads", type=int, default=os.cpu_count())
    a.add_argument("--seconds", type=float, default=10.0)
    a.add_argument("--engines", default="onnxruntime,tract")
    a.add_argument("--toml", default=str(ROOT / "configs/resnet50_cpu.toml"))
    a.add_argument("--bin", default=str(ROOT / "target/release"))
    a.add_argument("--clients", type=int, default=8)
    a.add_argument("--out")
    args = a.parse_args()
    x = photos()
    rec = {"date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
           "threads": args.threads, "onnxruntime": ort.__version__,
           "toml": os.path.relpath(args.toml, ROOT), "clients": args.clients,
           "commit": os.environ.get("COMMIT") or subprocess.run(
               ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
               cwd=ROOT).stdout.strip()}
    for batch in (1, 8):
        rec[f"onnxruntime_b{batch}"] = onnxruntime_rate(args.threads, args.seconds, batch, x)
        print(f"onnxruntime in Python, batch {batch}, {args.threads} threads: "
              f"{rec[f'onnxruntime_b{batch}']:.1f} images/s", flush=True)
    best = max(rec["onnxruntime_b1"], rec["onnxruntime_b8"])
    for engine in args.engines.split(","):
        r = ours(engine, args.seconds, args.toml, pathlib.Path(args.bin), args.clients)
        rec[f"ours_{engine}"] = r
        print(f"ours, cpu_engine = {engine}, {args.clients} clients × 1: {r['qps']:.1f} QPS "
              f"(TP50 {r['tp50_ms']:.0f} ms), {r['qps'] / best:.2f} × onnxruntime's best",
              flush=True)
    out = args.out or ROOT / f"benches/results/cpu-engines-{rec['date']}-{os.cpu_count()}core.json"
    pathlib.Path(out).write_text(json.dumps(rec, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
