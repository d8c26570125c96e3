"""Pushes: the trainer's updates reach the running ranker without a re-export (export/push.py,
online/pusher.py, serving/ranker/src/push.cpp). The format is checked against its specification
(safetensors' layout, zlib's CRC-32); the ranker against the trainer's eager model, a fresh export,
bad pushes and clients calling while pushes land."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from data_pipelines.dataset import FINAL, REALTIME
from serving.client import RankerClient, RankError
from export.export_dir import ExportDir, push_file
from export.push import encode_push, updatable_spec, write_push
from export.requests import RequestSchema, parse_request, random_request, requests_from_inputs
from export.scorer import inputs_from_batch
from tests.conftest import ROOT, TRAIN_ENV, compose_config, job_paths

TOLERANCE = 1e-6
# Batches learned before each push: the second interval learns nothing, so every table is untouched in it.
BATCHES_PER_PUSH = [2, 0, 1, 2]


def read_safetensors(data: bytes) -> tuple[dict, bytes]:
    """(header, data section), read as the safetensors specification lays a file out."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def test_a_push_is_laid_out_as_safetensors_with_a_crc_of_its_data():
    rows, values = torch.tensor([3, 1]), torch.arange(8, dtype=torch.float32).view(2, 4)
    dense = {"model.head.w": torch.ones(2, 3)}
    header, data = read_safetensors(encode_push("ab12", "f00d", 7, {"model.lookup.t.weight": (rows, values)}, dense,
                                                data_time_ms=5, learned_unix_ms=6))
    meta = header.pop("__metadata__")
    assert meta == {"format": "moment-cross-push", "format_version": "1", "export_id": "ab12", "fingerprint": "f00d",
                    "sequence": "7", "dense": "1", "data_time_ms": "5", "learned_unix_ms": "6",
                    "crc32": str(zlib.crc32(data))}
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items()} == {
        "rows/model.lookup.t.weight": ("I64", [2]), "values/model.lookup.t.weight": ("F32", [2, 4]),
        "dense/model.head.w": ("F32", [2, 3])}
    begin, end = header["values/model.lookup.t.weight"]["data_offsets"]
    assert torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32).tolist() == list(range(8))
    begin, end = header["rows/model.lookup.t.weight"]["data_offsets"]
    assert struct.unpack("<2q", data[begin:end]) == (3, 1)
    assert read_safetensors(encode_push("ab12", "f00d", 8, {}, None, 0, 0))[0]["__metadata__"]["dense"] == "0"


def test_the_fingerprint_changes_with_any_name_or_shape():
    tables = {"model.lookup.a.weight": torch.zeros(10, 4), "model.head.w": torch.zeros(3)}
    spec = updatable_spec(tables)
    assert spec["tables"] == {"model.lookup.a.weight": {"rows": 10, "dim": 4}} and spec["dense"] == {"model.head.w": [3]}
    assert updatable_spec({**tables, "model.head.w": torch.zeros(4)})["fingerprint"] != spec["fingerprint"]
    assert updatable_spec({**tables, "model.lookup.a.weight": torch.zeros(11, 4)})["fingerprint"] != spec["fingerprint"]
    assert updatable_spec(dict(tables))["fingerprint"] == spec["fingerprint"]


def test_write_push_names_files_by_sequence_and_leaves_no_temporary(tmp_path):
    path = write_push(tmp_path / "pushes" / "ab", b"bytes", 12)
    assert path == push_file(tmp_path / "pushes" / "ab", 12) and path.name == "0000000012.push"
    assert [p.name for p in path.parent.iterdir()] == ["0000000012.push"]


