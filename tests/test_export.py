"""Export and serving: a tiny trained model scored the same way in Python eager, in the loaded
TorchScript file and in the C++ ranker; malformed requests answered with error lines; a newer export
picked up by a running ranker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from data_pipelines.contract import SEQUENCE_FIELDS
from data_pipelines.dataset import FINAL, REALTIME, DataSet
from export.job import run_export
from export.requests import RequestError, RequestSchema, parse_request, random_request, rank
from export.request_scorer import RequestInputs, RequestLayout, RequestScorer, merged
from export.torchscript import to_torchscript
from export.scorer import CandidateScorer, inputs_from_batch, model_id_features
from export.artifact import ExportValidationError, export, metadata
from recsys.data import ShardDataset, make_loader
from recsys.model.factory import model_from_config
from recsys.model.inputs import to_model_input
from recsys.train.checkpoint import TRAINER_STATE, IncompleteCheckpointError, model_state_dict
from tests.conftest import checkpoints, compose_config, export_cfg, job_paths
from tests.corpus import damage
from tests.corpus.requests import request_cases

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tiny_streams, tiny_training, tmp_path_factory):
    """The newest checkpoint of the tiny training run, exported with `make export`'s job."""
    _, log_dir = tiny_training
    artifacts = tmp_path_factory.mktemp("artifacts")
    report, meta = run_export(export_cfg(tiny_streams, log_dir, artifacts, None, "name=tiny"))
    return report.out_dir, meta, log_dir


def eager_model(checkpoint: Path, data: DataSet):
    model = model_from_config(compose_config("train", job_paths(data)), data.manifest(REALTIME), embedding_device="cpu")
    model.load_state_dict(model_state_dict(checkpoint), strict=True)
    return model.eval()


