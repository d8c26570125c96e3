"""The ranker's feature stage (serving/ranker/src/features) against `make streams`' features: for
every impression of a world, the features the stage assembles from the events published before it
equal the streams' (integers exactly, floats within 1e-6), on tiny and on a second world seed whose
events are published early and out of order (point in time); and the stage's answers to bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from data_pipelines.configured import build
from data_pipelines.contract import DENSE_FEATURES, GSU_NAMES, SEQUENCE_FIELDS, SPARSE_FEATURES
from data_pipelines.history_store import HistoryStore, HistoryStoreConfig
from data_pipelines.streams.build import build_features
from data_pipelines.streams.catalog import CatalogInputs, catalog_inputs, write_catalog
from data_pipelines.streams.features import FeatureColumns, FeatureSpec, Vocab, Vocabularies
from online.feature_lines import feed_lines, impression_queries
from online.state_events import world_state_events
from serving.binaries import FEATURE_TOOL
from tests.conftest import build_world, compose_config, job_paths

pytestmark = pytest.mark.slow  # needs the C++ build


@pytest.fixture(scope="module")
def feature_tool(ranker_binary) -> Path:
    return FEATURE_TOOL


def run_tool(tool: Path, catalog: Path, lines: list[str], *args: str) -> list[dict]:
    result = subprocess.run([str(tool), "--catalog", str(catalog), *args], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines()]


def streams_features(data, tmp: Path):
    """make streams' features of every impression of `data`, and the catalog of its vocabularies."""
    cfg = compose_config("streams", [*job_paths(data), "progress=false"])
    spec, history = build(cfg.features), instantiate(cfg.history)
    impressions = pd.read_parquet(data.canonical.live_impressions)
    features, vocab = build_features(data.canonical, impressions, HistoryStore.load(data.history), spec, progress=False)
    catalog = write_catalog(catalog_inputs(data, history, spec, vocab), tmp / "catalog")
    events = world_state_events(pd.read_parquet(data.canonical.lives), impressions,
                                pd.read_parquet(data.canonical.short_plays), spec.columns)
    return impressions, features, catalog, events


def assert_same_features(answers: list[dict], features, n: int) -> None:
    """Each answer (request id = the impression's row) against the streams' features of that row."""
    by_row = {int(a["request_id"]): a for a in answers}
    assert len(by_row) == n and not [a for a in answers if "error" in a or "event_error" in a]
    dense = np.zeros((n, len(DENSE_FEATURES)))
    for row in range(n):
        a = by_row[row]
        [candidate] = a["candidates"]
        ids = {**a["user"]["ids"], **candidate["ids"]}
        assert [ids[f] for f in SPARSE_FEATURES] == [int(features.sparse[f][row]) for f in SPARSE_FEATURES], row
        values = {**a["user"]["dense"], **candidate["dense"]}
        dense[row] = [values[f] for f in DENSE_FEATURES]
        sequences = {**a["user"]["sequences"], **candidate["sequences"]}
        for gsu in GSU_NAMES:
            expected, offsets = features.sequences[gsu], features.sequences[gsu].offsets
            for field in SEQUENCE_FIELDS:
                assert sequences[gsu][field] == expected.fields[field][offsets[row]:offsets[row + 1]].tolist(), \
                    (row, gsu, field)
    np.testing.assert_allclose(dense, features.dense.astype(np.float64), rtol=0, atol=1e-6)


def test_every_impression_of_tiny_gets_the_streams_features(feature_tool, tiny_world, tmp_path):
    impressions, features, catalog, events = streams_features(tiny_world, tmp_path)
    answers = run_tool(feature_tool, catalog, feed_lines(events, impression_queries(impressions)))
    assert_same_features(answers, features, len(impressions))
    # Not a vacuous match: histories, all five GSUs and the room counters are populated.
    assert max(a["history_events"] for a in answers) > 1000
    assert all(len(features.sequences[g].fields["item"]) > 10 * len(impressions) for g in ("short", "long", "mixed"))


def test_a_second_world_published_early_and_out_of_order_gets_the_same_features(feature_tool, tmp_path):
    """Point in time: every event is published up to 30 s before its time, in a shuffled order, so
    the state holds events at and after a request's time when it is asked; none may be used."""
    world = build_world(tmp_path / "data", ["world=tiny", "world.seed=5", "world.n_users=600"])
    impressions, features, catalog, events = streams_features(world, tmp_path)
    lead = np.random.default_rng(0).integers(0, 30_000, len(events))
    lines = feed_lines(events, impression_queries(impressions), lead_ms=lead)
    answers = run_tool(feature_tool, catalog, lines)
    assert_same_features(answers, features, len(impressions))
    # The schedule did publish the future first: some query came after events at or past its time.
    published = events.columns["ts"] - lead
    request_ts = np.sort(impressions["request_ts"].to_numpy())
    ahead = np.searchsorted(np.sort(published), request_ts) - np.searchsorted(np.sort(events.columns["ts"]), request_ts)
    assert ahead.max() > 10


