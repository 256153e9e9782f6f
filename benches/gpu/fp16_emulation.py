"""fp16 rounding emulated on the CPU: where a model's fp16 error comes from.

usage: fp16_emulation.py [--seeds N] [--blocks] [--parts] [--sum-preserving] [--keep KINDS ...]
                         [--se-values] MODEL [MODEL ...]

Runs on any machine with torch and torchvision (no GPU): the model and weights the coverage
check uses (export_models.build: torchvision's MODEL or timm's `timm:NAME`, seeded, BatchNorm
calibrated on the CPU exactly as zoo.py does), the photos of benches/imgs resized to
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
channel's rounding errors made to sum to ~0 (a lead for the engine's weight conversion);
--keep KINDS (comma-separated, repeatable) runs the folded net in fp16 with the weights of those
kinds kept in fp32, the activations rounded as before: dw (depthwise convolutions' filters), se
(squeeze-excitation's convolutions), conv (every other convolution's filters), fc (Linear
weights), bias (every bias), all (every parameter); with --se-values the values inside
squeeze-excitation blocks and the head (global pool, classifier) stay in fp32 too. Which parts
an engine could keep in fp32, and what is left when it does, is what this asks. --sum-preserving
also runs the whole emulation (weights and activations) with that rounding of the filters.
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
from export_models import build  # noqa: E402
from zoo import calibrate  # noqa: E402

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
            # timm's BatchNormAct2d applies its activation itself: it stays.
            rest = (torch.nn.Sequential(m.drop, m.act) if hasattr(m, "act")
                    else torch.nn.Identity())
            setattr(mods[parent] if parent else net, attr, rest)
        prev = m
    return net


def round_outputs(net, skip=()):
    """Rounds every module's output to fp16 (but those of the modules named in `skip`)."""
    for name, m in net.named_modules():
        if name not in skip:
            m.register_forward_hook(lambda m, i, o: r16(o) if torch.is_tensor(o) else o)


def emulate(net, x, only=None, weights=True):
    """net's output with fp16 rounding emulated; `only`: round just the parameters whose names
    it accepts (and no activations); `weights=False`: round the activations alone."""
    n = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in list(n.named_parameters()) + list(n.named_buffers()):
            if weights and p.is_floating_point() and (only is None or only(name)):
                p.copy_(r16(p))
        if only is None:
            round_outputs(n)
            x = r16(x)
        return n(x)


KINDS = ("dw", "se", "conv", "fc", "bias", "all")


def kind_of(net):
    """Parameter name → its kind (KINDS) in net."""
    out = {}
    for mname, m in net.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if pname == "bias":
                out[full] = "bias"
            elif isinstance(m, torch.nn.Linear):
                out[full] = "fc"
            elif isinstance(m, torch.nn.Conv2d):
                se = mname.rsplit(".", 1)[-1] in ("fc1", "fc2") or ".se." in f".{mname}."
                if se:
                    out[full] = "se"
                elif m.groups > 1 and m.groups == m.in_channels:
                    out[full] = "dw"
                else:
                    out[full] = "conv"
    return out


def vector_modules(net):
    """Names of the modules whose outputs are vectors: inside squeeze-excitation blocks (not
    the block's own output, the scaled map) and the head (global pool, classifier)."""
    se = [n for n, m in net.named_modules() if isinstance(m, torchvision.ops.SqueezeExcitation)]
    out = set()
    for name, m in net.named_modules():
        inside = any(name.startswith(s + ".") for s in se)
        head = name.split(".")[0] in ("avgpool", "classifier", "fc") and name != ""
        if inside or head:
            out.add(name)
    return out


def keep_fp32(net, x, keep, se_values=False):
    """The folded net in emulated fp16 with the parameters of the kinds in `keep` in fp32 (and
    with `se_values`, the values of vector_modules)."""
    kinds = kind_of(net)
    vectors = vector_modules(net) if se_values else set()
    n = copy.deepcopy(net)
    with torch.no_grad():
        for name, p in n.named_parameters():
            if "all" not in keep and kinds.get(name) not in keep:
                p.copy_(r16(p))
        round_outputs(n, skip=vectors)
        return n(r16(x))


def sum_preserving(w):
    """fp16 values for w, row by row (an output channel each): round to nearest, then move the
    roundings that cost least to the other fp16 neighbour of their weight, as many as bring the
    row's summed error nearest 0 (only those whose move is against the sum's sign)."""
    w64 = w.double().reshape(w.shape[0], -1)
    nearh = w64.half()
    near = nearh.double()
    inf = torch.tensor(float("inf"), dtype=torch.half)
    other = torch.where(near > w64, torch.nextafter(nearh, -inf).double(),
                        torch.nextafter(nearh, inf).double())
    d = other - near
    e = (near - w64).sum(1, keepdim=True)
    cand = d * e < 0
    cost = torch.where(cand, (other - w64).abs() - (near - w64).abs(),
                       torch.full_like(d, float("inf")))
    order = torch.argsort(cost, dim=1)
    moves = torch.gather(torch.where(cand, d, torch.zeros_like(d)), 1, order)
    sums = torch.cat([torch.zeros_like(e), torch.cumsum(moves, 1)], 1)
    k = torch.argmin((e + sums).abs(), dim=1, keepdim=True)
    moved = torch.zeros_like(cand).scatter(1, order, torch.arange(d.shape[1]) < k)
    return torch.where(moved, other, near).reshape(w.shape).float()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def model(name, seed):
    if seed == 0:
        net = build(name).eval()
    elif name.startswith("timm:"):
        import timm
        torch.manual_seed(seed)
        net = timm.create_model(name[5:], pretrained=False).eval()
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
    ap.add_argument("--keep", action="append", default=[],
                    help="comma-separated kinds: " + ", ".join(KINDS))
    ap.add_argument("--se-values", action="store_true")
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
                    round_outputs(n)
                    y = n(r16(x))
                near = rel(emulate(folded, x, only=lambda k: True), ref)
                print(f"  folded weights alone: to nearest {near:.2e}, sum-preserving {sp:.2e}; "
                      f"with the activations rounded: sum-preserving {rel(y, ref):.2e} (worst "
                      f"photo {max(rel(p, q) for p, q in zip(y, ref)):.2e})", flush=True)
            for k in a.keep if seed == 0 else ():
                keep = set(k.split(","))
                if not keep <= set(KINDS):
                    ap.error(f"--keep {k}: kinds are " + ", ".join(KINDS))
                y = keep_fp32(folded, x, keep, a.se_values)
                extra = " and the SE/head values" if a.se_values else ""
                print(f"  folded, {k}{extra} in fp32: {rel(y, ref):.2e} (worst photo "
                      f"{max(rel(p, q) for p, q in zip(y, ref)):.2e})", flush=True)
            if a.blocks and seed == 0 and hasattr(net, "features"):
                for i in range(len(net.features)):
                    pre = f"features.{i}."
                    e = [rel(emulate(n, x, lambda k, pre=pre: k.startswith(pre)), ref)
                         for n in (net, folded)]
                    print(f"  block {i} weights alone: pytorch {e[0]:.2e}, folded {e[1]:.2e}",
                          flush=True)


if __name__ == "__main__":
    main()
