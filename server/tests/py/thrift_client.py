#!/usr/bin/env python3
"""The docs' kind of client: pip `thrift`, TSocket + TBufferedTransport + TBinaryProtocol, stubs
from `thrift --gen py thrift/serve.thrift` (the directory is the first argument).

Usage: thrift_client.py STUBS_DIR PORT IMAGE...
Prints one JSON object: ping, per-image label/score, and the bad-input cases.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

from serve import InferenceService  # noqa: E402
from serve.ttypes import InferenceParams  # noqa: E402
from thrift.protocol import TBinaryProtocol  # noqa: E402
from thrift.Thrift import TApplicationException  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402


def main():
    port = int(sys.argv[2])
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(120_000)
    transport = TTransport.TBufferedTransport(sock)
    client = InferenceService.Client(TBinaryProtocol.TBinaryProtocol(transport))
    transport.open()
    out = {"ping": client.ping() is None, "images": {}, "bad": {}}
    for path in sys.argv[3:]:
        with open(path, "rb") as f:
            r = client.infer_batch(InferenceParams(uuid=path, data=f.read()))
        out["images"][path] = {"label": r.label, "score": r.score}
    with open(sys.argv[3], "rb") as f:
        good = f.read()
    jpeg_path = next(p for p in sys.argv[3:] if p.endswith(".jpg"))
    with open(jpeg_path, "rb") as f:
        truncated = f.read()
    truncated = truncated[: len(truncated) // 2]
    for name, data in [("corrupt", truncated), ("empty", b""), ("text", b"hello")]:
        try:
            client.infer_batch(InferenceParams(uuid=name, data=data))
            out["bad"][name] = {"error": None}
        except TApplicationException as e:
            # The same connection must still answer.
            again = client.infer_batch(InferenceParams(uuid=name + "-again", data=good))
            out["bad"][name] = {"error": e.message, "type": e.type, "after": again.label}
    transport.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