# ---------------------------------------------------------------- a small hand-made world

HOUR = 3_600_000


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory) -> Path:
    """Photos 10, 11 (item rows 1, 2), lives 100, 101 (rows 3, 4), authors 7, 8, users 1, 2."""
    photo = Vocab(np.array([10, 11]))
    vocab = Vocabularies(user=Vocab(np.array([1, 2])), author=Vocab(np.array([7, 8])), photo=photo,
                         live=Vocab(np.array([100, 101]), offset=photo.size - 1), category=Vocab(np.array(["a", "b"])),
                         live_type=Vocab(np.array(["x"])))
    photo_q = np.array([[10, 0], [0, 10]], dtype=np.int16)
    live_q = np.array([[0, 1], [1, 0]], dtype=np.int16)
    spec = FeatureSpec(columns=FeatureColumns("category", "type", 0), gsu_length=2, max_pairs=10)
    return write_catalog(CatalogInputs(vocab, photo_q, live_q, HistoryStoreConfig(3, 5_000, 60_000), spec),
                         tmp_path_factory.mktemp("small") / "catalog")


def event(**fields) -> str:
    return json.dumps({"event": fields})


def query(request_ts: int, live_ids: list[int], user: int = 1, request_id: str = "q") -> str:
    return json.dumps({"query": {"request_id": request_id, "user_id": user, "request_ts": request_ts,
                                 "live_ids": live_ids}})


ROOMS = [event(type="room_start", ts=0, live=100, author=7, category="b", live_type="x"),
         event(type="room_start", ts=0, live=101, author=8, category="zz", live_type="x")]


def play(ts: int, photo: int, author: int = 7, watch_ms: int = 1_000, user: int = 1) -> str:
    return event(type="play", ts=ts, user=user, photo=photo, author=author, start_ts=ts - watch_ms, watch_ms=watch_ms)


def test_hand_computed_features_and_the_point_in_time_rule(feature_tool, small_catalog):
    t0 = 2 * HOUR
    lines = [*ROOMS,
             play(t0 - 120_000, 10, watch_ms=6_000),  # a long view (>= 5 s), author 7
             play(t0 - 60_000, 11, author=8),
             event(type="impression", ts=t0 - 40_000, user=2, live=100),
             event(type="click", ts=t0 - 40_000, user=2, live=100),
             event(type="impression", ts=t0 - 20_000, user=2, live=100),
             play(t0, 11),  # at the request's time: not before it, never used
             play(t0 + 5_000, 10),  # published early
             event(type="click", ts=t0 + 1_000, user=2, live=100),
             play(t0 - 90_000, 11, author=8),  # late, out of order: 90 s before the request, used
             query(t0, [100, 101])]
    [a] = run_tool(feature_tool, small_catalog, lines)
    u = a["user"]
    assert a["known_user"] and a["history_events"] == 3  # the plays at t0 and t0 + 5 s are not counted
    assert u["ids"] == {"user_id": 1, "hour": 3, "user_history_bucket": 3, "user_live_bucket": 1}
    assert u["dense"]["user_history_len"] == pytest.approx(np.log1p(3))
    # short: the latest first; gap buckets of 1, 1.5 and 2 minutes: floor(log2(x)) + 2
    assert u["sequences"]["short"] == {"item": [2, 2], "author": [2, 2], "gap": [2, 2], "watch": [2, 2],
                                       "domain": [1, 1]}
    assert u["sequences"]["mixed"]["item"] == [1]  # the one long view
    room, other = a["candidates"]
    assert room["ids"] == {"live_item": 3, "author_id": 1, "category": 2, "live_type": 1}
    assert other["ids"]["category"] == 0  # a category the catalog does not know: padding row
    d = room["dense"]
    assert d["room_viewers_now"] == pytest.approx(np.log1p(1))  # the click at t0 + 1 s is not counted
    assert d["room_clicks_30s"] == 0 and d["room_clicks_5min"] == pytest.approx(np.log1p(1))
    assert d["room_impressions_5min"] == pytest.approx(np.log1p(2)) and d["room_ctr_5min"] == pytest.approx(0.5)
    assert d["room_age_min"] == pytest.approx(np.log1p(120))
    # long: by the quantized dot product with live 100's (0, 1): photo 11 (0, 10) scores 10, photo 10
    # scores 0; the two plays of photo 11 tie and the more recent comes first.
    assert room["sequences"]["long"]["item"] == [2, 2]
    assert other["sequences"]["long"]["item"] == [1, 2]  # live 101 (1, 0): photo 10 first
    assert room["sequences"]["aidhard"]["item"] == [1]  # author 7's short videos
    assert other["sequences"]["aidhard"]["item"] == [2, 2]
    assert room["sequences"]["livelong"]["item"] == []


