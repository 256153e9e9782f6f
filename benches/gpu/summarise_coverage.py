"""The model-coverage rows and table from coverage.sh's calls on the device.

usage: summarise_coverage.py OUT.json OUT.md DIR [DIR ...]

Each DIR is one call's unpacked coverage-<PART>.tgz (a model found in several is taken from
the last that reached it). For each model × exporter × engine (cpu, gpu-fp16, gpu-fp32): whether it loads or
its error; the relative L2 error of its outputs on the photos against onnxruntime's fp32 on the
same file (all photos' logits as one vector; gpu-fp16: the worse of batch 1 and batch 32);
PyTorch's own fp16 error on the same weights and photos, measured the same way; arg-max
agreement with onnxruntime on the photos whose two largest onnxruntime logits differ by more
than 1% of the largest (the others are near ties that any rounding may flip); the GPU engine's
CUDA-graph time beside PyTorch's fp16 channels_last CUDA graph at batch 1 and 32.

Bars (from the acceptance of the check): fp32 and the CPU engine within 1e-4 of onnxruntime;
fp16 within max(1e-2, 1.5 × PyTorch's own fp16 error), every counted arg-max equal; faster than
PyTorch at batch 1 and 32. A row's `pass` says whether it meets them.
"""
import json
import os
import sys

import numpy as np

EXPORTERS = ("torchscript", "dynamo")
ENGINES = ("cpu", "gpu-fp16", "gpu-fp32")
BATCHES = ("1", "32")


def load(path):
    if not os.path.exists(path):
        return None
    return np.fromfile(path, "<f4").astype(np.float64)


def rel_l2(a, b):
    if a is None or b is None or a.size != b.size:
        return None
    return float(np.linalg.norm(a.ravel() - b.ravel()) / max(np.linalg.norm(b), 1e-30))


def argmax_agree(got, ref):
    """[agreeing, counted] over the photos whose reference top-2 gap exceeds 1% of the top."""
    if got is None or ref is None or got.shape != ref.shape:
        return None
    top2 = np.sort(ref, axis=1)[:, -2:]
    counted = (top2[:, 1] - top2[:, 0]) > 0.01 * np.abs(top2[:, 1])
    agree = (got.argmax(1) == ref.argmax(1)) & counted
    return [int(agree.sum()), int(counted.sum())]


def error_of(log_path):
    """model-check's error (anyhow's `Error: …` and its causes), on one line."""
    if not os.path.exists(log_path):
        return "not run (the call's deadline)"
    text = open(log_path, errors="replace").read()
    at = text.rfind("Error: ")
    if at < 0:
        tail = text.strip().splitlines()[-3:]
        return ("no outputs; " + " / ".join(tail))[:600]
    return " ".join(text[at + 7:].split())[:600]


def cpu_error_of(log_path):
    """The CPU engine's refusal, which model-check prints before the GPU engine loads."""
    if os.path.exists(log_path):
        for line in open(log_path, errors="replace"):
            if line.startswith("the CPU engine: "):
                return line[len("the CPU engine: "):].strip()[:600]
    why = error_of(log_path)
    return why if why.startswith("not run") else "not run: " + why


