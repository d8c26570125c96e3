"""Replay: no sample trains the model before it was reported, every impression is scored once per
push interval by the model pushed last before its request, the oracle and frozen runs learn what
they should, and the report adds up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from data_pipelines.contract import DENSE_FEATURES, GSU_NAMES, NEG, POS, lengths_key, sequence_key
from data_pipelines.dataset import FAST_SLOW, FINAL
from recsys.data import ShardDataset
from data_pipelines.micro_batch import concat_arrays
from recsys.replay.evaluation import load_evaluation
from recsys.replay.job import run_replay
from recsys.replay.figures import aggregate, build_report, group_metrics
from recsys.replay.report import markdown
from recsys.replay.runs import oracle_samples, without_room_state
from recsys.learning.sources import ReportedSamples
from recsys.replay.timeline import step_edges
from tests.conftest import compose_config, job_paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class OrderLog:
    """Records scoring and training events in the order the replay makes them."""

    def __init__(self):
        self.events: list[tuple] = []

    def scored(self, target: str, push_every_ms: int, pushed_at_ms: int, request_ts: np.ndarray) -> None:
        self.events.append(("scored", push_every_ms, pushed_at_ms, request_ts.copy(), target))

    def trained(self, report_ts: np.ndarray, closed_at_ms: int) -> None:
        self.events.append(("trained", report_ts.copy(), closed_at_ms))


UNTIL_S = 6 * 3600  # the tiny world's first six of its twelve hours: its evening peak's start, and half the time


@pytest.mark.slow
def test_replay_serves_each_impression_with_the_model_pushed_last_before_its_request(tiny_streams, tmp_path):
    push_s, max_wait_s = [60, 600], 120
    cfg = compose_config("replay", [*job_paths(tiny_streams), f"paths.reports_dir={tmp_path}", "replay.seeds=[0]",
                                    "replay.progress=false", "replay.streams=[realtime,frozen]",
                                    "replay.step_s=60", f"learner.max_wait_s={max_wait_s}",
                                    f"replay.push_every_s=[{push_s[0]},{push_s[1]}]", "replay.ranking.requests=400",
                                    f"replay.until_s={UNTIL_S}"])
    observer = OrderLog()
    report = run_replay(cfg, observer=observer)
    final = tiny_streams.manifest(FINAL)
    request_ts = pd.read_parquet(tiny_streams.canonical.live_impressions)["request_ts"].to_numpy()
    replayed = int((request_ts < request_ts.min() + UNTIL_S * 1000).sum())  # replay.until_s: those requested then
    assert 0 < replayed < final["samples"]

    # The log holds the realtime run, then the frozen one; each starts again at the first edge.
    first_edge = min(e[2] for e in observer.events if e[0] == "scored")
    starts = [i for i, e in enumerate(observer.events)
              if e[0] == "scored" and e[2] == first_edge and e[1] == 60_000 and e[4] == "impressions"]
    assert len(starts) == 2
    for run, (a, b) in zip(["realtime", "frozen"], [(starts[0], starts[1]), (starts[1], len(observer.events))]):
        events = observer.events[a:b]
        closed = [e[2] for e in events if e[0] == "trained"]
        assert closed == sorted(closed) and len(closed) > 0
        scored = {(target, p * 1000): 0 for target in ("impressions", "candidates") for p in push_s}
        trained_so_far: list[int] = []
        for i, event in enumerate(events):
            if event[0] == "trained":
                _, report_ts, closed_at = event
                assert np.all(np.diff(report_ts) >= 0) and report_ts.max() <= closed_at  # never before reported
                assert closed_at <= report_ts.min() + max_wait_s * 1000  # nor later than max_wait after
                trained_so_far.append(closed_at)
                continue
            _, p, pushed_at, request_ts, target = event
            # The push is the last one at or before each of these requests...
            assert pushed_at <= request_ts.min()
            assert pushed_at == first_edge or pushed_at % p == 0
            assert request_ts.max() < (pushed_at // p + 1) * p
            # ...and the model it serves learned exactly the batches closed by then.
            assert all(c <= pushed_at for c in trained_so_far)
            later = next((e for e in events[i + 1:] if e[0] == "trained"), None)
            # (a full batch whose last sample came at the push itself was not visible yet)
            assert later is None or later[2] > pushed_at or later[1].max() >= pushed_at
            scored[target, p] += len(request_ts)
        # Every impression and every candidate once per interval.
        assert scored == {(t, p * 1000): n for t, n in (("impressions", replayed),
                                                         ("candidates", report["config"]["ranking"]["candidates"]))
                          for p in push_s}
        if run == "frozen":  # nothing reported after the first quarter of the timeline is learned
            requests = np.concatenate([e[3] for e in events if e[0] == "scored" and e[4] == "impressions"])
            edges = step_edges(int(requests.min()), int(requests.max()), 60_000)
            stop = edges[0] + 0.25 * (edges[-1] - edges[0])
            assert max(e[1].max() for e in events if e[0] == "trained") < stop

    # The report has the shape the README promises, and its files exist.
    summary = report["summary"]
    assert set(summary["push_interval_auc_ctr"]["realtime"]) == {"60", "600"}
    assert set(summary["highlight_auc_ctr"]) == {"realtime", "frozen"}
    for key in ("catch_latency_s_median", "share_caught", "normalized_top1_clicks", "ranking_catch_latency_s_median"):
        assert set(summary[key]) == {"realtime", "frozen"}
    assert set(summary["highlight_top1_share"]) == {"realtime", "frozen", "truth_optimal"}
    assert report["config"]["ranking"]["requests"] == 400
    for run in ("realtime", "frozen"):  # between a random ranking (0) and the truth's (1)
        assert -0.5 < summary["normalized_top1_clicks"][run] < 1.0
    overall = report["runs"]["realtime"]["push"]["60"]["overall"]
    assert set(overall) == {"auc", "auc_std", "gauc", "gauc_std", "logloss", "logloss_std"}
    assert set(overall["auc"]) == {"ctr", "lvtr", "ltr", "cmtr", "gtr"}
    assert 0.0 < overall["auc"]["ctr"] < 1.0
    assert report["impressions"]["light_users"] + report["impressions"]["heavy_users"] == replayed
    for name in ("replay.json", "replay.md", "replay_push_interval.png", "replay_calibration.png",
                 "replay_catch_latency.png"):
        assert (tmp_path / name).stat().st_size > 0

    # One learning run serves every interval, copying a score where another interval already scored
    # the impression with the same model version: the 10-min interval's scores beside the 1-min one
    # equal those of a run with the 10-min interval alone.
    alone = tmp_path / "alone"
    run_replay(compose_config("replay", [*job_paths(tiny_streams), f"paths.reports_dir={alone}", "replay.seeds=[0]",
                                         "replay.progress=false", "replay.streams=[realtime]", "replay.step_s=60",
                                         f"learner.max_wait_s={max_wait_s}", f"replay.push_every_s=[{push_s[1]}]",
                                         "replay.ranking.requests=400", f"replay.until_s={UNTIL_S}"]))
    with np.load(tmp_path / "replay" / "realtime-seed0.npz") as both, np.load(alone / "replay" / "realtime-seed0.npz") as one:
        assert np.array_equal(both["impression_id"], one["impression_id"])
        assert not np.allclose(both["push_60s"], both["push_600s"])  # the intervals do serve different models
        np.testing.assert_allclose(both["push_600s"], one["push_600s"], rtol=0, atol=1e-6)
    with np.load(tmp_path / "replay" / "realtime-seed0-candidates.npz") as both, \
            np.load(alone / "replay" / "realtime-seed0-candidates.npz") as one:  # the candidate sets too
        np.testing.assert_array_equal(both["live_id"], one["live_id"])
        np.testing.assert_allclose(both["push_600s"], one["push_600s"], rtol=0, atol=1e-6)


def test_reported_samples_hands_out_each_sample_once_and_only_after_its_report(tiny_streams):
    shard_dir = tiny_streams.stream(FAST_SLOW)
    everything = np.concatenate([mb["report_ts"] for mb in ShardDataset(shard_dir, 1).micro_batches()])
    stream = ReportedSamples(ShardDataset(shard_dir, 1).micro_batches())
    edges = step_edges(int(everything.min()) - 7, int(everything.max()), 7 * 60_000)
    assert edges[0] <= everything.min() and edges[-1] > everything.max()
    handed, previous = [], edges[0]
    for t in edges[1:]:
        chunk = stream.until(int(t))
        if chunk is not None:
            assert chunk["report_ts"].min() >= previous and chunk["report_ts"].max() < t
            n = len(chunk["report_ts"])
            for g in GSU_NAMES:  # ragged fields stay aligned with their samples
                assert len(chunk[lengths_key(g)]) == n
                assert len(chunk[sequence_key(g, "item")]) == chunk[lengths_key(g)].sum()
            handed.append(chunk["report_ts"])
        previous = t
    np.testing.assert_array_equal(np.concatenate(handed), everything)
    assert stream.until(int(edges[-1]) + 10**9) is None


def test_replay_metrics_skip_unscored_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(50, 2)).astype(np.float32)
    predictions = np.clip(labels * 0.3 + rng.uniform(0, 0.7, size=(50, 2)), 0.01, 0.99).astype(np.float32)
    predictions[3, 0] = np.nan  # an impression outside the replayed range
    got = group_metrics(predictions, labels, np.zeros(50, dtype=np.int64), ["a", "b"])
    keep = ~np.isnan(predictions[:, 0])
    assert got["auc"]["a"] == pytest.approx(roc_auc_score(labels[keep, 0], predictions[keep, 0]), abs=1e-6)
    assert got["auc"]["b"] == pytest.approx(roc_auc_score(labels[:, 1], predictions[:, 1]), abs=1e-6)
    assert got["gauc"]["a"] == pytest.approx(got["auc"]["a"], abs=1e-6)  # one user: GAUC is the AUC
    assert got["logloss"]["a"] == pytest.approx(log_loss(labels[keep, 0], predictions[keep, 0].astype(np.float64)),
                                                abs=1e-6)


def test_the_report_aggregates_seeds_and_pairs_differences_by_seed():
    def figures(auc_30: float, auc_300: float, loss: float) -> dict:
        def group(auc: float) -> dict:
            return {"overall": {"auc": {"ctr": auc}, "logloss": {"ctr": loss}}}
        return {"push": {"30": group(auc_30), "300": group(auc_300)}, "catch": {}}

    per_run = {"realtime": {0: figures(0.70, 0.69, 0.30), 1: figures(0.72, 0.70, 0.32), 2: figures(0.75, 0.71, 0.34)},
               "fast_slow": {0: figures(0.60, 0.60, 0.40), 1: figures(0.63, 0.61, 0.40), 2: figures(0.64, 0.62, 0.40)}}
    report = build_report(per_run, [0, 1, 2], {"overall": 123}, [30, 300])
    realtime = report["runs"]["realtime"]["push"]["30"]["overall"]
    assert realtime["auc"]["ctr"] == pytest.approx((0.70 + 0.72 + 0.75) / 3)
    assert realtime["auc_std"]["ctr"] == pytest.approx(np.std([0.70, 0.72, 0.75], ddof=1))
    assert report["runs"]["fast_slow"]["push"]["30"]["overall"]["logloss_std"]["ctr"] == pytest.approx(0.0)
    # Paired by seed: differences 0.10, 0.09, 0.11 -> mean 0.10, sd 0.01 (unpaired spreads add to ~0.06).
    paired = report["summary"]["paired_diff_overall_auc_ctr"]
    assert paired["mean"] == pytest.approx(0.10) and paired["sd"] == pytest.approx(0.01)
    np.testing.assert_allclose(paired["per_seed"], [0.10, 0.09, 0.11])
    assert report["summary"]["push_interval_auc_ctr"]["realtime"] == {"30": pytest.approx(0.7233333),
                                                                      "300": pytest.approx(0.70)}
    assert report["summary"]["bracket_order"] == {"expected": ["realtime", "fast_slow"], "holds": True}
    text = markdown(report, ["ctr"])
    assert "| realtime - fast_slow | overall | +0.1000 ± 0.0100 | +0.1000 / +0.0900 / +0.1100 | yes |" in text
    assert aggregate([figures(0.5, 0.5, 0.1)["push"]["30"]["overall"]])["auc_std"]["ctr"] == 0.0


def test_the_oracle_learns_every_final_label_at_the_request_time(tiny_streams):
    import pandas as pd

    evaluation = load_evaluation(tiny_streams, 2)
    oracle = oracle_samples(evaluation)
    np.testing.assert_array_equal(oracle["report_ts"], oracle["request_ts"])
    # CTR: the simulator's own record of who clicked.
    canonical = pd.read_parquet(tiny_streams.canonical.live_impressions,
                                columns=["impression_id", "user_id", "live_id", "request_ts"])
    truth = pd.read_parquet(tiny_streams.truth.live_impressions, columns=["user_id", "live_id", "timestamp", "clicked"])
    clicked = canonical.merge(truth, left_on=["user_id", "live_id", "request_ts"],
                              right_on=["user_id", "live_id", "timestamp"]).set_index("impression_id")["clicked"]
    ctr = list(tiny_streams.manifest(FINAL)["tasks"]).index("ctr")
    np.testing.assert_array_equal(oracle["state"][:, ctr] == POS, clicked.loc[oracle["impression_id"]].to_numpy())
    # Every task: the final stream's label of the same impression, none masked.
    final = concat_arrays(list(ShardDataset(tiny_streams.stream(FINAL), 1).micro_batches()))
    by_id = pd.Series(np.arange(len(final["impression_id"])), index=final["impression_id"])
    np.testing.assert_array_equal(oracle["state"], final["state"][by_id.loc[oracle["impression_id"]].to_numpy()])
    assert set(np.unique(oracle["state"])) <= {NEG, POS}


def test_without_room_state_zeroes_exactly_the_rooms_real_time_features():
    dense = np.arange(3 * len(DENSE_FEATURES), dtype=np.float32).reshape(3, -1) + 1
    out = without_room_state({"dense": dense, "report_ts": np.arange(3)})
    for j, name in enumerate(DENSE_FEATURES):
        expected = 0.0 if name in {"room_viewers_now", "room_clicks_30s", "room_clicks_5min", "room_impressions_5min",
                                   "room_ctr_5min", "room_age_min"} else dense[:, j]
        np.testing.assert_array_equal(out["dense"][:, j], expected)
    assert dense.min() > 0  # the input is left as it was


def test_step_edges_fall_on_multiples_of_the_step():
    edges = step_edges(1_000_012_345, 1_000_100_000, 30_000)
    assert edges[0] % 30_000 == 0
    assert edges[0] <= 1_000_012_345 < edges[1] and edges[-2] <= 1_000_100_000 < edges[-1]
    np.testing.assert_array_equal(np.diff(edges), 30_000)


def test_light_users_are_those_with_at_most_the_given_live_history():
    import torch

    from recsys.metrics import light_users

    counts = [0, 1, 2, 3, 40]  # the dense feature holds log1p(count)
    assert light_users(np.log1p(np.array(counts, dtype=np.float32)), 2).tolist() == [True, True, True, False, False]
    assert light_users(torch.log1p(torch.tensor(counts, dtype=torch.float32)), 0).tolist() == [True] + [False] * 4


def test_a_data_set_without_simulator_truth_gets_the_report_without_highlight_figures(tmp_path):
    from types import SimpleNamespace

    from recsys.replay.catch import CatchWindows
    from recsys.replay.report import write_all

    def figures(auc: float) -> dict:
        group = {"auc": {"ctr": auc}, "logloss": {"ctr": 0.3}}
        return {"push": {"60": {"overall": group, "light_users": group}}, "catch": {}}

    per_run = {"realtime": {0: figures(0.7)}, "oracle": {0: figures(0.71)}}
    report = build_report(per_run, [0], {"overall": 10, "light_users": 4}, [60])
    assert "highlight_auc_ctr" not in report["summary"] and "share_caught" not in report["summary"]
    assert report["summary"]["bracket_order"] == {"expected": ["oracle", "realtime"], "holds": True}
    paths = write_all(report, SimpleNamespace(highlights=None), {}, ["ctr"], tmp_path, "replay", 3, CatchWindows())
    assert [p.name for p in paths] == ["replay.json", "replay.md", "replay_push_interval.png"]
    text = (tmp_path / "replay.md").read_text()
    assert "| oracle - realtime | overall | +0.0100 ± 0.0000 | +0.0100 | yes |" in text and "catch" not in text.lower()


def test_replay_settings_are_built_from_the_config_and_refuse_bad_values():
    from omegaconf import OmegaConf

    from recsys.replay.settings import replay_settings

    rc = compose_config("replay", []).replay
    s = replay_settings(rc)
    # conf/replay_settings/default.yaml as written: push every 30 s, 5 min, 30 min, 1 h on a 30-s clock;
    # frozen on realtime; the learner of conf/learner; the ranking catch on the highlight catch's bins.
    assert s.push_every_ms == (30_000, 300_000, 1_800_000, 3_600_000) and s.step_ms == 30_000
    assert s.frozen.stream == "realtime" and s.catch.bin_s == 30 and s.catch.fractions == (0.5, 0.25)
    assert (s.learner.batch_size, s.learner.max_wait_ms, s.learner.batch_norm_min_batch) == (256, 30_000, 32)
    assert s.ranking.requests == 6000 and s.ranking.windows.top_k == (1, 3) and s.ranking.windows.bin_s == 30
    assert s.ranking.windows.after_s == s.catch.after_s == 600 and s.until_s is None
    with pytest.raises(ValueError, match="multiples of replay.step_s"):
        replay_settings(OmegaConf.merge(rc, {"push_every_s": [45]}))
    with pytest.raises(ValueError, match="train_share"):
        replay_settings(OmegaConf.merge(rc, {"frozen": {"train_share": 0.0}}))
    with pytest.raises(ValueError, match="top_k must hold 1"):
        replay_settings(OmegaConf.merge(rc, {"ranking": {"top_k": [3]}}))