def test_a_history_keeps_the_latest_max_events(feature_tool, small_catalog):
    lines = [*ROOMS, *(play(HOUR + k * 1_000, 10 + k % 2) for k in range(5)), query(HOUR + 10_000, [100])]
    [a] = run_tool(feature_tool, small_catalog, lines)
    assert a["history_events"] == 3  # max_events
    assert a["user"]["sequences"]["short"]["item"] == [1, 2]


def test_bad_requests_and_events_are_answered_with_the_reason(feature_tool, small_catalog):
    t0 = HOUR
    lines = [*ROOMS, event(type="room_end", ts=t0 - 1, live=101), play(t0 - 5_000, 10),
             query(t0, [100], user=99, request_id="stranger"),
             query(t0, [555], request_id="unknown"),
             query(t0, [100, 101], request_id="ended"),
             query(t0 + 61_000, [100], request_id="ahead"),
             query(t0 - 70_000, [100], request_id="behind"),
             query(t0, [100] * 1001, request_id="many"),
             event(type="purchase", ts=1),
             event(type="play", ts="soon", user=1, photo=10, author=7, start_ts=0, watch_ms=1),
             event(type="play", ts=t0, user=1, photo=10, author=7, start_ts=t0 - 10, watch_ms=-5),
             event(type="click", ts=t0, user=1),
             play(t0 + 4 * HOUR, 10),  # a garbled time: it would move the clock past every request
             "{not json",
             query(t0, [100], request_id="after")]
    out = run_tool(feature_tool, small_catalog, lines, "--max-event-lead-ms", "3600000")
    by_id = {a.get("request_id"): a for a in out if "request_id" in a}
    stranger = by_id["stranger"]  # an unknown user: served, with an empty history
    assert not stranger["known_user"] and stranger["history_events"] == 0 and stranger["user"]["ids"]["user_id"] == 0
    assert "live 555 has not started" in by_id["unknown"]["error"] and "live_ids[0]" in by_id["unknown"]["error"]
    assert "live_ids[1]: live 101 ended at 3599999" in by_id["ended"]["error"]
    assert "request_ts 3661000 is 61001 ms ahead of the feature state's clock 3599999" in by_id["ahead"]["error"]
    assert "the state has not caught up" in by_id["ahead"]["error"]
    assert "request_ts 3530000 is 69999 ms behind the feature state's clock 3599999" in by_id["behind"]["error"]
    assert "1001 candidates, at most 1000" in by_id["many"]["error"]
    errors = [a["event_error"] for a in out if "event_error" in a]
    assert errors == ["unknown event type 'purchase'", "field 'ts' is not an integer: 'soon'",
                      "watch_ms -5 is not in [0, 2^31)", "missing field 'live'",
                      "ts 18000000 is 14400001 ms ahead of the feature state's clock 3599999 (at most 3600000)",
                      "bad JSON"]
    assert by_id["after"]["history_events"] == 1  # the refused events changed nothing


def test_a_damaged_catalog_is_refused(feature_tool, small_catalog, tmp_path):
    damaged = tmp_path / "catalog"
    damaged.mkdir()
    (damaged / "catalog.json").write_text((small_catalog / "catalog.json").read_text())
    blob = bytearray((small_catalog / "catalog.bin").read_bytes())
    blob[3] ^= 0xFF
    (damaged / "catalog.bin").write_bytes(bytes(blob))
    result = subprocess.run([str(feature_tool), "--catalog", str(damaged)], input="", capture_output=True, text=True)
    assert result.returncode == 1 and "CRC-32 does not match catalog.json" in result.stderr


def test_an_exit_whose_click_has_not_arrived_counts_no_negative_viewers(feature_tool, small_catalog):
    """Events of one room arrive over several partitions: an exit may come before its click. The room's
    viewers are then 0, not a negative count (whose log1p would reach the model as a NaN)."""
    t0 = HOUR
    lines = [*ROOMS, event(type="exit", ts=t0 - 10_000, user=2, live=100, author=7, start_ts=t0 - 70_000,
                           watch_ms=60_000, clicked=1), query(t0, [100])]
    [a] = run_tool(feature_tool, small_catalog, lines)
    assert a["candidates"][0]["dense"]["room_viewers_now"] == 0
