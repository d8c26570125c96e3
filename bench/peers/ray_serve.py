"""The exported model served by Ray Serve: one replica behind Ray's gRPC proxy, speaking the same
ranker.proto as the C++ service, with Ray Serve's dynamic batching (`@serve.batch`) merging
concurrent requests into one forward of the request scorer.

Ray's processes (a local cluster of one node, on loopback) start on the cores given, so that the
server gets the same cores as the C++ ranker it is compared with.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import ray
import torch
from ray import serve

from serving.proto import ranker_pb2, ranker_pb2_grpc
from export.request_scorer import merged
from export.export_dir import ExportDir
from export.requests import RequestSchema
from bench.load import free_port
from bench.peers.inputs import request_inputs

APPLICATION = "ranker"
SERVICER = "serving.proto.ranker_pb2_grpc.add_RankerServicer_to_server"


def load_model(model_dir: Path, model_format: str):
    """The export's model file of `model_format`, loaded as Python runs it."""
    meta = ExportDir(model_dir).meta()
    path = model_dir / meta["files"][model_format]
    return torch.jit.load(str(path)) if model_format == "torchscript" else torch._inductor.aoti_load_package(str(path))


class Ranker:
    """The deployment: validate, merge what Ray Serve batched, score, answer each request."""

    def __init__(self, model_dir: str, model_format: str, threads: int, max_batch_requests: int):
        torch.set_num_threads(threads)
        meta = ExportDir(model_dir).meta()
        self.schema, self.tasks = RequestSchema(meta), list(meta["tasks"])
        self.model = load_model(Path(model_dir), model_format)
        self.score.set_max_batch_size(max_batch_requests)

    async def Rank(self, request: ranker_pb2.RankRequest) -> ranker_pb2.RankResponse:  # noqa: N802 (the RPC's name)
        return await self.score(request)

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.0)
    async def score(self, requests: list[ranker_pb2.RankRequest]) -> list[ranker_pb2.RankResponse]:
        inputs = [request_inputs(r, self.schema) for r in requests]
        with torch.inference_mode():
            probabilities, score = self.model(*merged(inputs))
        answers, start = [], 0
        for request, part in zip(requests, inputs):
            n = part.candidates
            p, s = probabilities[start:start + n].tolist(), score[start:start + n]
            start += n
            answer = ranker_pb2.RankResponse(model_generation=1)
            if request.HasField("request_id"):
                answer.request_id = request.request_id
            for i in torch.argsort(-s, stable=True).tolist():
                ranked = answer.ranked.add(candidate=i, score=float(s[i]))
                ranked.probabilities.update(zip(self.tasks, p[i]))
            answers.append(answer)
        return answers


class RayServeRanker:
    """`with RayServeRanker(model_dir, ...) as server: drive(server.clients(requests), ...)` — a Ray head of its own on
    loopback, pinned to `cores`, with the deployment running; everything stopped on exit."""

    def __init__(self, model_dir: Path, model_format: str, threads: int, max_batch_requests: int,
                 cores: list[int] | None):
        self.grpc_port = free_port()
        try:
            # Ray's processes inherit this process's cores when they start: the server's, for that moment.
            clients_cores = os.sched_getaffinity(0)
            if cores:
                os.sched_setaffinity(0, set(cores))
            try:
                ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
                         log_to_driver=False, configure_logging=False)
            finally:
                os.sched_setaffinity(0, clients_cores)
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()},
                        grpc_options={"port": self.grpc_port, "grpc_servicer_functions": [SERVICER]})
            deployment = serve.deployment(Ranker, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
            serve.run(deployment.bind(str(model_dir), model_format, threads, max_batch_requests), name=APPLICATION,
                      route_prefix=f"/{APPLICATION}")
            self._wait_until_serving()
        except BaseException:
            self.close()
            raise

    def _wait_until_serving(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        while time.monotonic() < deadline:  # the proxy routes once the application is up
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
                    ranker_pb2_grpc.RankerStub(channel).Rank(ranker_pb2.RankRequest(), timeout=10,
                                                             metadata=(("application", APPLICATION),))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE and e.code() != grpc.StatusCode.NOT_FOUND:
                    return  # answered (an empty request is refused): the deployment is serving
            time.sleep(0.2)
        raise TimeoutError(f"Ray Serve did not start serving within {timeout_s:.0f} s")

    def rank(self, request: ranker_pb2.RankRequest) -> ranker_pb2.RankResponse:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            return ranker_pb2_grpc.RankerStub(channel).Rank(request, timeout=30, metadata=(("application", APPLICATION),))

    def clients(self, requests: list[ranker_pb2.RankRequest]):
        """The load harness's client factory (bench/load.py): each client its own channel, sending
        `requests` in turn."""
        return lambda: _Client(f"127.0.0.1:{self.grpc_port}", requests)

    def close(self) -> None:
        try:
            serve.shutdown()
        except Exception:  # nothing to shut down if start-up failed early
            pass
        ray.shutdown()

    def __enter__(self) -> "RayServeRanker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Client:
    def __init__(self, address: str, requests: list[ranker_pb2.RankRequest]):
        self.address, self.requests = address, requests

    def __enter__(self):
        self.channel = grpc.insecure_channel(self.address)
        stub = ranker_pb2_grpc.RankerStub(self.channel)
        metadata = (("application", APPLICATION),)

        def call(i: int) -> int:
            return stub.Rank(self.requests[i % len(self.requests)], timeout=30, metadata=metadata).model_generation

        return call

    def __exit__(self, *exc) -> None:
        self.channel.close()
