"""The ranker as a network service, on a tiny trained model exported in both formats: the gRPC
server ranks as the JSON tool does, refuses malformed requests with the JSON tool's messages, batches
concurrent requests without mixing their rows, counts what it served, reloads under load without
dropping a call, and shuts down gracefully; the AOTInductor package scores as eager and TorchScript
do, in Python and in C++. One AOTInductor compile (~1 min) serves the whole module."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from data_pipelines.history_store import HistoryStore
from serving.client import SERVICE_NAME, RankError, RankerClient, request_to_proto
from export.job import rebuild_model, run_export
from export.request_scorer import RequestLayout
from export.requests import RequestSchema, parse_request
from export.scorer import CandidateScorer, model_id_features
from serving.server_process import RankerServer
from tests import prometheus_names
from tests.conftest import checkpoints, export_cfg
from tests.corpus.requests import request_cases
from tests.test_export import corpus_request, request_scorer_cases

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def both(tiny_streams, tiny_training, tmp_path_factory):
    """The newest checkpoint of the tiny run exported with format=both: (dir, model.json, log dir)."""
    _, log_dir = tiny_training
    artifacts = tmp_path_factory.mktemp("artifacts")
    report, meta = run_export(export_cfg(tiny_streams, log_dir, artifacts, None, "name=both", "format=both"))
    return report.out_dir, meta, log_dir


def sample_requests(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "requests.jsonl").read_text().splitlines()]


def json_tool(binary: Path, model_dir: Path, requests: list[dict], fmt: str = "torchscript") -> list[dict]:
    """The JSON-lines ranker's answers to `requests`."""
    result = subprocess.run([str(binary), "--model", str(model_dir), "--format", fmt, "--reload-check-ms", "0"],
                            input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and f", {fmt}," in result.stderr, result.stderr  # it says what it loaded
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(requests)
    return answers


def as_float32(answer: dict) -> list[tuple]:
    """A ranking compared exactly: the JSON tool writes each float32 in its shortest form, the proto
    carries the float32 itself."""
    return [(r["candidate"], np.float32(r["score"]), {k: np.float32(v) for k, v in r["probabilities"].items()})
            for r in answer["ranked"]]


def test_the_model_json_lists_both_files_and_aoti_matches_eager_and_torchscript_in_python(both, tiny_streams):
    model_dir, meta, _ = both
    assert meta["files"] == {"torchscript": "model.pt", "aoti": "model.pt2"}
    assert all((model_dir / f).is_file() for f in meta["files"].values())
    assert meta["validation"]["by_format"]["aoti"]["max_abs_diff_score"] <= TOLERANCE
    model, _, _ = rebuild_model(Path(meta["training"]["checkpoint"]), export_cfg(tiny_streams, Path("."), Path("."), None))
    ids = model_id_features(model)
    eager = CandidateScorer(model, ids).eval()
    layout = RequestLayout.of(model, meta["request_layout"]["user"])
    scripted = torch.jit.load(str(model_dir / "model.pt"))
    package = torch._inductor.aoti_load_package(str(model_dir / "model.pt2"))
    schema = RequestSchema(meta)
    samples = [parse_request(json.dumps({**request, "candidates": request["candidates"][:n]}), schema)[1]
               for request in sample_requests(model_dir)
               for n in (1, len(request["candidates"]))]  # the candidate axis is dynamic, down to one
    for inputs in [*samples, *request_scorer_cases(meta)]:  # and 1 to 200 candidates, users' sequences of any length
        for sent in (inputs, inputs.trimmed()):
            with torch.no_grad():
                expected = eager(*layout.join(sent, ids, list(model.gsu_names)))
                for got in (scripted(*sent), package(*sent)):
                    for e, g in zip(expected, got):
                        torch.testing.assert_close(g, e, rtol=0, atol=TOLERANCE)


def test_the_cpp_ranker_scores_aoti_as_torchscript(both, ranker_binary):
    model_dir, _, _ = both
    answers = {fmt: json_tool(ranker_binary, model_dir, sample_requests(model_dir), fmt) for fmt in ("torchscript", "aoti")}
    for ts, ao in zip(answers["torchscript"], answers["aoti"]):
        ts_scores = {r["candidate"]: r["score"] for r in ts["ranked"]}
        ao_scores = {r["candidate"]: r["score"] for r in ao["ranked"]}
        assert ts_scores.keys() == ao_scores.keys()
        assert max(abs(ts_scores[c] - ao_scores[c]) for c in ts_scores) <= TOLERANCE


@pytest.mark.parametrize("fmt", ["torchscript", "aoti"])
def test_grpc_ranks_as_the_json_tool_for_the_same_requests(both, ranker_binary, fmt):
    model_dir, _, _ = both
    requests = sample_requests(model_dir)
    requests.append({**requests[0], "request_id": None, "candidates": requests[0]["candidates"][:1]})
    expected = json_tool(ranker_binary, model_dir, requests, fmt)
    with RankerServer(model_dir, "--format", fmt, "--reload-check-ms", "0") as server:
        got = [server.client.rank(r) for r in requests]
    for e, g in zip(expected, got, strict=True):
        assert g["request_id"] == e["request_id"] and g["model_generation"] == e["model_generation"] == 1
        assert as_float32(g) == as_float32(e)


def test_malformed_requests_get_invalid_argument_with_the_json_tools_messages(both, ranker_binary):
    """Every corpus request the proto can carry, sent both ways: the same message. Not sendable: bytes
    and JSON syntax, a fraction where the proto holds an integer, a number beyond the double range,
    and no `candidates` at all (a repeated field has no presence: absent is empty)."""
    model_dir, meta, _ = both
    sendable = []
    for case in request_cases(corpus_request(model_dir), meta):
        try:
            request = json.loads(case.text)
            json.dumps(request, allow_nan=False)  # 1e400 reads as inf, which JSON cannot write back
            request_to_proto(request)
            if "candidates" not in request:
                continue
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            continue
        sendable.append((case.name, request))
    # A defect of the text alone (a key given twice) is gone once the request is read: what remains
    # is the requests the JSON tool still refuses when they are written back as JSON.
    answers = json_tool(ranker_binary, model_dir, [r for _, r in sendable])
    refused_as_json = [(name, request, a["error"]) for (name, request), a in zip(sendable, answers) if "error" in a]
    assert len(refused_as_json) >= 10, [n for n, _, _ in refused_as_json]
    with RankerServer(model_dir, "--format", "torchscript", "--reload-check-ms", "0") as server:
        for name, request, error in refused_as_json:
            with pytest.raises(RankError) as refused:
                server.client.rank(request)
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, name
            assert refused.value.message == error, name
        assert "ranked" in server.client.rank(sample_requests(model_dir)[0])  # still serving


def test_concurrent_requests_of_different_sizes_each_get_their_own_candidates(both, ranker_binary):
    """Interleaved requests of 1..N candidates, sent at once into a server that waits 20 ms to merge:
    each answer holds its own candidates with the JSON tool's scores for that request alone (within
    1e-5: a merged forward multiplies matrices of another shape, so the last bits may differ), and
    forwards did merge requests."""
    model_dir, _, _ = both
    base = sample_requests(model_dir)
    requests = []
    for i in range(24):
        source = base[i % len(base)]
        n = 1 + (7 * i) % len(source["candidates"])
        requests.append({**source, "request_id": f"mix-{i}", "candidates": source["candidates"][-n:]})
    expected = json_tool(ranker_binary, model_dir, requests)
    with RankerServer(model_dir, "--format", "torchscript", "--max-delay-us", "20000", "--reload-check-ms", "0") as server:
        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(server.client.rank, requests))
        metrics = server.metrics()
    for r, e, g in zip(requests, expected, got):
        assert g["request_id"] == r["request_id"] and len(g["ranked"]) == len(r["candidates"])
        alone = {x["candidate"]: x for x in e["ranked"]}
        merged = {x["candidate"]: x for x in g["ranked"]}
        assert merged.keys() == alone.keys() == set(range(len(r["candidates"])))
        for c, x in merged.items():
            assert abs(x["score"] - alone[c]["score"]) <= TOLERANCE, (r["request_id"], c)
            assert all(abs(p - alone[c]["probabilities"][t]) <= TOLERANCE for t, p in x["probabilities"].items())
    forwards = metrics["ranker_batch_requests_count"]
    assert forwards < len(requests)  # some forwards served several requests
    assert metrics["ranker_batch_requests_sum"] == len(requests)  # every request in exactly one forward
    assert metrics["ranker_batch_candidates_sum"] == sum(len(r["candidates"]) for r in requests)


