"""The exported model served by PyTriton, driven from the project's environment: the requests written
as the server's inputs, the server (bench/peers/triton_server.py) started from the peers' own
environment (`make setup-peers`, made here when missing) on the cores given, and the load harness run
there too (bench/peers/triton_load.py: Triton's client needs protobuf<7)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from bench.load import free_port
from export.requests import RequestSchema

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


def ensure_environment() -> None:
    """`make setup-peers` when the peers' environment is missing."""
    if not PEERS_PYTHON.exists():
        print("[bench] make setup-peers (PyTriton's environment, .venv-peers)")
        subprocess.run(["make", "--no-print-directory", "setup-peers"], cwd=ROOT, check=True, capture_output=True)


def write_requests(path: Path, requests: list[dict], schema: RequestSchema) -> None:
    """The requests as the server's inputs: each array's first axis the request; every sequence padded
    to the model's length, with its length beside it (Triton batches equal shapes)."""
    fields, p = schema.sequence_fields, schema.n_id_fields

    def sequences(parts: list[dict], owner: str) -> tuple[np.ndarray, np.ndarray]:
        gsus = schema.fields_of(owner, "sequences")
        padded = np.zeros((len(parts), len(gsus), schema.seq_len, len(fields)), dtype=np.int64)
        lengths = np.zeros((len(parts), len(gsus)), dtype=np.int64)
        for i, part in enumerate(parts):
            for g, name in enumerate(gsus):
                elements = np.array([part["sequences"][name][f] for f in fields], dtype=np.int64).T
                lengths[i, g] = len(elements)
                padded[i, g, :len(elements)] = elements.reshape(-1, len(fields))
        return padded, lengths

    def named(parts: list[dict], owner: str, section: str, dtype) -> np.ndarray:
        return np.array([[part[section][f] for f in schema.fields_of(owner, section)] for part in parts], dtype=dtype)

    arrays: dict[str, list] = {}
    for request in requests:
        user_seq, user_lengths = sequences([request["user"]], "user")
        seq, lengths = sequences(request["candidates"], "candidate")
        one = {"user_ids": named([request["user"]], "user", "ids", np.int64)[0],
               "user_dense": named([request["user"]], "user", "dense", np.float32)[0],
               "user_seq_ids": user_seq[0, ..., :p], "user_seq_side": user_seq[0, ..., p:],
               "user_seq_lengths": user_lengths[0],
               "ids": named(request["candidates"], "candidate", "ids", np.int64),
               "dense": named(request["candidates"], "candidate", "dense", np.float32),
               "seq_ids": seq[..., :p], "seq_side": seq[..., p:], "seq_lengths": lengths}
        for name, value in one.items():
            arrays.setdefault(name, []).append(value)
    np.savez(path, **{name: np.stack(values) for name, values in arrays.items()})


class PyTritonRanker:
    """`with PyTritonRanker(...) as server: server.load(...)` — the PyTriton server on loopback, pinned
    to `cores`, stopped on exit."""

    def __init__(self, model_dir: Path, requests: list[dict], schema: RequestSchema, model_format: str, threads: int,
                 max_batch_requests: int, cores: list[int] | None, work_dir: Path, start_timeout_s: float = 180):
        ensure_environment()
        self.requests = work_dir / "triton_requests.npz"
        write_requests(self.requests, requests, schema)
        self.grpc_port = free_port()
        libdir = subprocess.run([str(PEERS_PYTHON), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                                capture_output=True, text=True, check=True).stdout.strip()
        # Triton's Python-backend stub links libpython by name: the interpreter's own, not the system's.
        self.env = {**os.environ, "LD_LIBRARY_PATH": libdir, "PYTHONPATH": str(ROOT)}
        prefix = ["taskset", "-c", ",".join(map(str, cores))] if cores else []
        self.log_path = work_dir / "pytriton.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*prefix, str(PEERS_PYTHON), "-m", "bench.peers.triton_server", str(model_dir),
             "--format", model_format, "--candidates", str(len(requests[0]["candidates"])),
             "--max-batch-requests", str(max_batch_requests), "--threads", str(threads),
             "--grpc-port", str(self.grpc_port), "--http-port", str(free_port()), "--metrics-port", str(free_port())],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + start_timeout_s
        while "serving\n" not in self.log_path.read_text():  # the server's own line, among Triton's
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"PyTriton did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def _run(self, *flags: str) -> dict:
        result = subprocess.run([str(PEERS_PYTHON), "-m", "bench.peers.triton_load", f"127.0.0.1:{self.grpc_port}",
                                 str(self.requests), *flags], env=self.env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise SystemExit(f"the PyTriton load run failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def first_scores(self) -> list[float]:
        """The scores of the first request, in candidate order."""
        return self._run("--clients", "1", "--seconds", "1", "--per-client", "1", "--first-answer")["score"]

    def load(self, clients: int, seconds: float, per_client: int, cores: list[int] | None) -> dict:
        """The load harness's figures (bench/load.py), its clients on `cores`."""
        return self._run("--clients", str(clients), "--seconds", str(seconds), "--per-client", str(per_client),
                         *(["--cores", *map(str, cores)] if cores else []))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def __enter__(self) -> "PyTritonRanker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