@pytest.fixture(scope="module")
def pushed(tiny_streams, tmp_path_factory):
    """A learner on the tiny world's realtime stream, exported (both formats) after two batches, then
    pushed four times (BATCHES_PER_PUSH); a fresh export of the model at the last push (TorchScript); a fixed
    request set and the eager model's answers to it at every version."""
    from export.request_scorer import RequestLayout
    from export.scorer import CandidateScorer, model_id_features
    from online.pusher import Pusher
    from recsys.data import ShardDataset, make_loader
    from recsys.data.batch import to_batch
    from recsys.model.factory import model_from_config
    from recsys.learning.learner import Learner

    root = tmp_path_factory.mktemp("push")
    cfg = compose_config("online_train", job_paths(tiny_streams))
    manifest = tiny_streams.manifest(REALTIME)
    learner = Learner(cfg, manifest, seed=0)
    layout = OmegaConf.to_container(cfg.request_layout)
    settings = dataclasses.replace(instantiate(cfg.push), formats="both")
    pusher = Pusher(learner.task.model, model_from_config(cfg, manifest, embedding_device="cpu"), layout,
                    root / "base", settings, {"run_id": "test"})
    batches = ShardDataset(tiny_streams.stream(REALTIME), batch_size=256).micro_batches()

    def learn(n: int) -> None:
        for _ in range(n):
            learner.train(to_batch(next(batches)))
            pusher.learned()

    learn(2)
    inputs = inputs_from_batch(next(iter(make_loader(ShardDataset(tiny_streams.stream(FINAL), 64)))), pusher.copy)
    pusher.full_export(inputs)
    meta = json.loads((root / "base" / "model.json").read_text())
    schema = RequestSchema(meta)
    requests = requests_from_inputs(inputs, schema, 20, prefix="p")[:2] + [random_request(meta, 30, 7, seed=3)]
    ids, gsus = model_id_features(pusher.copy), list(pusher.copy.gsu_names)
    request_layout = RequestLayout.of(pusher.copy, layout)

    def eager_answers() -> list[torch.Tensor]:
        pusher._sync_copy()
        scorer = CandidateScorer(pusher.copy, ids).eval()
        with torch.no_grad():
            return [scorer(*request_layout.join(parse_request(json.dumps(r), schema)[1], ids, gsus))[0]
                    for r in requests]

    expected = {0: eager_answers()}
    records = []
    for k, n in enumerate(BATCHES_PER_PUSH, start=1):
        learn(n)
        records.append(pusher.push(data_time_ms=k))
        expected[k] = eager_answers()
    # The same model elsewhere, as it is at the last push: a fresh export (TorchScript: it is the
    # reference both formats' pushed answers are held to, and one AOTInductor compile is enough here).
    pusher.export, pusher.formats = ExportDir(root / "fresh"), ("torchscript",)
    pusher.full_export(inputs)
    return {"base": root / "base", "fresh": root / "fresh", "meta": meta, "requests": requests, "expected": expected,
            "records": records}


