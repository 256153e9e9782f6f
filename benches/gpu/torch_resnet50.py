"""PyTorch's best on the same weights: torchvision's ResNet50 loaded from our ONNX's
initializers, fp16, channels_last, one CUDA graph per batch size, timed like model-check
(event pairs around `reps` replays, median of `rounds`).

usage: torch_resnet50.py MODEL.onnx REFERENCE.bin OUT.json [batches...]
REFERENCE.bin/.json come from `model-check --dump-reference`: raw inputs and the CPU engine's
logits, used to prove the weights were mapped right (fp32, TF32 off) before timing.
"""
import json
import sys

import numpy as np
import onnx
import torch
import torchvision
from onnx import numpy_helper


def load(model_path):
    m = onnx.load(model_path)
    inits = [numpy_helper.to_array(t) for t in m.graph.initializer]
    net = torchvision.models.resnet50(weights=None)
    keys = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    if len(keys) != len(inits):
        raise SystemExit(f"{len(inits)} initializers for {len(keys)} torchvision tensors")
    sd = {}
    for k, v in zip(keys, inits):
        want = tuple(net.state_dict()[k].shape)
        if tuple(v.shape) != want:
            raise SystemExit(f"{k}: ONNX shape {v.shape}, torchvision {want}")
        sd[k] = torch.from_numpy(v.copy())
    net.load_state_dict(sd, strict=False)
    eps = {a.f for n in m.graph.node if n.op_type == "BatchNormalization"
           for a in n.attribute if a.name == "epsilon"}
    if any(abs(e - 1e-5) > 1e-9 for e in eps):
        raise SystemExit(f"BatchNormalization epsilons {eps}; torchvision uses 1e-5")
    return net.eval()


def main():
    model_path, ref_path, out_path = sys.argv[1:4]
    batches = [int(b) for b in sys.argv[4:]] or [1, 4, 8, 16, 32]
    net = load(model_path)
    meta = json.load(open(ref_path.rsplit(".", 1)[0] + ".json"))
    raw = np.fromfile(ref_path, dtype="<f4")
    k, shape, outs = meta["images"], meta["input_shape"], meta["outputs"]
    n_in = k * int(np.prod(shape))
    x = torch.from_numpy(raw[:n_in].reshape(k, *shape).copy())
    ref = raw[n_in:].reshape(k, outs)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    xn = (x - mean) / std
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    with torch.no_grad():
        got = net.to(dev)(xn.to(dev)).float().cpu().numpy()
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    print(f"torch fp32 vs our CPU engine on {k} images: relative L2 {rel:.2e}")
    if rel > 1e-3:
        raise SystemExit("weights mapped wrongly: torch and the CPU engine disagree")

    torch.backends.cudnn.benchmark = True
    net = net.half().to(memory_format=torch.channels_last)
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "weights_rel_l2_fp32": rel, "batches": []}
    for b in batches:
        idx = [i % k for i in range(b)]
        static = xn[idx].to(dev).half().contiguous(memory_format=torch.channels_last)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(5):
                net(static)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(g):
            out = net(static)
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
        ms = float(np.median(times))
        top = out.float().argmax(1).cpu().numpy()
        agree = int((top == ref[idx].argmax(1)).sum())
        print(f"torch fp16 channels_last CUDA graph, batch {b:>3}: {ms:.3f} ms "
              f"(arg-max agrees with the CPU engine on {agree}/{b})")
        results["batches"].append({"batch": b, "torch_graph_ms": ms, "argmax_agree": agree})
    json.dump(results, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
