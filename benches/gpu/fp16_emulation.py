"""fp16 rounding emulated on the CPU: where the zoo's fp16 error comes from (issue 13).

usage: fp16_emulation.py [--seeds N] [--blocks] MODEL [MODEL ...]

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
torch.manual_seed(0..N-1) for the weights (how much is the draw of one seed); --blocks rounds
only one block's weights at a time (how much one block's weight rounding moves the output).
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


def emulate(net, x, only=None):
    """net's output with fp16 rounding emulated; `only`: round just those parameters'
    names (and no activations)."""
    n = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in list(n.named_parameters()) + list(n.named_buffers()):
            if p.is_floating_point() and (only is None or only(name)):
                p.copy_(r16(p))
        if only is None:
            for m in n.modules():
                m.register_forward_hook(lambda m, i, o: r16(o) if torch.is_tensor(o) else o)
            x = r16(x)
        return n(x)


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
            if a.blocks and hasattr(net, "features"):
                for i in range(len(net.features)):
                    pre = f"features.{i}."
                    e = [rel(emulate(n, x, lambda k, pre=pre: k.startswith(pre)), ref)
                         for n in (net, folded)]
                    print(f"  block {i} weights alone: pytorch {e[0]:.2e}, folded {e[1]:.2e}",
                          flush=True)


if __name__ == "__main__":
    main()