def run_json_tool(binary: Path, model_dir: Path, requests: list[dict], *flags: str) -> list[dict]:
    result = subprocess.run([str(binary), "--model", str(model_dir), *flags], input="".join(
        json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def probabilities(answer: dict, tasks: list[str]) -> torch.Tensor:
    out = torch.zeros(len(answer["ranked"]), len(tasks))
    for r in answer["ranked"]:
        out[r["candidate"]] = torch.tensor([r["probabilities"][t] for t in tasks])
    return out


@pytest.mark.slow
def test_the_pusher_sends_touched_rows_and_dense_tensors(pushed):
    records = pushed["records"]
    assert [r.sequence for r in records] == [1, 2, 3, 4]
    # Push 2 follows an interval with nothing learned: no row and no dense tensor changed, none sent.
    assert [r.dense for r in records] == [True, False, True, True]
    assert records[1].rows == 0 and all(r.rows > 0 for r in records if r.sequence != 2)
    empty, _ = read_safetensors(records[1].path.read_bytes())
    assert not any(k.startswith(("rows/", "values/", "dense/")) for k in empty) and records[1].bytes < 4096
    header, _ = read_safetensors(records[2].path.read_bytes())
    assert {k.removeprefix("dense/") for k in header if k.startswith("dense/")} == set(pushed["meta"]["updatable"]["dense"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_pushes_applied_to_the_export_equal_the_trainer_and_a_fresh_export(pushed, ranker_binary, fmt):
    tasks, requests, expected = pushed["meta"]["tasks"], pushed["requests"], pushed["expected"]
    pushed_answers = run_json_tool(ranker_binary, pushed["base"], requests, "--format", fmt)
    fresh_answers = run_json_tool(ranker_binary, pushed["fresh"], requests, "--format", "torchscript")
    base_only = run_json_tool(ranker_binary, pushed["base"], requests, "--format", fmt, "--push-check-ms", "0")
    moved = 0.0
    for answer, fresh, base, eager_now, eager_then in zip(pushed_answers, fresh_answers, base_only, expected[4],
                                                          expected[0]):
        assert answer["model_push"] == 4 and fresh["model_push"] == 0 and base["model_push"] == 0
        got = probabilities(answer, tasks)
        torch.testing.assert_close(got, eager_now, rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(got, probabilities(fresh, tasks), rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(probabilities(base, tasks), eager_then, rtol=0, atol=TOLERANCE)
        moved = max(moved, float((eager_now - eager_then).abs().max()))
    assert moved > 1e-3  # the pushes carried learning the export alone does not have


def _copy_export(source: Path, target: Path, pushes: list[int]) -> Path:
    target.mkdir(parents=True)
    meta = json.loads((source / "model.json").read_text())
    for name in meta["files"].values():
        shutil.copy(source / name, target / name)
    for k in pushes:
        write_push(ExportDir(target).pushes(meta["export_id"]),
                   ExportDir(source).push_path(meta["export_id"], k).read_bytes(), k)
    shutil.copy(source / "model.json", target / "model.json")
    return target


def _wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_bad_pushes_are_refused_with_their_reason_and_the_last_good_version_keeps_serving(pushed, ranker_binary, tmp_path):
    from serving.server_process import RankerServer

    meta, requests = pushed["meta"], pushed["requests"]
    serving = _copy_export(pushed["base"], tmp_path / "serving", [1, 2])
    directory = ExportDir(serving).pushes(meta["export_id"])
    table, spec = next(iter(meta["updatable"]["tables"].items()))
    good_rows, good_values = torch.tensor([0, 1]), torch.zeros(2, spec["dim"])

    def bad(**change) -> bytes:
        args = {"export_id": meta["export_id"], "fingerprint": meta["updatable"]["fingerprint"], "sequence": 3,
                "tables": {table: (good_rows, good_values)}, "dense": None, "data_time_ms": 0, "learned_unix_ms": 0}
        return encode_push(**{**args, **change})

    flipped = bytearray(ExportDir(pushed["base"]).push_path(meta["export_id"], 3).read_bytes())
    flipped[-5] ^= 0x40
    cases = {
        "base": bad(export_id="0" * 32),
        "shape": bad(fingerprint="0123456789abcdef"),
        "rows": bad(tables={table: (torch.tensor([spec["rows"]]), torch.zeros(1, spec["dim"]))}),
        "tensor": bad(tables={table: (good_rows, torch.zeros(2, spec["dim"], dtype=torch.float64))}),
        "values": bad(tables={table: (good_rows, torch.full((2, spec["dim"]), float("nan")))}),
        "checksum": bytes(flipped),
        "sequence": bad(sequence=4),
    }
    wrong_shape = bad(dense={name: torch.zeros(*[d + 1 for d in shape]) for name, shape in meta["updatable"]["dense"].items()})
    with RankerServer(serving, "--push-check-ms", "20") as server:
        before = server.client.rank(requests[0])
        assert before["model_push"] == 2 and server.metrics()["ranker_model_push"] == 2  # caught up before serving
        for reason, data in [*cases.items(), ("tensor", wrong_shape)]:
            write_push(directory, data, 3)
            key = f'ranker_pushes_total{{result="refused",reason="{reason}"}}'
            _wait_for(lambda: server.metrics().get(key, 0) >= (2 if reason == "tensor" and data is wrong_shape else 1))
            answer = server.client.rank(requests[0])
            assert answer["model_push"] == 2 and answer["ranked"] == before["ranked"], reason
        assert "push refused (checksum)" in server.stderr and "CRC-32" in server.stderr
        # A gap: push 4 present while 3 is not yet good is not applied.
        (directory / "0000000003.push").unlink()
        write_push(directory, ExportDir(pushed["base"]).push_path(meta["export_id"], 4).read_bytes(), 4)
        _wait_for(lambda: server.metrics().get('ranker_pushes_total{result="gap"}', 0) == 1)
        assert server.client.rank(requests[0])["model_push"] == 2
        write_push(directory, ExportDir(pushed["base"]).push_path(meta["export_id"], 3).read_bytes(), 3)
        _wait_for(lambda: server.metrics()["ranker_model_push"] == 4)
        m = server.metrics()
        after = server.client.rank(requests[0])
    assert m['ranker_pushes_total{result="applied"}'] == 4 and m["ranker_push_apply_seconds_count"] == 4
    assert m["ranker_push_age_seconds"] > 0 and m["ranker_push_data_timestamp_seconds"] == pytest.approx(0.004)
    torch.testing.assert_close(probabilities(after, meta["tasks"]), pushed["expected"][4][0], rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_two_replicas_under_load_answer_each_call_from_one_version_and_converge(pushed, ranker_binary, tmp_path):
    """Clients call two replicas (TorchScript and AOTInductor) continuously while a push lands every
    second: no error, every answer equal to the eager model at the version it names, versions only
    rise; a replica restarted afterwards serves the newest version from its first answer."""
    from serving.server_process import RankerServer

    meta, requests, expected = pushed["meta"], pushed["requests"], pushed["expected"]
    serving = _copy_export(pushed["base"], tmp_path / "serving", [])
    source = ExportDir(pushed["base"]).pushes(meta["export_id"])
    failures: list[Exception] = []
    seen: dict[tuple[int, int], list[tuple[int, int]]] = {}
    stop = threading.Event()
    replicas = [RankerServer(serving, "--format", fmt, "--push-check-ms", "20") for fmt in ("torchscript", "aoti")]
    try:
        def keep_calling(replica: int, client_index: int) -> None:
            versions = seen.setdefault((replica, client_index), [])
            with RankerClient(replicas[replica].grpc_address) as client:
                i = 0
                while not stop.is_set():
                    k = i % len(requests)
                    try:
                        answer = client.rank(requests[k])
                    except RankError as e:
                        failures.append(e)
                        continue
                    version = (answer["model_generation"], answer["model_push"])
                    versions.append(version)
                    got = probabilities(answer, meta["tasks"])
                    if not torch.allclose(got, expected[version[1]][k], rtol=0, atol=1e-5):
                        failures.append(AssertionError(f"replica {replica}: answer not from version {version}"))
                    i += 1

        threads = [threading.Thread(target=keep_calling, args=(r, c)) for r in range(2) for c in range(2)]
        for t in threads:
            t.start()
        for k in range(1, len(BATCHES_PER_PUSH) + 1):
            time.sleep(1.0)
            write_push(ExportDir(serving).pushes(meta["export_id"]), push_file(source, k).read_bytes(), k)
        _wait_for(lambda: all(r.metrics()["ranker_model_push"] == 4 for r in replicas))
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        replicas[0].terminate()
        replicas[0] = RankerServer(serving, "--format", "torchscript")
        first = replicas[0].client.rank(requests[0])
    finally:
        stop.set()
        for r in replicas:
            r.kill()
    assert not failures, failures[:3]
    for versions in seen.values():
        assert versions and versions == sorted(versions) and versions[-1] == (1, 4)
    assert {v for versions in seen.values() for v in versions} > {(1, 0), (1, 4)}
    assert first["model_push"] == 4
    torch.testing.assert_close(probabilities(first, meta["tasks"]), expected[4][0], rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_online_train_resumes_from_its_checkpoint_without_learning_a_sample_twice(tiny_streams, tmp_path):
    """Two runs of the trainer, the second resuming where the first checkpointed, learn what one
    uninterrupted run learns: each sample once."""
    def run(name: str, stop_s: int) -> dict:
        args = [sys.executable, "-m", "online", *job_paths(tiny_streams), f"paths.log_dir={tmp_path / 'logs'}",
                f"paths.artifacts_dir={tmp_path / 'artifacts'}", f"paths.reports_dir={tmp_path / 'reports'}",
                "push.formats=torchscript", "online_train.progress=false", f"online_train.name={name}",
                f"online_train.stop_after_s={stop_s}", "online_train.checkpoint_every_s=600"]
        result = subprocess.run(args, cwd=ROOT, env=TRAIN_ENV, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return json.loads((tmp_path / "reports" / f"online_train_{name}.json").read_text())

    first = run("resumed", 1800)
    second = run("resumed", 1800)  # picks up logs/online/resumed/latest
    whole = run("whole", 3600)
    assert first["resumed_after_samples"] == 0 and second["resumed_after_samples"] == first["samples_learned"] > 0
    assert second["data_time_ms"][0] == first["data_time_ms"][1] == whole["data_time_ms"][0] + 1800 * 1000
    assert first["samples_learned"] + second["samples_learned"] == whole["samples_learned"]
    assert len(second["exports"]) == 1 and second["pushes"] == 1800 // 30  # a new base at the resume
    meta = json.loads((tmp_path / "artifacts" / "resumed" / "model.json").read_text())
    assert meta["export_id"] == second["exports"][0]["export_id"]
    assert [p.name for p in (tmp_path / "artifacts" / "resumed" / "pushes").iterdir()] == [meta["export_id"]]


@pytest.mark.slow
def test_a_full_export_written_in_the_background_lands_with_a_push_bringing_it_up_to_date(tiny_streams, ranker_binary,
                                                                                          tmp_path):
    """While a new base is written from a snapshot, pushes onto the old base go on; the new base is
    committed with a first push holding every row touched since the snapshot, so a ranker loading it
    serves the model of the commit, not of the snapshot."""
    from export.scorer import CandidateScorer, model_id_features
    from online.pusher import Pusher
    from recsys.data import ShardDataset, make_loader
    from recsys.data.batch import to_batch
    from recsys.model.factory import model_from_config
    from recsys.learning.learner import Learner

    cfg = compose_config("online_train", job_paths(tiny_streams))
    manifest = tiny_streams.manifest(REALTIME)
    learner = Learner(cfg, manifest, seed=0)
    pusher = Pusher(learner.task.model, model_from_config(cfg, manifest, embedding_device="cpu"),
                    OmegaConf.to_container(cfg.request_layout), tmp_path / "out",
                    dataclasses.replace(instantiate(cfg.push), formats="torchscript"), {"run_id": "test"})
    batches = ShardDataset(tiny_streams.stream(REALTIME), batch_size=256).micro_batches()

    def learn() -> None:
        learner.train(to_batch(next(batches)))
        pusher.learned()

    inputs = inputs_from_batch(next(iter(make_loader(ShardDataset(tiny_streams.stream(FINAL), 64)))), pusher.copy)
    first = pusher.full_export(inputs)
    old_id = json.loads(first.meta_path.read_text())["export_id"]
    learn()
    pusher.push(data_time_ms=1)
    pusher.start_full_export(inputs)
    assert pusher.exporting
    learn()
    during = pusher.push(data_time_ms=2)  # onto the old base, while the new one is written
    assert during.sequence == 2 and during.path.parent.name == old_id and during.rows > 0
    report = pusher.finish_full_export(wait=True)
    pusher.close()
    meta = json.loads(report.meta_path.read_text())
    assert meta["export_id"] != old_id and pusher.sequence == 1
    header, _ = read_safetensors(ExportDir(tmp_path / "out").push_path(meta["export_id"], 1).read_bytes())
    rows_during, _ = read_safetensors(during.path.read_bytes())
    assert {k for k in rows_during if k.startswith("rows/")} <= {k for k in header if k.startswith("rows/")}
    schema = RequestSchema(meta)
    requests = requests_from_inputs(inputs, schema, 20, prefix="bg")[:2]
    [answer, _] = run_json_tool(ranker_binary, tmp_path / "out", requests)
    pusher._sync_copy()
    ids = model_id_features(pusher.copy)
    from export.request_scorer import RequestLayout
    layout = RequestLayout.of(pusher.copy, meta["request_layout"]["user"])
    with torch.no_grad():
        now = CandidateScorer(pusher.copy, ids).eval()(*layout.join(parse_request(json.dumps(requests[0]), schema)[1],
                                                                     ids, list(pusher.copy.gsu_names)))[0]
    assert answer["model_push"] == 1
    torch.testing.assert_close(probabilities(answer, meta["tasks"]), now, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_a_package_compiled_with_freezing_is_refused_at_start_up(untrained, ranker_binary, tmp_path):
    """Freezing folds the weights into other constants: nothing a push names is left to replace, and
    the ranker says so rather than serving a model it could never update."""
    import uuid

    from export.push import updatable_spec
    from export.request_scorer import RequestLayout, RequestScorer
    from export.scorer import model_id_features

    model, meta, inputs = untrained
    layout = RequestLayout.of(model, meta["request_layout"]["user"])
    scorer = RequestScorer(model, layout).eval()
    from export.aoti import export_program
    from export.artifact import validation_cases
    from export.scorer import CandidateScorer

    with torch.no_grad():
        expected = CandidateScorer(model, model_id_features(model)).eval()(*inputs)
    example = validation_cases(model, layout, inputs, expected)[2][0]  # two users, as the export compiles

    program = export_program(scorer, example, 1000)
    export_id = uuid.uuid4().hex
    with torch._inductor.config.patch({"freezing": True, "aot_inductor.metadata": {"export_id": export_id}}):
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "model.pt2"))
    frozen = {**meta, "export_id": export_id, "updatable": updatable_spec(scorer.serving_tensors()),
              "files": {"aoti": "model.pt2"}}
    (tmp_path / "model.json").write_text(json.dumps(frozen))
    result = subprocess.run([str(ranker_binary), "--model", str(tmp_path)], input="", capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert "frozen or folded at compile time cannot take pushes" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_model_files_of_another_export_than_model_json_are_never_served(pushed, ranker_binary, tmp_path):
    """Each model file names its export. The files of a newer export renamed into place before its
    model.json (an export being committed) under the older model.json, whose pushes would be applied
    to the wrong weights, are refused; the ranker waits a moment for model.json, then says why."""
    mixed = _copy_export(pushed["fresh"], tmp_path / "mixed", [])
    shutil.copy(pushed["base"] / "model.json", mixed / "model.json")
    result = subprocess.run([str(ranker_binary), "--model", str(mixed), "--format", "torchscript"], input="",
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    fresh_id = json.loads((pushed["fresh"] / "model.json").read_text())["export_id"]
    assert f"belongs to export '{fresh_id}'" in result.stderr and pushed["meta"]["export_id"] in result.stderr
    # model.json landing while the ranker waits: it starts, with the files' own export.
    waiting = subprocess.Popen([str(ranker_binary), "--model", str(mixed), "--format", "torchscript"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    shutil.copy(pushed["fresh"] / "model.json", mixed / "model.json")
    out, err = waiting.communicate(json.dumps(pushed["requests"][0]) + "\n", timeout=120)
    assert waiting.returncode == 0, err[-2000:]
    torch.testing.assert_close(probabilities(json.loads(out), pushed["meta"]["tasks"]), pushed["expected"][4][0],
                               rtol=0, atol=TOLERANCE)
