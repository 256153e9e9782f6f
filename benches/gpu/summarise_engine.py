"""Joins model-check's and PyTorch's JSON from one device run into
benches/results/gpu-engine-<date>.json's shape and prints the table."""
import datetime
import json
import os
import subprocess
import sys

out = sys.argv[1]
ours = json.load(open(os.path.join(out, "fp16.json")))
torch = {b["batch"]: b for b in json.load(open(os.path.join(out, "torch.json")))["batches"]}
fp32_path = os.path.join(out, "fp32.json")
fp32 = json.load(open(fp32_path)) if os.path.exists(fp32_path) else {"batches": []}
cached = json.load(open(os.path.join(out, "fp16_cached.json")))
commit = os.environ.get("COMMIT") or subprocess.run(
    ["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
rows = []
print(f"{'batch':>5} {'ours_ms':>8} {'torch_ms':>9} {'torch/ours':>10} {'rel_l2':>9} {'run_ms':>8}")
for b in ours["batches"]:
    t = torch.get(b["batch"], {}).get("torch_graph_ms")
    rows.append({"batch": b["batch"], "ours_ms": round(b["ours_ms"], 4),
                 "torch_graph_ms": round(t, 4) if t else None, "rel_l2": b["rel_l2"],
                 "ours_run_ms": round(b["ours_run_ms"], 4)})
    ratio = f"{t / b['ours_ms']:.2f}" if t else "-"
    print(f"{b['batch']:>5} {b['ours_ms']:>8.3f} {t or 0:>9.3f} {ratio:>10} {b['rel_l2']:>9.2e} "
          f"{b['ours_run_ms']:>8.3f}")
print("fp32:", [(b["batch"], f"{b['rel_l2']:.2e}", f"{b['argmax_agree']}/{b['argmax_total']}")
                for b in fp32["batches"]])
print("argmax all agree (fp16):", ours["argmax_all_agree"])
print("concurrency:", ours.get("concurrency"))
print(f"ready: first {ours['ready_s']:.2f} s ({ours['cache']}), second {cached['ready_s']:.2f} s "
      f"({cached['cache']}): {ours['ready_s'] / cached['ready_s']:.1f}x")
json.dump({"device": ours["device"], "date": datetime.date.today().isoformat(), "commit": commit,
           "precision": "fp16", "batches": rows,
           "fp32_check": fp32["batches"], "argmax_all_agree": ours["argmax_all_agree"],
           "concurrency": ours.get("concurrency"),
           "ready_s": {"first": ours["ready_s"], "cached": cached["ready_s"],
                       "tune_s": ours["tune_s"]}},
          open(os.path.join(out, "gpu-engine.json"), "w"), indent=1)