def test_health_metrics_and_graceful_shutdown(both):
    """SERVING once loaded; /metrics counts what was sent; SIGTERM: NOT_SERVING while draining, the
    call in flight still answered, exit status 0."""
    model_dir, _, _ = both
    requests = sample_requests(model_dir)
    bad = {**requests[0], "candidates": []}
    server = RankerServer(model_dir, "--format", "torchscript", "--reload-check-ms", "0", "--drain-ms", "1500")
    try:
        assert server.client.health() == "SERVING" and server.client.health(SERVICE_NAME) == "SERVING"
        assert server.http_get("/healthz") == (200, "SERVING\n")
        assert server.http_get("/nothing")[0] == 404
        for r in requests * 2:
            server.client.rank(r)
        for _ in range(3):
            with pytest.raises(RankError):
                server.client.rank(bad)
        m = server.metrics()
        assert m['ranker_requests_total{code="OK"}'] == 2 * len(requests)
        assert m['ranker_requests_total{code="INVALID_ARGUMENT"}'] == 3
        assert m["ranker_request_duration_seconds_count"] == 2 * len(requests) + 3
        assert m['ranker_request_duration_seconds_bucket{le="+Inf"}'] == 2 * len(requests) + 3
        assert m["ranker_batch_candidates_sum"] == 2 * sum(len(r["candidates"]) for r in requests)
        assert m["ranker_model_generation"] == 1 and m['ranker_reloads_total{result="success"}'] == 0
        text = server.http_get("/metrics")[1]
        assert prometheus_names.problems(text) == []  # Prometheus' naming conventions, promtool's rules
        if shutil.which("promtool"):
            checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout + checked.stderr

        server.proc.send_signal(signal.SIGTERM)
        seen, answered = set(), 0
        deadline = time.monotonic() + 1.2
        with RankerClient(server.grpc_address) as probe:
            while time.monotonic() < deadline:
                seen.add(probe.health(SERVICE_NAME))
                if "NOT_SERVING" in seen:
                    probe.rank(requests[0])  # still answered while draining
                    answered += 1
                    break
        assert "NOT_SERVING" in seen and answered == 1
        assert server.http_get("/healthz")[0] == 503
        assert server.proc.wait(timeout=60) == 0
        assert "stopped" in server.stderr
    finally:
        server.kill()


