#!/usr/bin/env python3
"""Two stock Python Thrift clients (pip `thrift`, TSocket + TBufferedTransport + TBinaryProtocol)
on one server: one from stubs of the docs' IDL (thrift/serve.thrift) calling infer_batch, one
from stubs of thrift/detect.thrift calling infer_detect and infer_batch.

Usage: detect_client.py SERVE_STUBS DETECT_STUBS PORT IMAGE...
Prints one JSON object: per image, each call's answer or its TApplicationException's message.
"""
import json
import sys

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TSocket, TTransport


def connect(service, port):
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(120_000)
    transport = TTransport.TBufferedTransport(sock)
    transport.open()
    return service.Client(TBinaryProtocol.TBinaryProtocol(transport))


def answer(call):
    try:
        return call()
    except TApplicationException as e:
        return {"error": e.message}


def main():
    serve_stubs, detect_stubs, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, serve_stubs)
    from serve import InferenceService
    from serve.ttypes import InferenceParams

    old = connect(InferenceService, port)
    # detect.thrift's stubs bring their own copy of serve.thrift's: load it afresh.
    sys.path.insert(0, detect_stubs)
    for name in [m for m in sys.modules if m == "serve" or m.startswith("serve.")]:
        del sys.modules[name]
    import serve.InferenceService  # noqa: F401
    from detect import DetectionService

    new = connect(DetectionService, port)
    out = {"ping": new.ping() is None, "images": {}}
    for path in sys.argv[4:]:
        with open(path, "rb") as f:
            data = f.read()
        params = InferenceParams(uuid=path, data=data)

        def detect():
            return [
                {
                    "box": [d.x1, d.y1, d.x2, d.y2],
                    "score": d.score,
                    "class_id": d.class_id,
                    "label": d.label,
                    "crop_class_id": d.crop_class_id,
                    "crop_label": d.crop_label,
                    "crop_score": d.crop_score,
                }
                for d in new.infer_detect(params).detections
            ]

        def batch(client):
            r = client.infer_batch(params)
            return {"label": r.label, "score": r.score}

        out["images"][path] = {
            "detect": answer(detect),
            "batch_old": answer(lambda: batch(old)),
            "batch_new": answer(lambda: batch(new)),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
