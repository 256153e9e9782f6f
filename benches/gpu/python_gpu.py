"""The Python package's cuda build on the device: a GPU result taken by torch through
DLPack, checked against the CPU path and for zero copy and lifetime.

usage: python_gpu.py OUTDIR   (run from the repo root, torchpipe_rs installed from the cuda wheel)

One pipe on configs/resnet50_gpu.toml's [gpu_decoder] node alone (DecodeTensor, ResizeTensor,
cvtColorTensor: its result stays on the GPU) with result_type="torch", one on the same steps on
the CPU (DecodeMat, ResizeMat, cvtColorMat, Mat2Tensor). For each photo: the GPU result must be a
CUDA tensor of the CPU result's shape whose pixels are within what preprocess-check reports
between nvJPEG and libjpeg-turbo (mean |diff| ≤ 2, on 0..255 values), and the tensor's address
must be the DeviceArray's (no copy). Then the first results are held while 200 more calls run,
and must be unchanged (the engine must not reuse memory a tensor still points at).
Writes OUTDIR/python_gpu.json.
"""
import json
import pathlib
import sys

import torch

import torchpipe_rs

STEPS = "SyncTensor[Sequential[{}]]"


def toml(tmp, name, backend):
    p = tmp / f"{name}.toml"
    p.write_text(f'[pre]\nbackend = "{backend}"\nresize_h = 224\nresize_w = 224\n'
                 'color = "rgb"\ninstance_num = 2\nmax = 4\n')
    return str(p)


def main():
    out = pathlib.Path(sys.argv[1])
    tmp = pathlib.Path("/tmp/python_gpu")
    tmp.mkdir(exist_ok=True)
    photos = {p.name: p.read_bytes() for p in sorted(pathlib.Path("benches/imgs").iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg")}
    gpu = torchpipe_rs.pipe(toml(tmp, "gpu", STEPS.format(
        "DecodeTensor,ResizeTensor,cvtColorTensor")), result_type="torch")
    cpu = torchpipe_rs.pipe(toml(tmp, "cpu", STEPS.format(
        "DecodeMat,ResizeMat,cvtColorMat,Mat2Tensor")), result_type="torch")
    raw = torchpipe_rs.pipe(toml(tmp, "raw", STEPS.format(
        "DecodeTensor,ResizeTensor,cvtColorTensor")))
    rows, ok = [], True
    held = []
    for name, data in photos.items():
        g = {torchpipe_rs.TASK_DATA_KEY: data}
        c = {torchpipe_rs.TASK_DATA_KEY: data}
        r = {torchpipe_rs.TASK_DATA_KEY: data}
        gpu(g)
        cpu(c)
        raw(r)
        row = {"file": name}
        if torchpipe_rs.TASK_RESULT_KEY not in g or torchpipe_rs.TASK_RESULT_KEY not in c:
            row["error"] = g.get(torchpipe_rs.TASK_ERROR_KEY) or c.get(torchpipe_rs.TASK_ERROR_KEY)
            row["ok"] = False
        else:
            tg, tc = g[torchpipe_rs.TASK_RESULT_KEY], c[torchpipe_rs.TASK_RESULT_KEY]
            arr = r.get(torchpipe_rs.TASK_RESULT_KEY)
            d = (tg.float().cpu() - tc.float()).abs()
            row.update({
                "type": type(tg).__name__, "device": str(tg.device), "dtype": str(tg.dtype),
                "shape": list(tg.shape), "cpu_shape": list(tc.shape),
                "raw": repr(arr),
                "mean_abs_diff": float(d.mean()), "max_abs_diff": float(d.max()),
            })
            # Zero copy: a second tensor over the same DeviceArray has the same address.
            if isinstance(arr, torchpipe_rs.DeviceArray):
                a1, a2 = torch.from_dlpack(arr), torch.from_dlpack(arr)
                row["zero_copy"] = a1.data_ptr() == a2.data_ptr()
            row["ok"] = (tg.is_cuda and list(tg.shape) == list(tc.shape)
                         and row["mean_abs_diff"] <= 2.0 and row.get("zero_copy", False))
            held.append((name, tg, tg.clone()))
        ok &= row["ok"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    # Lifetime: memory a tensor still points at must not be reused by later calls.
    names = list(photos)
    for i in range(200):
        d = {torchpipe_rs.TASK_DATA_KEY: photos[names[i % len(names)]]}
        gpu(d)
    torch.cuda.synchronize()
    unchanged = all(torch.equal(t, copy) for _, t, copy in held)
    print("held results unchanged after 200 more calls:", unchanged, flush=True)
    ok &= unchanged
    doc = {"ok": bool(ok), "held_unchanged": unchanged, "rows": rows,
           "torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
    (out / "python_gpu.json").write_text(json.dumps(doc, indent=1))
    print("python_gpu:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