def test_a_reload_under_concurrent_load_drops_nothing(both, tiny_streams, tmp_path):
    """Four clients keep calling while a re-export of another checkpoint lands: every call answered,
    generations only go up, and afterwards the new model's scores."""
    _, _, log_dir = both
    first, newest = checkpoints(log_dir)[0], checkpoints(log_dir)[-1]
    run_export(export_cfg(tiny_streams, log_dir, tmp_path, first, "name=serving"))
    serving = tmp_path / "serving"
    request = sample_requests(serving)[0]
    failures, generations, stop = [], [[] for _ in range(4)], threading.Event()
    with RankerServer(serving, "--workers", "2", "--reload-check-ms", "50") as server:
        before = server.client.rank(request)

        def keep_calling(i: int) -> None:
            with RankerClient(server.grpc_address) as client:
                while not stop.is_set():
                    try:
                        generations[i].append(client.rank(request)["model_generation"])
                    except RankError as e:
                        failures.append(e)

        threads = [threading.Thread(target=keep_calling, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        run_export(export_cfg(tiny_streams, log_dir, tmp_path, newest, "name=serving"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(g and g[-1] == 2 for g in generations):
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        after = server.client.rank(request)
        m = server.metrics()
    assert not failures
    assert all(g == sorted(g) and g[-1] == 2 and set(g) <= {1, 2} for g in generations)
    assert m['ranker_reloads_total{result="success"}'] == 1 and m["ranker_model_generation"] == 2
    assert after["model_generation"] == 2 and as_float32(after) != as_float32(before)
    scripted = torch.jit.load(str(serving / "model.pt"))
    _, inputs = parse_request(json.dumps(request), RequestSchema(json.loads((serving / "model.json").read_text())))
    with torch.no_grad():
        _, score = scripted(*inputs)
    got = torch.zeros_like(score)
    for r in after["ranked"]:
        got[r["candidate"]] = r["score"]
    torch.testing.assert_close(got, score, rtol=0, atol=TOLERANCE)


def test_the_server_refuses_bad_flags_and_a_missing_export_with_clear_errors(ranker_binary, tmp_path):
    server = ranker_binary.parent / "ranker_server"
    for flags, message in ((["--model", str(tmp_path), "--workers", "0"], "--workers: must be at least 1"),
                           (["--model", str(tmp_path), "--port", "x"], "--port: needs a number, got x"),
                           (["--port", "0"], "--model is required"),
                           (["--model", str(tmp_path), "--features-catalog", str(tmp_path)],
                            "--features-catalog needs --events-broker"),
                           (["--model", str(tmp_path), "--log-served"], "--log-served needs --events-broker"),
                           (["--model", str(tmp_path), "--features-catalog", str(tmp_path), "--events-broker", "nohost"],
                            "--events-broker must be HOST:PORT, got 'nohost'")):
        result = subprocess.run([str(server), *flags], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (flags, result.stderr)
    with pytest.raises(RuntimeError, match=f"{tmp_path}/model.json: cannot open"):
        RankerServer(tmp_path)


def test_the_naming_rules_flag_what_promtool_flags():
    """The rules applied to the ranker's /metrics above, on a hand-made exposition: each name breaks
    the one rule promtool (2.42) reports for it, and a clean histogram and counter break none."""
    text = "\n".join([
        "# HELP ranker_push_data_time_ms The data clock.", "# TYPE ranker_push_data_time_ms gauge",
        "ranker_push_data_time_ms 5",
        "# TYPE pushes counter", "pushes 1",
        "# HELP wait_milliseconds Waiting.", "# TYPE wait_milliseconds gauge", "wait_milliseconds 1",
        "# HELP queue_total Queued now.", "# TYPE queue_total gauge", "queue_total 2",
        "# HELP requests_total Calls.", "# TYPE requests_total counter", 'requests_total{code="OK"} 3',
        "# HELP latency_seconds Latency.", "# TYPE latency_seconds histogram", 'latency_seconds_bucket{le="+Inf"} 2',
        "latency_seconds_sum 0.3", "latency_seconds_count 2", "# HELP bytesRead Read.", "# TYPE bytesRead gauge",
        "bytesRead 1", ""])
    assert sorted(prometheus_names.problems(text)) == sorted([
        "ranker_push_data_time_ms: metric names should not contain abbreviated units",
        "pushes: no help text", 'pushes: counter metrics should have "_total" suffix',
        'wait_milliseconds: use base unit "seconds" instead of "milliseconds"',
        'queue_total: non-counter metrics should not have "_total" suffix',
        "bytesRead: metric names should be written in 'snake_case' not 'camelCase'"])


# ---------------------------------------------------------------- the ids-only form

def ids_requests(data, count: int = 12, per_request: int = 6) -> tuple[list[tuple[int, dict]], object]:
    """Ids-only requests at the times of `count` impressions spread over the first half of the tiny
    world, each for the impression's user with its room and the other rooms live then; and the world's
    state events up to an hour after the last request (all in the future of some request)."""
    import pandas as pd

    from data_pipelines.streams.features import FeatureSpec
    from online.state_events import world_state_events

    impressions = pd.read_parquet(data.canonical.live_impressions).sort_values("request_ts", kind="stable")
    lives = pd.read_parquet(data.canonical.lives)
    spec = FeatureSpec.of_manifest(data.manifest("final"))
    events = world_state_events(lives, impressions, pd.read_parquet(data.canonical.short_plays), spec.columns)
    asked = []
    for k, row in enumerate(impressions.iloc[np.linspace(len(impressions) // 10, len(impressions) // 2, count,
                                                         dtype=int)].itertuples()):
        t = int(row.request_ts)
        live = lives[(lives["start_ts"] < t) & (lives["end_ts"] > t) & (lives["live_id"] != row.live_id)]
        candidates = [int(row.live_id), *live["live_id"].head(per_request - 1).astype(int)]
        asked.append((t, {"request_id": f"ids-{k}", "ids": {"user_id": int(row.user_id), "request_ts": t,
                                                             "live_ids": candidates}}))
    return asked, events.until(max(t for t, _ in asked) + 3_600_000)


def full_form(features: dict, meta: dict, request_id: str) -> dict:
    """The full-feature request of what the feature stage assembled (ranker_features' answer), split
    between the user and the candidates as the export's request layout says."""
    user_side = meta["request_layout"]["user"]
    user = features["user"]
    merged = [{section: {**user[section], **c[section]} for section in ("ids", "dense", "sequences")}
              for c in features["candidates"]]
    own = {section: set(user_side[section]) for section in ("ids", "dense", "sequences")}
    return {"request_id": request_id,
            "user": {section: {n: v for n, v in merged[0][section].items() if n in own[section]}
                     for section in own},
            "candidates": [{section: {n: v for n, v in c[section].items() if n not in own[section]} for section in own}
                           for c in merged]}


@pytest.fixture(scope="module")
def ids_only(both, tiny_streams, ranker_binary):
    """The JSON ranker's answers to ids-only requests fed with the tiny world's events on time, and
    the full-feature requests of the same features (from ranker_features): (requests, answers, full)."""
    from online.feature_lines import feed_lines
    from serving.binaries import FEATURE_TOOL

    model_dir, meta, _ = both
    asked, events = ids_requests(tiny_streams)
    catalog = str(tiny_streams.feature_catalog)
    lines = feed_lines(events, [(t, json.dumps(r)) for t, r in asked])
    # The same feed for ranker_features: each request's line replaced by its query.
    queries = {json.dumps(r): json.dumps({"query": {"request_id": r["request_id"], "user_id": r["ids"]["user_id"],
                                                    "request_ts": t, "live_ids": r["ids"]["live_ids"]}})
               for t, r in asked}
    result = subprocess.run([str(ranker_binary), "--model", str(model_dir), "--format", "torchscript",
                             "--reload-check-ms", "0", "--features-catalog", catalog],
                            input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    features = subprocess.run([str(FEATURE_TOOL), "--catalog", catalog],
                              input="\n".join(queries.get(line, line) for line in lines) + "\n",
                              capture_output=True, text=True, timeout=300)
    full = [full_form(json.loads(line), meta, r["request_id"]) for line, (_, r) in
            zip(features.stdout.splitlines(), asked)]
    return [r for _, r in asked], answers, full, events


def test_an_ids_only_request_ranks_as_the_full_feature_form_of_the_features_assembled(both, ranker_binary, ids_only):
    model_dir, _, _ = both
    requests, answers, full, _ = ids_only
    assert [a.get("request_id") for a in answers] == [r["request_id"] for r in requests], answers[:2]
    expected = json_tool(ranker_binary, model_dir, full)
    for r, got, want in zip(requests, answers, expected):
        assert len(got["ranked"]) == len(r["ids"]["live_ids"]) > 1
        assert as_float32(got) == as_float32(want), r["request_id"]
    # The wire: 200 candidate ids fit in well under 4 KB (the full-feature form: ~180 KB).
    wide = request_to_proto({"request_id": "r", "ids": {"user_id": 10**6, "request_ts": 1_700_000_000_000,
                                                        "live_ids": list(range(10**9, 10**9 + 200))}})
    assert len(wide.SerializeToString()) <= 4096


def test_grpc_serves_ids_only_requests_from_the_events_streams_and_rebuilds_its_state_on_restart(both, tiny_streams,
                                                                                                 ids_only):
    """Every event on the broker at once (published before the requests' times): the server's state
    is rebuilt from the streams before SERVING, and answers the requests as the JSON tool did with
    the events fed on time (point in time); killed and started again, it answers the same."""
    from online.broker import BrokerServer, Producer, connect

    model_dir, meta, _ = both
    requests, answers, full, events = ids_only
    with BrokerServer(fsync="everysec") as broker:
        r = connect(broker.url)
        Producer(r).send_keyed(events.broker_entries(partitions=2))
        flags = ["--format", "torchscript", "--reload-check-ms", "0", "--features-catalog",
                 str(tiny_streams.feature_catalog), "--events-broker", f"127.0.0.1:{broker.port}",
                 "--event-partitions", "2", "--feature-tolerance-ms", str(10**12), "--log-served"]
        for attempt in range(2):
            with RankerServer(model_dir, *flags) as server:
                published = len(events) + 3 * attempt  # the second server also finds the room and clocks below
                assert f"feature state rebuilt from {published} events (0 quarantined)" in server.stderr
                # Every interaction published, and nothing else, is in the users' histories.
                published_interactions = int((HistoryStore.load(tiny_streams.history).ts <= events.columns["ts"].max()).sum())
                assert f"{published_interactions} history events" in server.stderr
                for request, expected in zip(requests, answers):
                    assert as_float32(server.client.rank(request)) == as_float32(expected), request["request_id"]
                assert server.metrics()['ranker_state_events_total{outcome="applied"}'] == published
                ahead = {"ids": {**requests[0]["ids"], "request_ts": 10**15}}  # the state has not caught up: retry
                with pytest.raises(RankError) as refused:
                    server.client.rank(ahead)
                assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "not caught up" in refused.value.message
                if attempt == 1:
                    break
                # The feed follows the streams: a room started now can be asked for a moment later.
                now = int(events.columns["ts"].max())
                r.xadd("events.1", {b"type": b"room_start", b"ts": str(now + 1).encode(), b"live": b"999999",
                                    b"author": b"1", b"category": b"x", b"live_type": b"y",
                                    b"pub": str(int(time.time() * 1000)).encode()})  # its publication, wall ms
                # Clock marks: once a partition carries one, a request is answered only as far as every
                # partition is delivered — here partition 1 (the room's) is, partition 0 not yet.
                r.xadd("events.1", {b"type": b"clock", b"ts": str(now + 1_000).encode()})
                ask = {"request_id": "new", "ids": {"user_id": requests[0]["ids"]["user_id"], "live_ids": [999999],
                                                    "request_ts": now + 1_000}}
                deadline = time.monotonic() + 10
                while True:
                    with pytest.raises(RankError) as lagging:
                        server.client.rank(ask)
                    if "lowest clock mark" in lagging.value.message:
                        break
                    assert "live 999999 has not started" in lagging.value.message and time.monotonic() < deadline
                    time.sleep(0.05)
                assert lagging.value.code == grpc.StatusCode.UNAVAILABLE
                r.xadd("events.0", {b"type": b"clock", b"ts": str(now + 1_000).encode()})
                del ask["ids"]["request_ts"]  # absent: as far as the state can answer, the marks' time
                while True:
                    try:
                        assert len(server.client.rank(ask)["ranked"]) == 1
                        break
                    except RankError as e:  # until the room's start and partition 0's mark are read
                        assert ("live 999999 has not started" in e.message or "lowest clock mark" in e.message) \
                            and time.monotonic() < deadline, e.message
                        time.sleep(0.05)
                lag = server.metrics()  # the one entry with a publication time: applied within the test's wait
                assert lag["ranker_state_event_lag_seconds_count"] == 1 and 0 <= lag["ranker_state_event_lag_seconds_sum"] < 10
                while server.metrics()['ranker_served_log_total{outcome="written"}'] < len(requests) + 1:
                    assert time.monotonic() < deadline + 10  # the log is written off the request path
                    time.sleep(0.05)
                server.kill()  # a crash: the next server rebuilds its state from the streams
        # Every answered ids-only request's features were logged, by the version that answered, on
        # the user's partition: the features the model scored, the features_json of ranker_features.
        served = {}
        for p in range(2):
            for _, f in r.xrange(f"served.{p}"):
                served.setdefault(f[b"request"].decode(), []).append((p, f))
        logged = served[requests[0]["request_id"]]
        assert len(logged) == 2  # one per server: both answered it
        for request, features in zip(requests, full):
            for p, f in served[request["request_id"]]:
                assert p == request["ids"]["user_id"] % 2 and int(f[b"user"]) == request["ids"]["user_id"]
                assert f[b"export"].decode() == json.loads((model_dir / "model.json").read_text())["export_id"]
                got = json.loads(f[b"features"])
                assert full_form(got, meta, request["request_id"]) == features, request["request_id"]
        assert "new" in served


def test_bytes_that_do_not_parse_get_invalid_argument_in_both_forms(both, ranker_binary):
    """Checked on a ranker without a feature state (the message is read before either form is looked
    at); the same ranker refuses an ids-only request, and the JSON tool a request in both forms (the
    engine's rule: the same for both front ends)."""
    model_dir, _, _ = both
    full = request_to_proto(sample_requests(model_dir)[0]).SerializeToString()
    ids = request_to_proto({"ids": {"user_id": 1, "live_ids": [1, 2, 3]}}).SerializeToString()
    garbage = {"truncated full-feature form": full[: len(full) // 2],
               "truncated ids-only form": ids[:-2],
               "random bytes": bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)),
               "a runaway varint": b"\x08" + b"\xff" * 12}
    with RankerServer(model_dir, "--format", "torchscript", "--reload-check-ms", "0") as server:
        channel = grpc.insecure_channel(server.grpc_address)
        raw = channel.unary_unary("/moment_cross.ranker.v1.Ranker/Rank")  # bytes in, bytes out
        for name, payload in garbage.items():
            with pytest.raises(grpc.RpcError) as refused:
                raw(payload, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "do not parse as a moment_cross.ranker.v1.RankRequest" in refused.value.details(), name
        with pytest.raises(RankError) as refused:
            server.client.rank({"ids": {"user_id": 1, "live_ids": [1]}})
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and "no feature state" in refused.value.message
        assert "ranked" in server.client.rank(sample_requests(model_dir)[0])  # still serving
        channel.close()
    [answer] = json_tool(ranker_binary, model_dir, [{**sample_requests(model_dir)[0], "ids": {"user_id": 1, "live_ids": [1]}}])
    assert answer["error"] == "a request is ids-only (ids) or full-feature (user, candidates), not both"
