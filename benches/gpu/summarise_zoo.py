"""Merges zoo.sh outputs (the zoo-<part>.tgz of one or more device calls, unpacked into
folders) into benches/results/gpu-zoo-<date>.json in the zoo's format, and prints the table
the README carries. A model checked in several folders is taken from the last one given; its
fp32 check, when that folder has none, from the last folder that has one (`fp32_commit`); the
PyTorch reference (zoo_ref.py) merged over all folders, later figures replacing earlier ones.

usage: summarise_zoo.py OUT.json DIR [DIR ...]
"""
import glob
import json
import os
import sys

ORDER = ["resnet18", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2",
         "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "mnasnet1_0",
         "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0", "googlenet", "vgg16", "alexnet",
         "convnext_tiny", "vit_b_16"]


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def first_error(log):
    try:
        for line in open(log):
            if line.startswith("Error:"):
                return line[len("Error:"):].strip()
    except OSError:
        pass
    return None


def main():
    out, dirs = sys.argv[1], sys.argv[2:]
    found, meta = {}, {}
    for d in dirs:
        dev = open(os.path.join(d, "device.txt")).read().split("\n")
        for t in glob.glob(os.path.join(d, "*.torch.json")):
            name = os.path.basename(t)[: -len(".torch.json")]
            # A later call on the same machine may carry an earlier call's torch.json along
            # (its /tmp survives): only a folder with the model's own check replaces another.
            if name not in found or os.path.exists(os.path.join(d, f"{name}.fp16.json")):
                found[name] = d
        meta[d] = dev
    rows = []
    for name in sorted(found, key=lambda n: ORDER.index(n) if n in ORDER else 99):
        d = found[name]
        torch = load(os.path.join(d, f"{name}.torch.json")) or {}
        f16 = load(os.path.join(d, f"{name}.fp16.json"))
        # The fp32 check from the model's folder, else from the last folder that has one (a
        # call that checked fp32 only at batch 1); its commit is recorded beside.
        f32_dir = d if os.path.exists(os.path.join(d, f"{name}.fp32.json")) else next(
            (x for x in reversed(dirs) if os.path.exists(os.path.join(x, f"{name}.fp32.json"))),
            d)
        f32 = load(os.path.join(f32_dir, f"{name}.fp32.json"))
        # PyTorch's reference on the photos, merged over every folder in the order given (a
        # later folder's figure replaces an earlier one's): a call that re-measured only some
        # of it (the folded-BatchNorm figures) keeps the rest from the calls before.
        ref = {}
        for x in dirs:
            r = load(os.path.join(x, f"{name}.torchref.json")) or {}
            if "error" not in r:
                ref.update(r)
        tb = {b["batch"]: b["torch_graph_ms"] for b in torch.get("batches", [])}
        row = {
            "model": name,
            "loads": f16 is not None,
            "error": None if f16 else first_error(os.path.join(d, f"{name}.fp16.log")),
            "rel_l2_fp16": max(b["rel_l2"] for b in f16["batches"]) if f16 else None,
            "rel_l2_fp32": max(b["rel_l2"] for b in f32["batches"]) if f32 else None,
            "argmax_agree": (sum(b["argmax_agree"] for b in f16["batches"]),
                             sum(b["argmax_total"] for b in f16["batches"])) if f16 else None,
            "argmax_agree_fp32": (sum(b["argmax_agree"] for b in f32["batches"]),
                                  sum(b["argmax_total"] for b in f32["batches"])) if f32 else None,
            "torch_fp16_rel_l2_random_input": torch.get("torch_fp16_rel_l2"),
            # PyTorch's fp16 on the same weights and photos against the same CPU logits
            # (zoo_ref.py), the reference for rel_l2_fp16 and argmax_agree.
            "torch_fp16_rel_l2": ref.get("torch_fp16_rel_l2"),
            "torch_fp16_rel_l2_worst_image": ref.get("torch_fp16_rel_l2_worst_image"),
            "torch_fp16_argmax_agree": (ref["torch_fp16_argmax_agree"], ref["images"])
            if "images" in ref else None,
            # The same with BatchNorm folded into the weights, as the ONNX file we load has it.
            "torch_fp16_folded_rel_l2": ref.get("torch_fp16_folded_rel_l2"),
            "torch_fp16_folded_rel_l2_worst_image": ref.get(
                "torch_fp16_folded_rel_l2_worst_image"),
            "torch_fp32_rel_l2": ref.get("torch_fp32_rel_l2"),
            "bn_calibrated": torch.get("bn_calibrated"),
            "weights_halved": torch.get("weights_halved"),
            "commit": meta[d][1].replace("commit ", ""),
            "fp32_commit": meta[f32_dir][1].replace("commit ", "") if f32 else None,
            "batches": [],
        }
        for b in (f16 or {}).get("batches", []):
            t = tb.get(b["batch"])
            row["batches"].append({
                "batch": b["batch"], "ours_ms": round(b["ours_ms"], 4),
                "torch_graph_ms": round(t, 4) if t else None,
                "torch_over_ours": round(t / b["ours_ms"], 2) if t else None,
            })
        if not f16:
            row["batches"] = [{"batch": k, "ours_ms": None, "torch_graph_ms": round(v, 4),
                               "torch_over_ours": None} for k, v in sorted(tb.items())]
        rows.append(row)
    first = meta[dirs[0]]
    doc = {"device": first[0], "date": first[2], "commit": sorted({r["commit"] for r in rows}),
           "how": "benches/gpu/zoo.sh: torchvision models with seeded random weights (BatchNorm "
                  "statistics calibrated on random images), exported by torch.onnx.export "
                  "(TorchScript exporter, opset 17, dynamic batch); model-check fp16 at each "
                  "batch (CUDA-graph replay, median of 15 rounds of 20) and fp32 at batch 1, "
                  "against the CPU engine (tract) on the 11 photos of benches/imgs; PyTorch "
                  "fp16 channels_last CUDA graph on the same weights in the same call",
           "models": rows}
    json.dump(doc, open(out, "w"), indent=1)
    # Ours is the worst of model-check's batches, which at batch 1 is the worst single photo:
    # PyTorch's worst photo is the figure to read it against.
    print("| model | loads | rel L2 fp16, worst (PyTorch's worst photo; folded BatchNorm) "
          "| rel L2 fp32 | arg-max fp16 (PyTorch) | b1 ours / torch ms | b8 | b32 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = []
        for k in (1, 8, 32):
            b = next((x for x in r["batches"] if x["batch"] == k), None)
            if b and b["ours_ms"]:
                cells.append(f'{b["ours_ms"]:.3f} / {b["torch_graph_ms"]:.3f} '
                             f'({b["torch_over_ours"]:.2f}×)')
            else:
                cells.append("–")
        am = f'{r["argmax_agree"][0]}/{r["argmax_agree"][1]}' if r["argmax_agree"] else "–"
        f16 = f'{r["rel_l2_fp16"]:.1e}' if r["rel_l2_fp16"] is not None else "–"
        if r["torch_fp16_rel_l2_worst_image"] is not None:
            f16 += f' ({r["torch_fp16_rel_l2_worst_image"]:.1e}'
            if r["torch_fp16_folded_rel_l2_worst_image"] is not None:
                f16 += f'; folded {r["torch_fp16_folded_rel_l2_worst_image"]:.1e}'
            f16 += ")"
        if r["torch_fp16_argmax_agree"]:
            am += " ({}/{})".format(*r["torch_fp16_argmax_agree"])
        f32 = f'{r["rel_l2_fp32"]:.1e}' if r["rel_l2_fp32"] is not None else "–"
        print(f'| {r["model"]} | {"yes" if r["loads"] else "no"} | {f16} | {f32} | {am} | '
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