def run_ranker(binary: Path, model_dir: Path, lines: list[str]) -> list[dict]:
    result = subprocess.run([str(binary), "--model", str(model_dir), "--reload-check-ms", "0"],
                            input="".join(line + "\n" for line in lines), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert len(out) == len(lines), result.stderr  # one answer per line, whatever the line held
    return [json.loads(line) for line in out]


def corpus_request(model_dir: Path) -> dict:
    """A sample request of the export, its first candidate given a `long` sequence (the corpus
    changes one of its side buckets)."""
    request = json.loads((model_dir / "requests.jsonl").read_text().splitlines()[0])
    request["candidates"][0]["sequences"]["long"] = {f: [1, 1] for f in SEQUENCE_FIELDS}
    return request


def _run_ranker_bytes(binary: Path, model_dir: Path, data: bytes, *flags: str) -> list[dict]:
    """The ranker on raw bytes; its answers must decode as UTF-8 whatever the input held."""
    result = subprocess.run([str(binary), "--model", str(model_dir), "--reload-check-ms", "0", *flags], input=data,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]  # strict decoding


def test_the_export_scorer_reproduces_the_training_forward(tiny_streams):
    """The tensor-only layout (padded sequences + lengths) gives what the training layout gives,
    for the full model, an ablation that drops GSUs, and the model without any (cross=none)."""
    manifest = tiny_streams.manifest(REALTIME)
    batch = next(iter(make_loader(ShardDataset(tiny_streams.stream(FINAL), 64))))
    for cross in (["cross=all"], ["cross=all", "cross.gsu_names=[long,mixed]"], ["cross=none"]):
        torch.manual_seed(0)
        model = model_from_config(compose_config("train", [*job_paths(tiny_streams), *cross]), manifest,
                                  embedding_device="cpu").eval()
        with torch.no_grad():
            expected = torch.sigmoid(model(to_model_input(batch, model.gsu_names, model.seq_len,
                                                          model.pooled_features)).logits)
            got, score = CandidateScorer(model, model_id_features(model))(*inputs_from_batch(batch, model))
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        by_hand = torch.prod((1 + expected) ** model.head.score_weights, dim=-1)
        torch.testing.assert_close(score, by_hand, rtol=1e-6, atol=1e-6)


def random_requests(meta: dict) -> list[dict]:
    """Requests of 1, 50 and 200 candidates whose users have sequences of 0, 7 and the model's full
    length, the candidates' of random lengths, or none at all."""
    full = meta["gsus"]["length"]
    return [random_request(meta, n, user_length, seed=n + user_length, candidate_length=candidate_length)
            for n, user_length, candidate_length in ((1, 7, None), (50, 0, None), (50, full, None), (200, 7, None),
                                                     (3, full, 0))]


def request_scorer_cases(meta: dict) -> list[RequestInputs]:
    """`random_requests` as the request scorer's inputs, and three of them merged (what the ranker's
    micro-batcher sends)."""
    schema = RequestSchema(meta)
    single = [parse_request(request, schema)[1] for request in random_requests(meta)]
    return [*single, merged(single[:3])]


def test_the_request_scorer_answers_as_the_per_candidate_model(untrained):
    """Same parameters, computed once per request: the eager request scorer and its TorchScript give
    the per-candidate model's answers (the user's part repeated in every candidate) within 1e-5."""
    model, meta, _ = untrained
    ids = [f["name"] for f in meta["id_features"]]
    layout = RequestLayout.of(model, meta["request_layout"]["user"])
    reference = CandidateScorer(model, ids).eval()
    scorer = RequestScorer(model, layout).eval()
    scripted = to_torchscript(scorer)
    for inputs in request_scorer_cases(meta):
        with torch.no_grad():
            expected = reference(*layout.join(inputs, ids, list(model.gsu_names)))
            for got in (scorer(*inputs), scripted(*inputs), scripted(*inputs.trimmed())):
                for e, g in zip(expected, got):
                    torch.testing.assert_close(g, e, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("gsus", [[], ["long", "livelong"], ["short"]], ids=["no_gsu", "no_user_gsu", "no_candidate_gsu"])
def test_the_request_scorer_answers_as_the_per_candidate_model_for_ablations(tiny_streams, gsus):
    """Models without some GSUs (the ablations' `cross.gsu_names`): no attention at all, none over
    the user's sequences, none over the candidates'."""
    torch.manual_seed(0)
    cross = ["cross=none"] if not gsus else [f"cross.gsu_names=[{','.join(gsus)}]", "cross.contrastive.enabled=false"]
    model = model_from_config(compose_config("train", [*job_paths(tiny_streams), *cross]),
                              tiny_streams.manifest(REALTIME), embedding_device="cpu").eval()
    user = OmegaConf.to_container(compose_config("export", job_paths(tiny_streams)).request_layout)
    user["sequences"] = [g for g in user["sequences"] if g in model.gsu_names]  # as make export drops them
    meta = metadata(model, user, max_candidates=1000, training={"run_id": "ablation"})
    ids = [f["name"] for f in meta["id_features"]]
    layout = RequestLayout.of(model, user)
    reference, scripted = CandidateScorer(model, ids).eval(), to_torchscript(RequestScorer(model, layout))
    for inputs in request_scorer_cases(meta):
        with torch.no_grad():
            expected = reference(*layout.join(inputs, ids, list(model.gsu_names)))
            for e, g in zip(expected, scripted(*inputs)):
                torch.testing.assert_close(g, e, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_python_eager_torchscript_and_cpp_ranker_agree(exported, tiny_streams, ranker_binary):
    model_dir, meta, log_dir = exported
    assert meta["training"]["checkpoint"] == str(checkpoints(log_dir)[-1])  # the newest one
    assert meta["training"]["run_id"].startswith("e2e@")
    assert meta["validation"]["max_abs_diff_probabilities"] <= TOLERANCE
    assert meta["fbgemm_operators"] == []  # the request scorer reads table rows with aten's embedding
    schema = RequestSchema(meta)
    lines = (model_dir / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 4
    lines += [json.dumps(request) for request in random_requests(meta)]  # sequences of every length, and none

    model = eager_model(checkpoints(log_dir)[-1], tiny_streams)
    ids = [f["name"] for f in meta["id_features"]]
    layout = RequestLayout.of(model, meta["request_layout"]["user"])
    eager, scripted = CandidateScorer(model, ids).eval(), torch.jit.load(str(model_dir / "model.pt"))
    answers = run_ranker(ranker_binary, model_dir, lines)
    for line, answer in zip(lines, answers):
        request_id, inputs = parse_request(line, schema)
        with torch.no_grad():
            p_eager, s_eager = eager(*layout.join(inputs, ids, list(model.gsu_names)))  # the user repeated per candidate
            p_script, s_script = scripted(*inputs)
        torch.testing.assert_close(p_script, p_eager, rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(s_script, s_eager, rtol=0, atol=TOLERANCE)
        assert answer["request_id"] == request_id
        ranked = answer["ranked"]
        assert sorted(r["candidate"] for r in ranked) == list(range(inputs.candidates))
        assert all(a["score"] >= b["score"] for a, b in zip(ranked, ranked[1:]))
        p_cpp = torch.zeros_like(p_eager)
        s_cpp = torch.zeros_like(s_eager)
        for r in ranked:
            s_cpp[r["candidate"]] = r["score"]
            p_cpp[r["candidate"]] = torch.tensor([r["probabilities"][t] for t in meta["tasks"]])
        torch.testing.assert_close(p_cpp, p_eager, rtol=0, atol=TOLERANCE)
        torch.testing.assert_close(s_cpp, s_eager, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_the_ranker_answers_malformed_requests_with_errors_and_keeps_serving(exported, ranker_binary):
    """Every request of the bad-input corpus (tests/corpus/requests.py): an error naming the field's
    path and the rule, as the Python validator's does, and the next valid request still served."""
    model_dir, meta, _ = exported
    request = corpus_request(model_dir)
    valid = json.dumps(request).encode()
    cases = request_cases(request, meta)
    odd_id = json.dumps({**request, "request_id": 'r "é" \\ 1'}).encode()
    answers = _run_ranker_bytes(ranker_binary, model_dir,
                                b"\n".join([valid, *(c.line for c in cases), b"", odd_id, valid]) + b"\n")

    assert "ranked" in answers[0] and answers[-1]["ranked"] == answers[0]["ranked"]  # still serving, same scores
    schema = RequestSchema(meta)
    for case, answer in zip(cases, answers[1:]):
        assert set(answer) == {"request_id", "error"}, (case.name, answer)
        assert case.kept_by(answer["error"]), (case.name, answer["error"])  # the path, then the rule
        if not case.python_too:
            assert answer["error"] == case.error, case.name
            continue
        with pytest.raises(RequestError) as python_error:  # the Python reference refuses it for the same rule
            parse_request(case.text, schema)
        assert case.kept_by(str(python_error.value)), (case.name, str(python_error.value))
    assert answers[len(cases) + 1] == {"request_id": None, "error": "empty request"}
    assert answers[len(cases) + 2]["request_id"] == 'r "é" \\ 1' and "ranked" in answers[len(cases) + 2]


def test_parse_request_lays_out_user_and_candidate_fields(untrained):
    """A hand-written request against the layout model.json declares."""
    _, meta, _ = untrained
    schema = RequestSchema(meta)
    empty = {f: [] for f in SEQUENCE_FIELDS}
    user = {"ids": {"user_id": 5, "hour": 20, "user_history_bucket": 3, "user_live_bucket": 1},
            "dense": {"user_history_len": 1.5, "user_live_history_len": 0.25},
            "sequences": {"short": {"item": [7, 8], "author": [2, 3], "gap": [1, 2], "watch": [3, 4], "domain": [1, 1]},
                          "mixed": empty}}
    cands = [{"ids": {"live_item": 100 + i, "author_id": 10 + i, "category": 1, "live_type": 2},
              "dense": {f: float(i) for f in ("room_viewers_now", "room_clicks_30s", "room_clicks_5min",
                                              "room_impressions_5min", "room_ctr_5min", "room_age_min")},
              "sequences": {"long": {"item": [9] * (i + 1), "author": [4] * (i + 1), "gap": [5] * (i + 1),
                                     "watch": [6] * (i + 1), "domain": [2] * (i + 1)},
                            "aidhard": empty, "livelong": empty}} for i in range(2)]
    request_id, x = parse_request(json.dumps({"request_id": "h", "user": user, "candidates": cands}), schema)
    assert request_id == "h" and x.candidates == 2
    assert schema.id_features == ["user_id", "live_item", "author_id", "category", "live_type", "hour",
                                  "user_history_bucket", "user_live_bucket"]
    assert x.user_ids.tolist() == [[5, 20, 3, 1]]  # the user's part once
    assert x.ids.tolist() == [[100, 10, 1, 2], [101, 11, 1, 2]] and x.candidate_user.tolist() == [0, 0]
    assert x.user_dense.tolist() == [[1.5, 0.25]] and x.dense[1].tolist() == [1.0] * 6
    assert schema.fields_of("user", "sequences") == ["short", "mixed"]
    assert schema.fields_of("candidate", "sequences") == ["long", "aidhard", "livelong"]
    assert x.user_seq_lengths.tolist() == [[2, 0]]
    assert x.user_seq_ids[0, 0, :3].tolist() == [[7, 2], [8, 3], [0, 0]]  # padding after the real elements
    assert x.user_seq_side[0, 0, 1].tolist() == [2, 4, 1] and x.user_seq_side[0, 0, 2].tolist() == [0, 0, 0]
    assert x.user_seq_ids.shape == (1, 2, 50, 2)
    # The candidates' elements jagged: one `long` element of candidate 0, two of candidate 1, nothing else.
    assert x.seq_ids.tolist() == [[9, 4]] * 3 and x.seq_side.tolist() == [[5, 6, 2]] * 3  # gap, watch, domain
    assert x.seq_owner.tolist() == [[0, 0], [1, 0], [1, 0]]  # (candidate, GSU among the candidate GSUs)


def test_an_export_that_does_not_reproduce_the_eager_model_is_not_kept(untrained, tmp_path):
    model, meta, inputs = untrained
    scorer = CandidateScorer(model, [f["name"] for f in meta["id_features"]])
    with torch.no_grad():
        p, s = scorer(*inputs)
    layout = RequestLayout.of(model, meta["request_layout"]["user"])
    with pytest.raises(ExportValidationError, match="differs from the eager model"):
        export(model, layout, {}, tmp_path / "bad", inputs, (p + 1e-3, s), tolerance=TOLERANCE)
    assert not (tmp_path / "bad" / "model.pt").exists() and not list((tmp_path / "bad").iterdir())


@pytest.mark.slow
def test_a_running_ranker_picks_up_a_newer_export_without_dropping_requests(exported, tiny_streams, ranker_binary,
                                                                             tmp_path):
    model_dir, meta, log_dir = exported
    serving = tmp_path / "serving"
    first, newest = checkpoints(log_dir)[0], checkpoints(log_dir)[-1]
    run_export(export_cfg(tiny_streams, log_dir, tmp_path, first, "name=serving"))
    line = (model_dir / "requests.jsonl").read_text().splitlines()[0]
    proc = subprocess.Popen([str(ranker_binary), "--model", str(serving), "--reload-check-ms", "50"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def ask() -> dict:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        before = ask()
        assert before["model_generation"] == 1
        run_export(export_cfg(tiny_streams, log_dir, tmp_path, newest, "name=serving"))
        answers, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:
            answers.append(ask())
            if answers[-1]["model_generation"] == 2:
                break
            time.sleep(0.05)
        assert all("ranked" in a for a in answers)  # every request answered while the reload happened
        after = answers[-1]
        assert after["model_generation"] == 2
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    scripted = torch.jit.load(str(serving / "model.pt"))
    _, inputs = parse_request(line, RequestSchema(json.loads((serving / "model.json").read_text())))
    with torch.no_grad():
        _, score = scripted(*inputs)
    got = torch.zeros_like(score)
    for r in after["ranked"]:
        got[r["candidate"]] = r["score"]
    torch.testing.assert_close(got, score, rtol=0, atol=TOLERANCE)  # the new model's scores
    assert before["ranked"] != after["ranked"]
    assert "reloaded" in proc.stderr.read()


class _EchoFirstElement(torch.nn.Module):
    """A stand-in model with the request scorer's signature whose "probabilities" are the fields of each
    candidate's first element of the first GSU, as laid out in the inputs: id fields, then side fields."""

    def __init__(self, from_user: bool):
        super().__init__()
        self.from_user = from_user

    def forward(self, user_ids: torch.Tensor, user_dense: torch.Tensor, user_seq_ids: torch.Tensor,
                user_seq_side: torch.Tensor, user_seq_lengths: torch.Tensor, candidate_user: torch.Tensor,
                ids: torch.Tensor, dense: torch.Tensor, seq_ids: torch.Tensor, seq_side: torch.Tensor,
                seq_lengths: torch.Tensor):
        if self.from_user:
            first = torch.cat([user_seq_ids[:, 0, 0], user_seq_side[:, 0, 0]], dim=-1)[candidate_user].float()
        else:
            first = torch.cat([seq_ids[:, 0, 0], seq_side[:, 0, 0]], dim=-1).float()
        return first, first.sum(-1)


def _echo_export(meta: dict, out_dir: Path, side_fields: list[str], from_user: bool) -> dict:
    """The echo model with a copy of `meta` that declares the side fields in `side_fields` order."""
    out_dir.mkdir()
    meta = json.loads(json.dumps(meta))
    meta["gsus"]["side_fields"] = side_fields
    meta["tasks"] = [*meta["gsus"]["id_fields"], *side_fields]  # one echoed value per field, under its name
    meta["updatable"] = {"fingerprint": "echo", "tables": {}, "dense": {}}  # it holds no trained tensor
    (out_dir / "model.json").write_text(json.dumps(meta))
    torch.jit.script(_EchoFirstElement(from_user)).save(str(out_dir / "model.pt"),
                                                        _extra_files={"export_id": meta["export_id"]})
    return meta


@pytest.mark.slow
def test_python_and_cpp_validators_lay_out_sequence_fields_as_model_json_orders_them(exported, ranker_binary,
                                                                                    tmp_path):
    """Each field's value must reach the model at the position model.json gives it, in both
    validators: with the export's own order and with a permuted one (a validator that assumed an
    order of its own would put some value under the wrong name)."""
    model_dir, meta, _ = exported
    assert meta["gsus"]["id_fields"] + meta["gsus"]["side_fields"] == list(SEQUENCE_FIELDS)  # written from the contract
    request = json.loads((model_dir / "requests.jsonl").read_text().splitlines()[0])
    first_gsu = meta["gsus"]["names"][0]
    owner = "user" if first_gsu in meta["request_layout"]["user"]["sequences"] else "candidate"
    element = {"item": 7, "author": 3, "gap": 5, "watch": 9, "domain": 2}  # distinct, each within its rows
    for part in ([request["user"]] if owner == "user" else request["candidates"]):
        part["sequences"][first_gsu] = {f: [v] for f, v in element.items()}
    line = json.dumps(request)
    for order in (meta["gsus"]["side_fields"], ["domain", "gap", "watch"]):
        echo_dir = tmp_path / "-".join(order)
        echo_meta = _echo_export(meta, echo_dir, order, owner == "user")
        [answer] = run_ranker(ranker_binary, echo_dir, [line])
        assert all(r["probabilities"] == element for r in answer["ranked"]), (order, answer["ranked"][0])
        _, inputs = parse_request(line, RequestSchema(echo_meta))
        with torch.no_grad():
            echoed, _ = _EchoFirstElement(owner == "user")(*inputs)
        assert echoed.tolist() == [[float(element[t]) for t in echo_meta["tasks"]]] * inputs.candidates


@pytest.mark.slow
def test_a_line_over_the_request_limit_is_refused_without_being_held(exported, ranker_binary):
    model_dir, _, _ = exported
    valid = (model_dir / "requests.jsonl").read_bytes().splitlines()[0]
    huge = b'{"request_id": "big", "user": {"ids": {"pad": [' + b"1," * 600_000 + b'1]}}, "candidates": []}'
    limit = len(valid) + 10
    answers = _run_ranker_bytes(ranker_binary, model_dir, b"\n".join([valid, huge, valid]) + b"\n",
                                "--max-request-bytes", str(limit))
    assert answers[1] == {"request_id": None, "error": f"request longer than {limit} bytes (--max-request-bytes)"}
    assert "ranked" in answers[0] and answers[2]["ranked"] == answers[0]["ranked"]


@pytest.mark.slow
def test_the_ranker_never_ranks_a_non_finite_score(exported, ranker_binary, tmp_path):
    """A model gone wrong (NaN for one candidate) gets an error answer, not a ranking sorted around a NaN."""
    model_dir, meta, _ = exported

    class NanForCandidateThree(torch.nn.Module):
        def __init__(self, n_tasks: int):
            super().__init__()
            self.n_tasks = n_tasks

        def forward(self, user_ids: torch.Tensor, user_dense: torch.Tensor, user_seq_ids: torch.Tensor,
                    user_seq_side: torch.Tensor, user_seq_lengths: torch.Tensor, candidate_user: torch.Tensor,
                    ids: torch.Tensor, dense: torch.Tensor, seq_ids: torch.Tensor, seq_side: torch.Tensor,
                    seq_lengths: torch.Tensor):
            score = torch.arange(ids.shape[0], dtype=torch.float32)
            if ids.shape[0] > 3:  # the ranker's warm-up sends 1 candidate: a model must answer that
                score[3] = float("nan")
            return torch.zeros(ids.shape[0], self.n_tasks), score

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text(json.dumps({**meta, "updatable": {"fingerprint": "nan", "tables": {},
                                                                        "dense": {}}}))  # no trained tensor
    torch.jit.script(NanForCandidateThree(len(meta["tasks"]))).save(str(broken / "model.pt"),
                                                                    _extra_files={"export_id": meta["export_id"]})
    line = (model_dir / "requests.jsonl").read_text().splitlines()[0]
    [answer] = run_ranker(ranker_binary, broken, [line])
    assert answer["error"] == "model error: non-finite score or probability for candidate 3", answer
    _, inputs = parse_request(line, RequestSchema(meta))
    probabilities, score = NanForCandidateThree(len(meta["tasks"]))(*inputs)
    with pytest.raises(ValueError, match="model error: non-finite score or probability for candidate 3"):
        rank("r", probabilities, score, meta["tasks"])


@pytest.mark.slow
def test_the_ranker_uses_one_intra_op_thread_unless_told(exported, ranker_binary):
    model_dir, _, _ = exported
    for flags, threads in (((), 1), (("--threads", "2"), 2)):
        result = subprocess.run([str(ranker_binary), "--model", str(model_dir), "--bench", str(model_dir / "requests.jsonl"),
                                 "--repeat", "1", "--warmup", "0", *flags], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        bench = json.loads(next(l for l in result.stdout.splitlines() if l.startswith("BENCH_JSON ")).split(" ", 1)[1])
        assert bench["threads"] == threads


@pytest.mark.slow
def test_an_incomplete_checkpoint_is_not_exported(exported, tiny_streams, tmp_path):
    """What a kill while saving leaves (no trainer_state.pt), and a shard cut short, are named."""
    _, _, log_dir = exported
    first = checkpoints(log_dir)[0]
    no_state, short_shard = tmp_path / "no_state", tmp_path / "short_shard"
    shutil.copytree(first, no_state)
    damage.drop(no_state / TRAINER_STATE)
    shutil.copytree(first, short_shard)
    shard = short_shard / "__1_0.distcp"
    damage.cut(shard)
    with pytest.raises(IncompleteCheckpointError, match=f"{no_state} is incomplete: {TRAINER_STATE} is missing"):
        run_export(export_cfg(tiny_streams, log_dir, tmp_path / "a", no_state))
    with pytest.raises(IncompleteCheckpointError, match=rf"{shard} is truncated: [\d,]+ bytes, the checkpoint's index"):
        run_export(export_cfg(tiny_streams, log_dir, tmp_path / "a", short_shard))
    assert not (tmp_path / "a").exists()


def test_a_model_with_the_wide_part_is_scored_with_its_biases_by_both_scorers(tiny_streams):
    """The per-room and per-author biases (model.bias_fields) add to every task's logit exactly the
    rows of the target's room and author, in training's forward, the per-candidate scorer and the
    request scorer's TorchScript alike."""
    manifest = tiny_streams.manifest(REALTIME)
    cfg = compose_config("train", [*job_paths(tiny_streams), "model.bias_fields=[item,author]"])
    torch.manual_seed(0)
    model = model_from_config(cfg, manifest, embedding_device="cpu").eval()
    tables = model.lookup.bias_ebc.embedding_bags
    assert float(tables["item_bias"].weight.abs().max()) == 0.0  # zero at the start
    batch = next(iter(make_loader(ShardDataset(tiny_streams.stream(FINAL), 64))))
    inputs = inputs_from_batch(batch, model)
    model_input = to_model_input(batch, model.gsu_names, model.seq_len, model.pooled_features)
    n_tasks, ids = len(manifest["tasks"]), model_id_features(model)
    with torch.no_grad():
        deep = model(model_input).logits  # biases all zero: the deep part alone
        for table in tables.values():
            table.weight.normal_()
        logits = model(model_input).logits
        item, author = batch.sparse["live_item"].values().long(), batch.sparse["author_id"].values().long()
        by_hand = deep + tables["item_bias"].weight[item, :n_tasks] + tables["author_bias"].weight[author, :n_tasks]
        torch.testing.assert_close(logits, by_hand, rtol=0, atol=1e-5)
        got, _ = CandidateScorer(model, ids)(*inputs)
        torch.testing.assert_close(got, torch.sigmoid(logits), rtol=0, atol=1e-6)

    user = OmegaConf.to_container(compose_config("export", job_paths(tiny_streams)).request_layout)
    meta = metadata(model, user, max_candidates=1000, training={"run_id": "wide"})
    layout = RequestLayout.of(model, user)
    reference, scripted = CandidateScorer(model, ids).eval(), to_torchscript(RequestScorer(model, layout))
    for request in request_scorer_cases(meta):
        with torch.no_grad():
            for e, g in zip(reference(*layout.join(request, ids, list(model.gsu_names))), scripted(*request)):
                torch.testing.assert_close(g, e, rtol=0, atol=TOLERANCE)

