"""torchvision's classification zoo for the GPU engine's check, on the device.

usage: zoo.py OUTDIR BATCHES MODEL [MODEL ...]

For each model: seeded random weights (torch.manual_seed(0) before construction), exported
as the seed's main_torchpipe.py does (torch.onnx.export, opset 17, constant folding, dynamic
batch; the TorchScript exporter, whose output the seed's users have) to OUTDIR/<model>.onnx;
then PyTorch's own time on the same weights: fp16, channels_last, one CUDA graph per batch
size, median of 31 rounds of 20 replays between CUDA events.

Random weights need one adjustment to be a fair fp16 test: with BatchNorm's initial statistics
(mean 0, variance 1) the activations of the deeper torchvision nets shrink layer after layer
(mnasnet's reach 1e-6, below fp16's normal range) or grow past it (resnet101), so fp16 output
is noise in any engine. So BatchNorm statistics are calibrated first, as training would leave
them: running mean/variance over 4 batches of 16 random images (train mode, cumulative
average), on the CPU so that every call exports the same weights (cuDNN's training kernels
are not deterministic, and regnet_y_400mf's fp16 error moved 3× between two calls' weights). Where PyTorch's fp16 output is still not finite, conv/linear weights are halved until
it is (at most 8 times). The adjusted model is what gets exported; the JSON says what was done
and how far PyTorch's own fp16 output is from its fp32 output.
Writes OUTDIR/<model>.torch.json, and the adjusted weights as OUTDIR/<model>.pt for
zoo_ref.py (PyTorch's own fp16 error on the photos model-check uses).
"""
import json
import sys
import time
import warnings

import numpy as np
import torch
import torchvision

warnings.filterwarnings("ignore")


def build(name):
    torch.manual_seed(0)
    ctor = getattr(torchvision.models, name)
    if name == "googlenet":
        return ctor(weights=None, aux_logits=False, init_weights=True)
    if name == "inception_v3":
        return ctor(weights=None, aux_logits=False, init_weights=True)
    net = ctor(weights=None)
    if name.startswith("vit_"):
        # torchvision initialises ViT's classifier to zeros: every logit would be 0, and any
        # engine would "match" PyTorch and the CPU engine. Linear's default init instead.
        net.heads.head.reset_parameters()
    return net


def calibrate(net, dev, chw=(3, 224, 224)):
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.cpu().train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(16, *chw, generator=gen))
    net.eval().to(dev)
    return True


def fp16_error(net, x):
    """Relative L2 of PyTorch's fp16 channels_last output against its fp32 output."""
    with torch.no_grad():
        ref = net.float()(x).float()
        got = net.half().to(memory_format=torch.channels_last)(
            x.half().contiguous(memory_format=torch.channels_last)).float()
    net.float().to(memory_format=torch.contiguous_format)
    return float((got - ref).norm() / ref.norm())


def finite_fp16(net, x):
    with torch.no_grad():
        y = net.half().to(memory_format=torch.channels_last)(
            x.half().contiguous(memory_format=torch.channels_last))
    net.float()
    return bool(torch.isfinite(y).all())


def export(net, path):
    x = torch.randn(1, 3, 224, 224)
    kw = dict(opset_version=17, do_constant_folding=True, input_names=["input"],
              output_names=["output"],
              dynamic_axes={"input": {0: "batch_size"}, "output": {0: "batch_size"}})
    try:
        torch.onnx.export(net, x, path, dynamo=False, **kw)
        return "torchscript"
    except TypeError:
        torch.onnx.export(net, x, path, **kw)
        return "default"


def time_graph(net, x):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(s):
        for _ in range(5):
            net(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        net(x)
    for _ in range(50):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(31):
        a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(20):
            g.replay()
        e.record()
        e.synchronize()
        times.append(a.elapsed_time(e) / 20)
    return float(np.median(times))


def main():
    out, batches, names = sys.argv[1], [int(b) for b in sys.argv[2].split(",")], sys.argv[3:]
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    for name in names:
        t0 = time.time()
        rec = {"model": name, "torch": torch.__version__}
        net = None
        try:
            net = build(name).eval().to(dev)
            rec["bn_calibrated"] = calibrate(net, dev)
            probe = torch.randn(8, 3, 224, 224, device=dev)
            scaled = 0
            while not finite_fp16(net, probe) and scaled < 8:
                with torch.no_grad():
                    for m in net.modules():
                        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                            m.weight.mul_(0.5)
                scaled += 1
            rec["weights_halved"] = scaled
            rec["torch_fp16_finite"] = finite_fp16(net, probe)
            rec["torch_fp16_rel_l2"] = fp16_error(net, probe)
            rec["exporter"] = export(net.float().cpu(), f"{out}/{name}.onnx")
            torch.save(net.state_dict(), f"{out}/{name}.pt")
            net = net.to(dev).half().to(memory_format=torch.channels_last)
            rec["batches"] = []
            for b in batches:
                x = torch.randn(b, 3, 224, 224, device=dev).half().contiguous(
                    memory_format=torch.channels_last)
                rec["batches"].append({"batch": b, "torch_graph_ms": time_graph(net, x)})
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the zoo goes on
            rec["torch_error"] = f"{type(e).__name__}: {e}"[:500]
        rec["seconds"] = time.time() - t0
        json.dump(rec, open(f"{out}/{name}.torch.json", "w"), indent=1)
        print(name, json.dumps({k: v for k, v in rec.items() if k != "torch"}), flush=True)
        del net
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