def rows_for(d, name):
    prep = json.load(open(f"{d}/{name}.prep.json"))
    tj = f"{d}/{name}.torch.json"
    torch_rec = json.load(open(tj)) if os.path.exists(tj) else {}
    torch16 = load(f"{d}/{name}.torch16.f32")
    # PyTorch's fp32 on the CPU: on the GPU its convolutions may run in TF32.
    torch32 = load(f"{d}/{name}.cpu32.f32")
    torch_ms = torch_rec.get("torch_graph_ms")
    rows = []
    for exporter in EXPORTERS:
        e = prep.get("exporters", {}).get(exporter, {})
        ref = load(f"{d}/{exporter}/{name}.ort.f32")
        base = {"model": name, "family": prep["family"], "exporter": exporter,
                "torch": prep.get("torch"), "input": prep.get("input"),
                "export_error": e.get("export_error") or prep.get("error"),
                "onnxruntime_error": e.get("onnxruntime_error"),
                "torch_error": torch_rec.get("torch_error")}
        n_img = prep.get("photos")
        fp32_json_path = f"{d}/{exporter}/{name}.fp32.json"
        fp32_json = json.load(open(fp32_json_path)) if os.path.exists(fp32_json_path) else {}
        fp16_json_path = f"{d}/{exporter}/{name}.fp16.json"
        fp16_json = json.load(open(fp16_json_path)) if os.path.exists(fp16_json_path) else {}
        if ref is not None:
            ref = ref.reshape(n_img, -1)
        t16 = torch16.reshape(n_img, -1) if torch16 is not None and n_img else None
        t32 = torch32.reshape(n_img, -1) if torch32 is not None and n_img else None
        torch_err = rel_l2(t16, ref)
        # PyTorch's own fp32 against onnxruntime's fp32, same weights and photos: how far two
        # correct fp32 engines land apart on this file (its conditioning), shown beside an
        # fp32 error over the bar.
        torch32_err = rel_l2(t32, ref)
        torch16_agree = argmax_agree(t16, ref)
        for engine in ENGINES:
            r = dict(base, engine=engine, loads=False, error=None, rel_l2=None,
                     torch_fp16_rel_l2=torch_err, torch_fp32_rel_l2=torch32_err,
                     torch_fp16_argmax_agree=torch16_agree,
                     argmax_agree=None, ours_ms=None,
                     torch_graph_ms=torch_ms if engine == "gpu-fp16" else None)
            if base["export_error"] or ref is None:
                r["error"] = None if base["export_error"] else "no onnxruntime reference"
                rows.append(r)
                continue
            if engine == "cpu":
                got = load(f"{d}/{exporter}/{name}.cpu.f32")
                if got is None:
                    r["error"] = fp32_json.get("cpu_error") or cpu_error_of(
                        f"{d}/{exporter}/{name}.fp32.log")
                outs = [got]
            else:
                prec = engine[4:]
                js = fp16_json if prec == "fp16" else fp32_json
                outs = [load(f"{d}/{exporter}/{name}.{prec}.b{b}.f32")
                        for b in (BATCHES if prec == "fp16" else ("1",))]
                if any(o is None for o in outs):
                    r["error"] = error_of(f"{d}/{exporter}/{name}.{prec}.log")
                    outs = [None]
                elif prec == "fp16":
                    r["ours_ms"] = {str(b["batch"]): b["ours_ms"] for b in js.get("batches", [])}
                    # model-check --profile (PROFILE=1): the steps' device time by kind.
                    prof = {str(b["batch"]): b["profile"] for b in js.get("batches", [])
                            if b.get("profile")}
                    if prof:
                        r["profile"] = {b: {"sum_ms": p["sum_ms"], "by_kind": p["by_kind"]}
                                        for b, p in prof.items()}
            if outs[0] is None:
                rows.append(r)
                continue
            outs = [o.reshape(n_img, -1) for o in outs]
            r["loads"] = True
            errs = [rel_l2(o, ref) for o in outs]
            r["rel_l2"] = None if None in errs else max(errs)
            agrees = [argmax_agree(o, ref) for o in outs]
            r["argmax_agree"] = None if None in agrees else \
                [min(a[0] for a in agrees), agrees[0][1]]
            rows.append(r)
    for r in rows:
        r["pass"] = passes(r)
    return rows


def passes(r):
    if not r["loads"] or r["rel_l2"] is None:
        return False
    if r["engine"] in ("cpu", "gpu-fp32"):
        return r["rel_l2"] <= 1e-4
    bar = max(1e-2, 1.5 * (r["torch_fp16_rel_l2"] or 0.0))
    a = r["argmax_agree"]
    return r["rel_l2"] <= bar and a is not None and a[0] == a[1]


