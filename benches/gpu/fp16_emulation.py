"""fp16 rounding emulated on the CPU: where the zoo's fp16 error comes from (issue 13).

usage: fp16_emulation.py [--seeds N] [--blocks] [--parts] [--sum-preserving] MODEL [MODEL ...]

Runs on any machine with torch and torchvision (no GPU): zoo.py's model and weights (seeded,
BatchNorm calibrated on the CPU exactly as zoo.py does), the photos of benches/imgs resized to
224 × 224, and the fp32 output as the reference. fp16 is emulated by rounding to fp16 where an
engine rounds, computing in fp32 between:
- "pytorch": PyTorch's `.half()` module: every weight and BatchNorm parameter rounded, every
  module's output rounded (BatchNorm runs after its convolution);
- "folded": the ONNX file's weights as the exporter writes them (BatchNorm folded into the
  convolution in fp32), then rounded, every module's output rounded: what our engine and any
  engine that loads the ONNX file (TensorRT too) computes from.
Prints relative L2 over all photos and for the worst photo. --seeds N repeats with
torch.manual_seed(0..N-1) for the weights (how much is the draw of one seed). For seed 0 (the
zoo's weights): --parts rounds the weights alone and the activations alone; --blocks rounds only
one block's weights at a time (how much one block's weight rounding moves the output);
--sum-preserving rounds the folded weights alone, to nearest and then with each output
channel's rounding errors made to sum to ~0 (a lead for the engine's weight conversion).
"""
import argparse
import copy
import glob
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo import build, calibrate  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def photos():
    xs = []
    for p in sorted(glob.glob(os.path.join(ROOT, "benches/imgs/*"))):
        if p.lower().rsplit(".", 1)[-1] in ("jpg", "jpeg", "png", "bmp"):
            im = Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)
            xs.append(((np.asarray(im, np.float32) - MEAN) / STD).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(xs))


def r16(t):
    return t.half().float() if torch.is_tensor(t) and t.is_floating_point() else t


def fold(net):
    """Conv → BatchNorm folded into the conv's weight and bias in fp32, as the exporter does."""
    net = copy.deepcopy(net)
    mods = dict(net.named_modules())
    prev = None
    for name, m in list(net.named_modules()):
        if isinstance(m, torch.nn.BatchNorm2d) and prev is not None and isinstance(
                prev, torch.nn.Conv2d):
            s = m.weight / torch.sqrt(m.running_var + m.eps)
            with torch.no_grad():
                prev.weight.mul_(s.view(-1, 1, 1, 1))
                b = prev.bias if prev.bias is not None else torch.zeros_like(m.running_mean)
                prev.bias = torch.nn.Parameter(b * s + m.bias - m.running_mean * s)
            parent, _, attr = name.rpartition(".")
            setattr(mods[parent] if parent else net, attr, torch.nn.Identity())
        prev = m
    return net


def emulate(net, x, only=None, weights=True):
    """net's output with fp16 rounding emulated; `only`: round just the parameters whose names
    it accepts (and no activations); `weights=False`: round the activations alone."""
    n = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in list(n.named_parameters()) + list(n.named_buffers()):
            if weights and p.is_floating_point() and (only is None or only(name)):
                p.copy_(r16(p))
        if only is None:
            for m in n.modules():
                m.register_forward_hook(lambda m, i, o: r16(o) if torch.is_tensor(o) else o)
            x = r16(x)
        return n(x)


def sum_preserving(w):
    """fp16 values for w, row by row (an output channel each): round to nearest, then flip the
    roundings that cost least until the row's errors sum as near 0 as flips can take them;
    every value stays one of the two fp16 neighbours of its weight."""
    w64 = w.double().reshape(w.shape[0], -1)
    near = w64.half().double()
    inf = torch.tensor(float("inf"), dtype=torch.half)
    other_up = torch.nextafter(near.half(), inf).double()
    other_dn = torch.nextafter(near.half(), -inf).double()
    other = torch.where(near > w64, other_dn, other_up)
    out = near.clone()
    for i in range(w64.shape[0]):
        e = float((near[i] - w64[i]).sum())
        cost = (other[i] - w64[i]).abs() - (near[i] - w64[i]).abs()
        for j in torch.argsort(cost).tolist():
            d = float(other[i, j] - near[i, j])
            if abs(e + d) < abs(e):
                out[i, j] = other[i, j]
                e += d
    return out.reshape(w.shape).float()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def model(name, seed):
    if seed == 0:
        net = build(name).eval()
    else:
        torch.manual_seed(seed)
        net = getattr(torchvision.models, name)(weights=None).eval()
    calibrate(net, "cpu")
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--blocks", action="store_true")
    ap.add_argument("--parts", action="store_true")
    ap.add_argument("--sum-preserving", action="store_true")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    x = photos()
    for name in a.models:
        for seed in range(a.seeds):
            net = model(name, seed)
            folded = fold(net)
            with torch.no_grad():
                ref = net(x)
            out = []
            for label, n in (("pytorch", net), ("folded", folded)):
                y = emulate(n, x)
                out.append(f"{label} {rel(y, ref):.2e} (worst photo "
                           f"{max(rel(p, q) for p, q in zip(y, ref)):.2e})")
            print(f"{name} seed {seed}: " + ", ".join(out), flush=True)
            if a.parts and seed == 0:
                w = [rel(emulate(n, x, only=lambda k: True), ref) for n in (net, folded)]
                act = [rel(emulate(n, x, weights=False), ref) for n in (net, folded)]
                print(f"  weights alone: pytorch {w[0]:.2e}, folded {w[1]:.2e}; activations "
                      f"alone: pytorch {act[0]:.2e}, folded {act[1]:.2e}", flush=True)
            if a.sum_preserving and seed == 0:
                n = copy.deepcopy(folded)
                with torch.no_grad():
                    for p in n.parameters():
                        p.copy_(sum_preserving(p) if p.dim() == 4 else r16(p))
                    sp = rel(n(x), ref)
                near = rel(emulate(folded, x, only=lambda k: True), ref)
                print(f"  folded weights alone: to nearest {near:.2e}, sum-preserving {sp:.2e}",
                      flush=True)
            if a.blocks and seed == 0 and hasattr(net, "features"):
                for i in range(len(net.features)):
                    pre = f"features.{i}."
                    e = [rel(emulate(n, x, lambda k, pre=pre: k.startswith(pre)), ref)
                         for n in (net, folded)]
                    print(f"  block {i} weights alone: pytorch {e[0]:.2e}, folded {e[1]:.2e}",
                          flush=True)


if __name__ == "__main__":
    main()
