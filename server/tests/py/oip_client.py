"""Triton's own clients (tritonclient[http] and tritonclient[grpc]) against our Open Inference
Protocol endpoints, then malformed requests.

usage: oip_client.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL IMAGE...

Prints one JSON object: the server and model metadata as the HTTP client reads them; per image
the top class through the classification extension (`class_count=1`, "prob:index") and the
arg-max of the FP32 output, one request each; the same for all images in one request of shape
[N, 1]; per malformed HTTP request (sent by hand), the status and the error message. Under
"grpc", the same through the gRPC client, and its malformed requests' status codes.
"""
import json
import struct
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, grpc_url, model, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
client = httpclient.InferenceServerClient(url=url)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "server": client.get_server_metadata(),
    "model": client.get_model_metadata(model),
    "config": client.get_model_config(model),
}


def request(batch, lib=httpclient):
    x = lib.InferInput("INPUT", [len(batch), 1], "BYTES")
    x.set_data_from_numpy(np.array(batch, dtype=np.object_).reshape(len(batch), 1))
    return x


def classify(batch, c=client, lib=httpclient):
    """Top class and logits' arg-max per image, from one request."""
    r = c.infer(model, [request(batch, lib)], outputs=[
        lib.InferRequestedOutput("OUTPUT", class_count=1)])
    top = r.as_numpy("OUTPUT").reshape(len(batch), -1)[:, 0]
    r = c.infer(model, [request(batch, lib)], outputs=[lib.InferRequestedOutput("OUTPUT")])
    logits = r.as_numpy("OUTPUT")
    rows = []
    for t, row in zip(top, logits):
        prob, index = t.decode().split(":")[:2]
        rows.append({"index": int(index), "prob": float(prob), "argmax": int(np.argmax(row)),
                     "classes": int(row.shape[0])})
    return rows


data = [open(p, "rb").read() for p in images]
out["one_by_one"] = [classify([d])[0] for d in data]
out["batch"] = classify(data)
out["stats"] = client.get_inference_statistics(model)


def post(path, body, headers=None):
    req = urllib.request.Request(f"http://{url}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return {"status": r.status, "error": None}
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return {"status": e.code, "error": json.loads(body)["error"]}
        except ValueError:
            return {"status": e.code, "error": body.decode(errors="replace")}


def binary(head, tensor):
    h = json.dumps(head).encode()
    return h + tensor, {"Inference-Header-Content-Length": str(len(h))}


one = struct.pack("<I", len(data[0])) + data[0]
infer = f"/v2/models/{model}/infer"
bad = {
    "bad_json": post(infer, b"{not json"),
    "wrong_datatype": post(infer, json.dumps({"inputs": [
        {"name": "INPUT", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode()),
    "wrong_shape": post(infer, *binary({"inputs": [
        {"name": "INPUT", "shape": [1, 1, 1], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(one)}}]}, one)),
    "size_past_body": post(infer, *binary({"inputs": [
        {"name": "INPUT", "shape": [1, 1], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(one) + 100}}]}, one)),
    "header_past_body": post(infer, b"{}", {"Inference-Header-Content-Length": "1000"}),
    "not_an_image": post(infer, json.dumps({"inputs": [
        {"name": "INPUT", "shape": [1, 1], "datatype": "BYTES", "data": [["hello"]]}]}).encode()),
    "unknown_output": post(infer, *binary({"inputs": [
        {"name": "INPUT", "shape": [1, 1], "datatype": "BYTES",
         "parameters": {"binary_data_size": len(one)}}],
        "outputs": [{"name": "PROBS"}]}, one)),
    "unknown_model": post("/v2/models/no_such_model/infer", b"{}"),
}
out["bad"] = bad
# After all of that, the server still answers.
out["after"] = classify([data[0]])[0]

g = grpcclient.InferenceServerClient(url=grpc_url)


def grpc_error(f):
    try:
        f()
        return {"status": "OK", "error": None}
    except InferenceServerException as e:
        return {"status": e.status(), "error": e.message()}


def fp32_input():
    x = grpcclient.InferInput("INPUT", [1, 3], "FP32")
    x.set_data_from_numpy(np.zeros((1, 3), np.float32))
    return x


def bytes_input(shape, values):
    x = grpcclient.InferInput("INPUT", shape, "BYTES")
    x.set_data_from_numpy(np.array(values, dtype=np.object_).reshape(shape))
    return x


out["grpc"] = {
    "live": g.is_server_live(),
    "ready": g.is_server_ready(),
    "model_ready": g.is_model_ready(model),
    "server": g.get_server_metadata(as_json=True),
    "model": g.get_model_metadata(model, as_json=True),
    "config": g.get_model_config(model, as_json=True),
    "one_by_one": [classify([d], g, grpcclient)[0] for d in data],
    "batch": classify(data, g, grpcclient),
    "stats": g.get_inference_statistics(model, as_json=True),
    "bad": {
        "wrong_datatype": grpc_error(lambda: g.infer(model, [fp32_input()])),
        "wrong_shape": grpc_error(lambda: g.infer(model, [bytes_input([1, 1, 1], [data[0]])])),
        "not_an_image": grpc_error(lambda: g.infer(model, [bytes_input([1, 1], [b"hello"])])),
        "unknown_output": grpc_error(lambda: g.infer(
            model, [bytes_input([1, 1], [data[0]])],
            outputs=[grpcclient.InferRequestedOutput("PROBS")])),
        "unknown_model": grpc_error(lambda: g.infer(
            "no_such_model", [bytes_input([1, 1], [data[0]])])),
    },
}
out["grpc"]["after"] = classify([data[0]], g, grpcclient)[0]
print(json.dumps(out))