def faster(r):
    """At batch 1 and 32, our time below PyTorch's (None when either is missing)."""
    ours, theirs = r.get("ours_ms") or {}, r.get("torch_graph_ms") or {}
    if not all(b in ours and b in theirs for b in BATCHES):
        return None
    return all(ours[b] < theirs[b] for b in BATCHES)


def main():
    out, md, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
    found, meta = {}, {}
    for d in dirs:
        header = open(f"{d}/device.txt").read().split("\n")
        meta[d] = {"device": header[0].strip(), "commit": header[1].split()[-1],
                   "date": header[2].strip()}
        for f in sorted(os.listdir(d)):
            if f.endswith(".prep.json"):
                name = f[:-len(".prep.json")]
                # A call that reached the model (PyTorch's turn came) wins over one that only
                # prepared it before its deadline.
                reached = os.path.exists(f"{d}/{name}.torch.json")
                if reached or name not in found or not found[name][1]:
                    found[name] = (d, reached)
    rows = []
    for name, (d, _) in sorted(found.items()):
        rows += [dict(r, call=os.path.basename(os.path.normpath(d))) for r in rows_for(d, name)]
    first = meta[dirs[0]]
    doc = {"device": first["device"], "date": first["date"],
           "commit": sorted({m["commit"] for m in meta.values()}),
           "calls": {os.path.basename(os.path.normpath(d)): m for d, m in meta.items()},
           "rows": rows}
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
    with open(md, "w") as f:
        f.write(markdown(doc, os.path.relpath(out, os.path.dirname(md) or ".")))
    for r in rows:
        print(f"{r['exporter']:11} {r['model']:28} {r['engine']:8} {cell(r)}")


def cell(r):
    if r["export_error"]:
        return "export failed: " + r["export_error"].splitlines()[0][:100]
    if not r["loads"]:
        why = (r["error"] or "")[:140].replace("|", "/")
        return why if why.startswith("not run") else "refused: " + why
    s = f"{r['rel_l2']:.1e}"
    if r["engine"] != "gpu-fp16" and not r["pass"] and r.get("torch_fp32_rel_l2"):
        s += f" (PyTorch fp32 {r['torch_fp32_rel_l2']:.1e})"
    if r["engine"] == "gpu-fp16":
        s += f" (PyTorch {r['torch_fp16_rel_l2']:.1e})" if r["torch_fp16_rel_l2"] else ""
        a, t = r["argmax_agree"], r.get("torch_fp16_argmax_agree")
        if a:
            s += f", arg-max {a[0]}/{a[1]}"
            # Where ours misses an arg-max, PyTorch's own fp16 on the same photos.
            if a[0] < a[1] and t:
                s += f" (PyTorch {t[0]}/{t[1]})"
    return s + ("" if r["pass"] else " ✗")


def ms(r, b):
    ours, theirs = (r.get("ours_ms") or {}).get(b), (r.get("torch_graph_ms") or {}).get(b)
    if ours is None or theirs is None:
        return "–"
    return f"{ours:.2f} / {theirs:.2f}"


