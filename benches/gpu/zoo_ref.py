"""PyTorch's own fp16 error on the inputs model-check checks us on (the fp16 accuracy bar's reference).

usage: zoo_ref.py ONNX_DIR OUTDIR MODEL [MODEL ...]

For each model: the weights zoo.py adjusted and saved (ONNX_DIR/<model>.pt) and the inputs and
CPU-engine logits `model-check --dump-reference` wrote (ONNX_DIR/<model>.ref.bin/.json: every
photo of benches/imgs, resized and converted exactly as model-check does for us). PyTorch runs
them in fp32 (TF32 off: proves the weights and inputs line up, expect ~1e-6) and in fp16
channels_last (cuDNN as PyTorch picks it), and each is compared with the CPU engine's logits as
model-check compares ours: relative L2 over all photos and for the worst single photo (what
model-check's batch-1 row is for us), arg-max agreement per image. Where our
fp16 error is above the issue's 1e-2, this says whether PyTorch's fp16 on the same weights and
photos is too. Writes OUTDIR/<model>.torchref.json.
"""
import copy
import json
import sys

import numpy as np
import torch

from zoo import build


def rel_l2(got, want):
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def load(src, name, dev):
    """The photos model-check used (normalised, on `dev`), the CPU engine's logits for them
    (`[k, outputs]`) and the model with zoo.py's weights, in fp32 on `dev`."""
    meta = json.load(open(f"{src}/{name}.ref.json"))
    raw = np.fromfile(f"{src}/{name}.ref.bin", dtype="<f4")
    k, shape, outputs = meta["images"], meta["input_shape"], meta["outputs"]
    per = int(np.prod(shape))
    x = raw[: k * per].reshape([k] + shape)
    want = raw[k * per:].reshape(k, outputs)
    mean = np.array(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    x = torch.from_numpy((x - mean) / std).to(dev)
    net = build(name).eval()
    net.load_state_dict(torch.load(f"{src}/{name}.pt", map_location="cpu"))
    return x, want, net.to(dev)


def fp16(net, x, k):
    """The net's fp16 channels_last output on x as `[k, outputs]` (converts the net)."""
    h = net.half().to(memory_format=torch.channels_last)
    y = h(x.half().contiguous(memory_format=torch.channels_last))
    return y.float().cpu().numpy().reshape(k, -1)


def fuse(net):
    """Conv → BatchNorm pairs folded as torch.onnx.export folds them in eval mode."""
    from torch.fx.experimental.optimization import fuse as fx_fuse
    return fx_fuse(net.eval())


def main():
    src, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name in names:
        rec = {"model": name}
        try:
            x, want, net = load(src, name, dev)
            k = len(want)
            with torch.no_grad():
                f32 = net(x).float().cpu().numpy().reshape(k, -1)
                folded = fuse(copy.deepcopy(net))
                f16 = fp16(net, x, k)
                f16_folded = fp16(folded, x, k)
            rec.update({
                "images": k,
                "torch_fp32_rel_l2": rel_l2(f32, want),
                "torch_fp32_argmax_agree": int((f32.argmax(1) == want.argmax(1)).sum()),
                "torch_fp16_rel_l2": rel_l2(f16, want),
                # The worst single photo: what model-check's batch-1 row reports for us.
                "torch_fp16_rel_l2_worst_image": max(rel_l2(g, w) for g, w in zip(f16, want)),
                "torch_fp16_finite": bool(np.isfinite(f16).all()),
                "torch_fp16_argmax_agree": int((f16.argmax(1) == want.argmax(1)).sum()),
                # PyTorch fp16 with BatchNorm folded into the weights, as the ONNX file has it.
                "torch_fp16_folded_rel_l2": rel_l2(f16_folded, want),
                "torch_fp16_folded_rel_l2_worst_image": max(rel_l2(g, w) for g, w in
                                                            zip(f16_folded, want)),
                "torch_fp16_folded_argmax_agree": int((f16_folded.argmax(1) ==
                                                       want.argmax(1)).sum()),
                # How near the CPU engine's top two logits are, per image: a fp16 arg-max
                # flip on a near tie says little about the engine.
                "top2_gap_rel": [float((np.sort(r)[-1] - np.sort(r)[-2]) / (np.abs(r).max()
                                                                           + 1e-30))
                                 for r in want],
            })
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the rest go on
            rec["error"] = f"{type(e).__name__}: {e}"[:500]
        json.dump(rec, open(f"{out}/{name}.torchref.json", "w"), indent=1)
        print(name, json.dumps({k: v for k, v in rec.items() if k != "top2_gap_rel"}),
              flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
