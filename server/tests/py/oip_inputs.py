"""tritonclient (HTTP and gRPC) sending decoded images (UINT8) and model inputs (FP32) to the
models whose entry nodes take them, and a photo's bytes (BYTES) to one that decodes.

usage: oip_inputs.py HTTP_HOST:PORT GRPC_HOST:PORT DIR COUNT

DIR holds pixels-I.npy and tensor-I.npy for I < COUNT (oip_inputs_ref.py) and image-I (the
photo's file). Prints one JSON object: each model's input metadata per protocol; per protocol
and model, the FP32 output of every photo (one request each, then all in one request where
the inputs share a shape); and the errors of a UINT8 tensor sent to the model that decodes and
of BYTES sent to the one that takes pixels.
"""
import json
import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, grpc_url, folder, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pixels = [np.load(os.path.join(folder, f"pixels-{i}.npy")) for i in range(count)]
tensors = [np.load(os.path.join(folder, f"tensor-{i}.npy")) for i in range(count)]
photos = [open(os.path.join(folder, f"image-{i}"), "rb").read() for i in range(count)]


def tensor_input(lib, array, datatype):
    x = lib.InferInput("INPUT", list(array.shape), datatype)
    x.set_data_from_numpy(array)
    return x


def infer(c, lib, model, array, datatype):
    r = c.infer(model, [tensor_input(lib, array, datatype)],
                outputs=[lib.InferRequestedOutput("OUTPUT")])
    return r.as_numpy("OUTPUT").tolist()


def error(f):
    try:
        f()
        return None
    except InferenceServerException as e:
        return e.message()


out = {}
for proto, lib, c in (("http", httpclient, httpclient.InferenceServerClient(url=url)),
                      ("grpc", grpcclient, grpcclient.InferenceServerClient(url=grpc_url))):
    meta = {}
    for model in ("jpeg", "pixels", "tensor"):
        m = (c.get_model_metadata(model) if proto == "http"
             else c.get_model_metadata(model, as_json=True))
        meta[model] = {"datatype": m["inputs"][0]["datatype"],
                       "shape": [int(d) for d in m["inputs"][0]["shape"]]}
    as_bytes = lambda d: np.array([d], dtype=np.object_)
    out[proto] = {
        "meta": meta,
        "jpeg": [infer(c, lib, "jpeg", as_bytes(d), "BYTES")[0] for d in photos],
        "pixels": [infer(c, lib, "pixels", p[None], "UINT8")[0] for p in pixels],
        "tensor": [infer(c, lib, "tensor", t[None], "FP32")[0] for t in tensors],
        "tensor_batch": infer(c, lib, "tensor", np.stack(tensors), "FP32"),
        "uint8_to_jpeg": error(lambda: infer(c, lib, "jpeg", pixels[0][None], "UINT8")),
        "bytes_to_pixels": error(lambda: infer(c, lib, "pixels", as_bytes(photos[0]), "BYTES")),
        "wrong_tensor_shape": error(
            lambda: infer(c, lib, "tensor", tensors[0][None, :, :100], "FP32")),
    }
print(json.dumps(out))
