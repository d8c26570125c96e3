"""The committed Python client code is what grpcio-tools generates from ranker.proto today (`make
proto` rewrites it), and the client turns the JSON tool's request dicts into that contract."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from grpc_tools import protoc

from serving.client import request_to_proto, response_to_dict
from serving.proto import ranker_pb2
from tests.conftest import ROOT

PROTO = Path("serving/proto/ranker.proto")
GENERATED = ["ranker_pb2.py", "ranker_pb2.pyi", "ranker_pb2_grpc.py"]


def test_the_committed_client_code_is_generated_from_the_proto(tmp_path):
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    status = protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                          f"--pyi_out={tmp_path}", str(tmp_path / PROTO)])
    assert status == 0
    for name in GENERATED:
        fresh = (tmp_path / PROTO.parent / name).read_text()
        assert fresh == (ROOT / PROTO.parent / name).read_text(), f"{name} is stale: run `make proto`"


def test_a_json_request_becomes_the_proto_and_an_answer_comes_back_as_the_json_tools():
    request = {"request_id": "r-1",
               "user": {"ids": {"user_id": 5}, "dense": {"user_history_len": 1.5},
                        "sequences": {"short": {"item": [7, 8], "author": [2, 3]}, "mixed": {}}},
               "candidates": [{"ids": {"live_item": 40}, "dense": {"room_ctr_5min": 0}}, {}]}
    message = request_to_proto(request)
    assert message.request_id == "r-1" and len(message.candidates) == 2
    assert list(message.user.sequences["short"].fields["author"].values) == [2, 3]
    assert "mixed" in message.user.sequences and not message.user.sequences["mixed"].fields  # {} stays present
    assert message.candidates[0].dense["room_ctr_5min"] == 0.0 and not message.candidates[1].ids
    assert not request_to_proto({**request, "request_id": None}).HasField("request_id")
    with pytest.raises(ValueError, match="no request field 'extra'"):
        request_to_proto({**request, "extra": 1})
    with pytest.raises(ValueError, match=r"candidates\[1\]: the proto has no field 'id'"):
        request_to_proto({**request, "candidates": [{}, {"id": 3}]})
    with pytest.raises(TypeError):  # an id that is not an integer cannot be sent at all
        request_to_proto({**request, "user": {"ids": {"user_id": 2.5}}})

    answer = ranker_pb2.RankResponse(model_generation=3, model_push=12, model_export="abc")
    answer.ranked.add(candidate=1, score=1.5, probabilities={"ctr": 0.25})
    assert response_to_dict(answer) == {"request_id": None, "model_generation": 3, "model_push": 12, "model_export": "abc",
                                        "ranked": [{"candidate": 1, "score": 1.5, "probabilities": {"ctr": 0.25}}]}