def markdown(doc, json_path):
    rows = doc["rows"]
    fp16 = [r for r in rows if r["engine"] == "gpu-fp16" and not r["export_error"]]
    loaded = {e: sum(r["loads"] for r in fp16 if r["exporter"] == e) for e in EXPORTERS}
    total = {e: sum(1 for r in fp16 if r["exporter"] == e) for e in EXPORTERS}
    timed = [faster(r) for r in fp16 if faster(r) is not None]
    calls = "; ".join(f"`{c}` {m['device'].split(',')[0]}, {m['date']}, commit {m['commit']}"
                      for c, m in doc["calls"].items())
    lines = [
        f"# Model coverage on the GPU: {doc['date']}, commit {', '.join(doc['commit'])}", "",
        "Every model exported by both of PyTorch's exporters (seeded weights, BatchNorm "
        "statistics calibrated on random images), each file run by the GPU engine in fp16 and "
        "fp32 and by the CPU engine on the same photos, and judged against onnxruntime (CPU, "
        "fp32) on the same file. Cells: relative L2 error against onnxruntime (fp16: beside "
        "PyTorch's own fp16 error on the same weights and photos, and arg-max agreement on the "
        "photos whose top two logits differ by more than 1%, with PyTorch's own fp16 agreement "
        "beside ours where ours misses one); ✗ marks a miss of the bar "
        "(fp32 and CPU ≤ 1e-4; fp16 ≤ max(1e-2, 1.5 × PyTorch's), every counted arg-max "
        "equal); beside an fp32 or CPU error over the bar, PyTorch's own fp32 error against "
        "onnxruntime on the same file (what two correct fp32 engines differ by on it). "
        "Times: our CUDA graph / PyTorch's fp16 channels_last CUDA graph, ms, both measured in "
        "the same call on the same GPU (column `call`). "
        "Produced by benches/gpu/coverage.sh and summarise_coverage.py; the rows: "
        f"[{os.path.basename(json_path)}]({json_path}).", "",
        "Loaded by the GPU engine (fp16): " + ", ".join(
            f"{e} {loaded[e]} of {total[e]}" for e in EXPORTERS)
        + f"; faster than PyTorch at batch 1 and 32: {sum(timed)} of {len(timed)} timed.", "",
        f"Calls: {calls}.", ""]
    for exporter in EXPORTERS:
        lines += [f"## {exporter}", "",
                  "| model | family | GPU fp16 | GPU fp32 | CPU engine | batch 1 ms | "
                  "batch 32 ms | call |", "|---|---|---|---|---|---|---|---|"]
        by_model = {}
        for r in rows:
            if r["exporter"] == exporter:
                by_model.setdefault((r["family"], r["model"]), {})[r["engine"]] = r
        for (family, model), e in sorted(by_model.items(), key=lambda k: (k[0][0] != "torchvision", k[0][1])):
            f16 = e["gpu-fp16"]
            lines.append(f"| {model} | {family} | {cell(f16)} | {cell(e['gpu-fp32'])} | "
                         f"{cell(e['cpu'])} | {ms(f16, '1')} | {ms(f16, '32')} | "
                         f"{f16.get('call', '')} |")
        lines.append("")
    lines += slower(fp16)
    return "\n".join(lines)


def slower(fp16):
    """The rows slower than PyTorch at batch 1 or 32, and where their time goes."""
    rows = [r for r in fp16 if faster(r) is False]
    if not rows:
        return []
    out = ["## Slower than PyTorch: where the time goes", "",
           "Per row, the batch sizes where ours is slower, and there model-check's `--profile` "
           "(each step timed eagerly between events, so the sum exceeds the graph's time): the "
           "share of the steps' time by kind, largest first. Rows of calls run without "
           "`PROFILE=1` have no profile.", "",
           "| model | exporter | slower at (ours / PyTorch, ms) | where the time goes | call |",
           "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["exporter"])):
        at = [b for b in BATCHES if r["ours_ms"][b] >= r["torch_graph_ms"][b]]
        when = ", ".join(f"batch {b} ({r['ours_ms'][b]:.2f} / {r['torch_graph_ms'][b]:.2f})"
                         for b in at)
        prof = r.get("profile") or {}
        where = []
        for b in at:
            p = prof.get(b)
            if not p:
                continue
            kinds = sorted(p["by_kind"].items(), key=lambda kv: -kv[1]["ms"])
            share = ", ".join(f"{k} {100 * v['ms'] / p['sum_ms']:.0f}% ({v['steps']} steps)"
                              for k, v in kinds[:3])
            where.append(f"batch {b}: {share}")
        out.append(f"| {r['model']} | {r['exporter']} | {when} | "
                   f"{'; '.join(where) or 'no profile'} | {r.get('call', '')} |")
    out.append("")
    return out


if __name__ == "__main__":
    main()
