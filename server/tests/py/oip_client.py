"""Triton's own HTTP client (tritonclient[http]) against our Open Inference Protocol endpoint,
then malformed requests sent by hand.

usage: oip_client.py HOST:PORT MODEL IMAGE...

Prints one JSON object: the server and model metadata as tritonclient reads them; per image the
top class through the classification extension (`class_count=1`, "prob:index") and the arg-max
of the FP32 output, one request each; the same for all images in one request of shape [N, 1];
and, per malformed request, the HTTP status and the error message.
"""
import json
import struct
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.http as httpclient

url, model, images = sys.argv[1], sys.argv[2], sys.argv[3:]
client = httpclient.InferenceServerClient(url=url)
out = {
    "live": client.is_server_live(),
    "ready": client.is_server_ready(),
    "model_ready": client.is_model_ready(model),
    "server": client.get_server_metadata(),
    "model": client.get_model_metadata(model),
    "config": client.get_model_config(model),
}


def request(batch):
    x = httpclient.InferInput("INPUT", [len(batch), 1], "BYTES")
    x.set_data_from_numpy(np.array(batch, dtype=np.object_).reshape(len(batch), 1))
    return x


def classify(batch):
    """Top class and logits' arg-max per image, from one request."""
    r = client.infer(model, [request(batch)], outputs=[
        httpclient.InferRequestedOutput("OUTPUT", class_count=1)])
    top = r.as_numpy("OUTPUT").reshape(len(batch), -1)[:, 0]
    r = client.infer(model, [request(batch)], outputs=[httpclient.InferRequestedOutput("OUTPUT")])
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
print(json.dumps(out))
