"""Where PyTorch's own fp16 loses accuracy, block by block, beside ours.

usage: layer_ref.py ONNX_DIR MODEL [OUR_TRACE_LOG] [DETAIL_BLOCKS]

Runs the weights zoo.py saved (ONNX_DIR/<MODEL>.pt) on the photos `model-check
--dump-reference` wrote (ONNX_DIR/<MODEL>.ref.bin/.json), in fp32 and in fp16 channels_last,
with a hook on every child of `features` (and on the model's output), and prints each block's
fp16-vs-fp32 relative L2 over all photos. With OUR_TRACE_LOG (`model-check --trace` of the same
photos, fp16 against our fp32 plan) it prints ours beside it: the last traced step whose ONNX
name lies in that block. The first block where ours grows faster than PyTorch's is where to
look. DETAIL_BLOCKS ("13,14") also prints, for those blocks, the error after every module
inside them in forward order (BatchNorm outputs are where our folded convolutions end), to read
beside our trace's steps of the same blocks.
"""
import re
import sys

import numpy as np
import torch

from zoo_ref import load


def rel_l2(got, want):
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def ours(path):
    """block index -> our rel_l2 at the last traced step named inside features.<i>/"""
    out = {}
    for line in open(path, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.search(r"`([^`]*)`.*rel_l2 ([0-9.e+-]+)", line)
        if not m:
            continue
        b = re.search(r"/features\.(\d+)/", m.group(1))
        if b:
            out[int(b.group(1))] = float(m.group(2))
    return out


def main():
    src, name = sys.argv[1], sys.argv[2]
    mine = ours(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else {}
    detail = [int(b) for b in sys.argv[4].split(",")] if len(sys.argv) > 4 else []
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    x, _, net = load(src, name, dev)
    k = len(x)
    blocks = list(getattr(net, "features", []))
    seen = {}

    def hook(i):
        def f(_m, _inp, out):
            seen.setdefault(i, []).append(out.detach().float().cpu().numpy())
        return f

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    order = []
    for i in detail:
        for sub, mod in blocks[i].named_modules():
            if sub:
                key = f"features.{i}.{sub}"
                order.append(key)
                handles.append(mod.register_forward_hook(hook(key)))
    with torch.no_grad():
        y32 = net(x).float().cpu().numpy()
        h = net.half().to(memory_format=torch.channels_last)
        y16 = h(x.half().contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
    for hd in handles:
        hd.remove()
    print(f"{name}: {k} photos; block, PyTorch fp16 vs fp32, ours fp16 vs fp32")
    for i in sorted(k for k in seen if isinstance(k, int)):
        a, b = seen[i]
        theirs = rel_l2(b, a)
        o = mine.get(i)
        ratio = f"{o / theirs:5.2f}x" if o is not None and theirs > 0 else ""
        print(f"features.{i:<3} torch {theirs:.3e}  ours {o if o is None else f'{o:.3e}'}  {ratio}")
    print(f"output       torch {rel_l2(y16, y32):.3e}")
    # Module outputs in forward order (a module hooked twice, as a shared activation, once).
    fired = sorted((k for k in seen if isinstance(k, str)), key=order.index)
    for key in fired:
        outs = seen[key]
        half = len(outs) // 2
        a, b = outs[half - 1], outs[-1]
        # Per channel, the mean over the map (what a global pool keeps), as model-check's
        # trace prints it for ours.
        means = (f"  channel-means {rel_l2(b.mean(axis=(2, 3)), a.mean(axis=(2, 3))):.3e}"
                 if a.ndim == 4 and a.shape[2] * a.shape[3] > 1 else "")
        print(f"  {key:<40} {list(a.shape[1:])!s:<16} max|x| {np.abs(a).max():.3e}  "
              f"torch {rel_l2(b, a):.3e}{means}")


if __name__ == "__main__":
    main()
