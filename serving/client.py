"""The Python client of the ranker service (serving/proto/ranker.proto, generated with
grpcio-tools into serving/proto/): what the tests, the load generator and the docs use.

Requests and answers are the JSON tool's dicts (docs/serving.md), converted to and from the proto:

    with RankerClient("127.0.0.1:50051") as ranker:
        ranker.wait_until_serving()
        answer = ranker.rank({"request_id": "r-1", "user": {...}, "candidates": [{...}, ...]})
        answer = ranker.rank({"request_id": "r-2", "ids": {"user_id": 7, "live_ids": [3, 4]}})  # ids-only
        answer["ranked"][0]  # {"candidate": 3, "score": 1.42, "probabilities": {"ctr": 0.17, ...}}

A request the server refuses raises `RankError` with its gRPC status code and the server's message
(for INVALID_ARGUMENT, the JSON tool's error text for the same request).
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.proto import ranker_pb2, ranker_pb2_grpc

SERVICE_NAME = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"].full_name
_PART_SECTIONS = ("ids", "dense", "sequences")


class RankError(RuntimeError):
    """The server answered a Rank call with an error status."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def _fill_part(part: ranker_pb2.Part, source: dict[str, Any], where: str) -> None:
    unknown = sorted(set(source) - set(_PART_SECTIONS))
    if unknown:
        raise ValueError(f"{where}: the proto has no field {unknown[0]!r} (only {list(_PART_SECTIONS)})")
    for name, value in source.get("ids", {}).items():
        part.ids[name] = value
    for name, value in source.get("dense", {}).items():
        part.dense[name] = value
    for gsu, fields in source.get("sequences", {}).items():
        sequence = part.sequences[gsu]  # present even when it has no fields, as {} is in JSON
        for field, values in fields.items():
            sequence.fields[field].values.extend(values)


def request_to_proto(request: dict[str, Any]) -> ranker_pb2.RankRequest:
    """A JSON-tool request as the proto message. Raises ValueError / TypeError for what the proto
    cannot carry (a field it does not have, a non-integer id): such a request cannot be sent at all."""
    unknown = sorted(set(request) - {"request_id", "user", "candidates", "ids"})
    if unknown:
        raise ValueError(f"the proto has no request field {unknown[0]!r}")
    message = ranker_pb2.RankRequest()
    if request.get("request_id") is not None:
        message.request_id = request["request_id"]
    if "user" in request:
        _fill_part(message.user, request["user"], "user")
    for i, candidate in enumerate(request.get("candidates", [])):
        _fill_part(message.candidates.add(), candidate, f"candidates[{i}]")
    if "ids" in request:
        ids = request["ids"]
        unknown = sorted(set(ids) - {"user_id", "request_ts", "live_ids"})
        if unknown:
            raise ValueError(f"the proto has no ids field {unknown[0]!r}")
        message.ids.user_id = ids["user_id"]
        if ids.get("request_ts") is not None:
            message.ids.request_ts = ids["request_ts"]
        message.ids.live_ids.extend(ids["live_ids"])
    return message


def response_to_dict(response: ranker_pb2.RankResponse) -> dict[str, Any]:
    """The answer as the JSON tool writes it. Scores and probabilities are float32 values, exactly."""
    return {"request_id": response.request_id if response.HasField("request_id") else None,
            "model_generation": response.model_generation, "model_push": response.model_push,
            "model_export": response.model_export,
            "ranked": [{"candidate": r.candidate, "score": r.score, "probabilities": dict(r.probabilities)}
                       for r in response.ranked]}


class RankerClient:
    def __init__(self, address: str, timeout_s: float = 10.0):
        self.address = address
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(address)
        self._ranker = ranker_pb2_grpc.RankerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def rank_proto(self, request: ranker_pb2.RankRequest) -> ranker_pb2.RankResponse:
        try:
            return self._ranker.Rank(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise RankError(e.code(), e.details()) from None

    def rank(self, request: dict[str, Any]) -> dict[str, Any]:
        return response_to_dict(self.rank_proto(request_to_proto(request)))

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING, SERVICE_UNKNOWN, or UNAVAILABLE when the server cannot be reached."""
        try:
            status = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s).status
        except grpc.RpcError as e:
            return e.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    def wait_until_serving(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (status := self.health(SERVICE_NAME)) != "SERVING":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ranker at {self.address} is not serving after {timeout_s:.0f} s ({status})")
            time.sleep(0.05)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "RankerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
