"""The exported model served by PyTriton: Triton's server and dynamic batcher around a Python callable
that runs the request scorer. Run in the peers' own environment (`make setup-peers`: PyTriton needs
numpy<2 and protobuf<7), so it imports nothing of the project but the model files:

    PYTHONPATH=. .venv-peers/bin/python -m bench.peers.triton_server MODEL_DIR --candidates 200 --grpc-port P ...

Triton batches requests along a first axis that every input shares, so a request travels as one
batch item: the user's inputs as they are, the candidates' with a leading axis of one and every
sequence padded to the model's length (the callable sends the model the positions the user
sequences fill and the candidates' real elements, as the ranker does). It checks ids and buckets against model.json, scores, and answers with
the candidates ranked. It prints "serving" once Triton is up, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODEL_NAME = "ranker"


def input_specs(meta: dict, candidates: int) -> list[Tensor]:
    """The request scorer's inputs as Triton tensors of one request (the batch axis left out)."""
    user = meta["request_layout"]["user"]
    own = lambda section, names: [n for n in names if (n in user[section])]  # noqa: E731
    other = lambda section, names: [n for n in names if n not in user[section]]  # noqa: E731
    ids = [f["name"] for f in meta["id_features"]]
    gsus, length = meta["gsus"]["names"], meta["gsus"]["length"]
    p, s = len(meta["gsus"]["id_fields"]), len(meta["gsus"]["side_fields"])
    g_u, g_c = len(own("sequences", gsus)), len(other("sequences", gsus))
    shapes = {"user_ids": (len(own("ids", ids)),), "user_dense": (len(own("dense", meta["dense_features"])),),
              "user_seq_ids": (g_u, length, p), "user_seq_side": (g_u, length, s), "user_seq_lengths": (g_u,),
              "ids": (candidates, len(other("ids", ids))), "dense": (candidates, len(other("dense", meta["dense_features"]))),
              "seq_ids": (candidates, g_c, length, p), "seq_side": (candidates, g_c, length, s),
              "seq_lengths": (candidates, g_c)}
    return [Tensor(name=name, dtype=np.float32 if "dense" in name else np.int64, shape=shape)
            for name, shape in shapes.items()]


def bounds(meta: dict) -> dict[str, np.ndarray]:
    """Valid ids are [0, rows) per column: the user's id columns, the candidates', the sequence fields."""
    user = meta["request_layout"]["user"]["ids"]
    rows = {f["name"]: f["rows"] for f in meta["id_features"]}
    fields = [*meta["gsus"]["id_fields"], *meta["gsus"]["side_fields"]]
    p = len(meta["gsus"]["id_fields"])
    return {"user_ids": np.array([r for n, r in rows.items() if n in user]),
            "ids": np.array([r for n, r in rows.items() if n not in user]),
            "seq_ids": np.array([meta["gsus"]["rows"][f] for f in fields[:p]]),
            "seq_side": np.array([meta["gsus"]["rows"][f] for f in fields[p:]])}


def make_infer(model, meta: dict):
    limits = bounds(meta)
    seq_len = meta["gsus"]["length"]

    @batch
    def infer(**x: np.ndarray) -> dict[str, np.ndarray]:
        k, n = x["ids"].shape[0], x["ids"].shape[1]
        for name, rows in limits.items():  # the user's ids as each candidate's, the sequences' per field
            for source in ([name, f"user_{name}"] if name.startswith("seq") else [name]):
                if ((x[source] < 0) | (x[source] >= rows)).any():
                    raise ValueError(f"{source}: a value out of range")
        if (x["seq_lengths"] > seq_len).any() or (x["user_seq_lengths"] > seq_len).any():
            raise ValueError(f"a sequence longer than the model's {seq_len}")
        used = max(1, int(x["user_seq_lengths"].max(initial=0)))
        real = np.arange(seq_len).reshape(1, 1, 1, seq_len) < x["seq_lengths"][..., None]  # [k, n, G_c, L]
        owner = np.stack(np.meshgrid(np.arange(k * n), np.arange(real.shape[2]), indexing="ij"), -1)  # [k*n, G_c, 2]
        inputs = [x["user_ids"], x["user_dense"], x["user_seq_ids"][:, :, :used], x["user_seq_side"][:, :, :used],
                  x["user_seq_lengths"], np.repeat(np.arange(k), n),
                  x["ids"].reshape(k * n, -1), x["dense"].reshape(k * n, -1),
                  x["seq_ids"][real], x["seq_side"][real],  # the candidates' real elements, jagged
                  np.broadcast_to(owner[:, :, None], (k * n, real.shape[2], seq_len, 2))[real.reshape(k * n, -1, seq_len)]]
        with torch.inference_mode():
            probabilities, score = model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        score = score.numpy().reshape(k, n)
        return {"ranked": np.argsort(-score, axis=1, kind="stable").astype(np.int64), "score": score,
                "probabilities": probabilities.numpy().reshape(k, n, -1)}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--format", default="aoti", choices=["torchscript", "aoti"])
    parser.add_argument("--candidates", type=int, required=True, help="candidates per request (one shape per model)")
    parser.add_argument("--max-batch-requests", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = json.loads((args.model_dir / "model.json").read_text())
    path = args.model_dir / meta["files"][args.format]
    model = torch.jit.load(str(path)) if args.format == "torchscript" else torch._inductor.aoti_load_package(str(path))
    tasks = len(meta["tasks"])
    outputs = [Tensor(name="ranked", dtype=np.int64, shape=(args.candidates,)),
               Tensor(name="score", dtype=np.float32, shape=(args.candidates,)),
               Tensor(name="probabilities", dtype=np.float32, shape=(args.candidates, tasks))]
    config = TritonConfig(http_address="127.0.0.1", grpc_address="127.0.0.1", http_port=args.http_port,
                          grpc_port=args.grpc_port, metrics_port=args.metrics_port, log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name=MODEL_NAME, infer_func=make_infer(model, meta),
                    inputs=input_specs(meta, args.candidates), outputs=outputs,
                    config=ModelConfig(max_batch_size=args.max_batch_requests,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=0)))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("serving", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
