"""The load harness (bench/load.py) against the PyTriton peer, in the peers' environment (Triton's client
needs protobuf<7): `python -m bench.peers.triton_load ADDRESS REQUESTS.npz ...` prints the figures as one
JSON line. REQUESTS.npz holds the requests as the server's inputs, each array's first axis the request.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import tritonclient.grpc as triton

from bench.load import drive, pin_to

MODEL_NAME = "ranker"  # bench/peers/triton_server.py
OUTPUTS = ("ranked", "score", "probabilities")
DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}


class _Client:
    def __init__(self, address: str, requests: dict[str, np.ndarray]):
        self.address, self.requests = address, requests
        self.last_scores: np.ndarray | None = None

    def __enter__(self):
        self.client = triton.InferenceServerClient(self.address)
        count = len(next(iter(self.requests.values())))
        self.prepared = []
        for r in range(count):  # serialised once per client, as a client holding its requests would
            inputs = []
            for name, values in self.requests.items():
                item = np.ascontiguousarray(values[r:r + 1])
                inputs.append(triton.InferInput(name, list(item.shape), DTYPES[item.dtype]))
                inputs[-1].set_data_from_numpy(item)
            self.prepared.append(inputs)
        self.outputs = [triton.InferRequestedOutput(name) for name in OUTPUTS]
        return self.call

    def call(self, i: int) -> None:
        answer = self.client.infer(MODEL_NAME, self.prepared[i % len(self.prepared)], outputs=self.outputs,
                                   client_timeout=30)
        self.last_scores = answer.as_numpy("score")[0]

    def __exit__(self, *exc) -> None:
        self.client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("requests")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--per-client", type=int, required=True)
    parser.add_argument("--cores", type=int, nargs="*", default=None)
    parser.add_argument("--first-answer", action="store_true", help="print the first request's scores instead")
    args = parser.parse_args()
    pin_to(args.cores)
    with np.load(args.requests) as data:
        requests = {name: data[name] for name in data.files}
    candidates = requests["ids"].shape[1]
    if args.first_answer:  # for the check that the peer answers as the ranker does
        client = _Client(args.address, requests)
        with client as call:
            call(0)
        print(json.dumps({"score": client.last_scores.tolist()}))
        return
    figures = drive(lambda: _Client(args.address, requests), args.clients, candidates, args.seconds, args.per_client)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
