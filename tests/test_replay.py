"""Replay: no sample trains the model before it was reported, every impression is scored once by a
model that had not seen anything reported after its request, and the report adds up."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from data_pipelines.contract import GSU_NAMES, lengths_key, sequence_key
from data_pipelines.dataset import FAST_SLOW, FINAL
from recsys.data import ShardDataset
from recsys.replay.job import run_replay
from recsys.replay.report import aggregate, build_report, group_metrics, markdown
from recsys.replay.timeline import ReportedSamples, step_edges
from tests.conftest import compose_config, job_paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class OrderLog:
    """Records scoring and training events in the order the replay makes them."""

    def __init__(self):
        self.events: list[tuple[str, np.ndarray]] = []

    def scored(self, request_ts: np.ndarray) -> None:
        self.events.append(("scored", request_ts.copy()))

    def trained(self, report_ts: np.ndarray) -> None:
        self.events.append(("trained", report_ts.copy()))


@pytest.mark.slow
def test_replay_never_lets_a_sample_train_the_model_before_its_report_time(tiny_streams, tmp_path):
    cfg = compose_config("replay", [*job_paths(tiny_streams), f"paths.reports_dir={tmp_path}", "replay.seeds=[0]",
                                    "replay.progress=false"])
    observer = OrderLog()
    report = run_replay(cfg, observer=observer)

    # The log holds the realtime run, then the fast_slow run, each scoring in request-time order.
    trained_samples = 0
    newest_trained = -np.inf
    scored, boundary_runs, last_scored_max = 0, 0, -np.inf
    for kind, ts in observer.events:
        if kind == "trained":
            assert np.all(np.diff(ts) >= 0)  # in report order within a batch
            newest_trained = max(newest_trained, ts.max())
            trained_samples += len(ts)
        else:
            if scored and ts.min() < last_scored_max:  # a new run (the second stream) starts from scratch
                newest_trained, boundary_runs = -np.inf, boundary_runs + 1
            # the rule: everything the model has learned was reported before this impression was requested
            assert newest_trained < ts.min()
            last_scored_max = ts.max()
            scored += len(ts)
    assert boundary_runs == 1  # realtime, then fast_slow
    final = tiny_streams.manifest(FINAL)
    assert scored == 2 * final["samples"]  # every impression scored once per stream
    assert trained_samples > 0

    # The report has the shape DESIGN and the README promise, and its files exist.
    assert report["seeds"] == [0]
    for stream in ("realtime", "fast_slow"):
        assert set(report[stream]) == {"overall", "highlight", "light_users", "heavy_users"}
        overall = report[stream]["overall"]
        assert set(overall) == {"auc", "auc_std", "gauc", "gauc_std", "logloss", "logloss_std"}
        assert set(overall["auc"]) == {"ctr", "lvtr", "ltr", "cmtr", "gtr"}
        assert 0.0 < overall["auc"]["ctr"] < 1.0 and overall["auc_std"]["ctr"] == 0.0
    assert report["impressions"]["overall"] == final["samples"]
    assert report["impressions"]["light_users"] + report["impressions"]["heavy_users"] == final["samples"]
    for name in ("replay.json", "replay.md", "replay_auc.png", "replay_calibration.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_reported_samples_hands_out_each_sample_once_and_only_after_its_report(tiny_streams):
    shard_dir = tiny_streams.stream(FAST_SLOW)
    everything = np.concatenate([mb["report_ts"] for mb in ShardDataset(shard_dir, 1).micro_batches()])
    stream = ReportedSamples(ShardDataset(shard_dir, 1))
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


def test_the_report_aggregates_given_per_seed_figures():
    def run(auc_ctr: float, loss: float) -> dict:
        return {"overall": {"auc": {"ctr": auc_ctr}, "logloss": {"ctr": loss}}}

    per_run = {"realtime": {0: run(0.70, 0.30), 1: run(0.72, 0.32), 2: run(0.74, 0.34)},
               "fast_slow": {0: run(0.60, 0.40), 1: run(0.61, 0.40), 2: run(0.62, 0.40)}}
    report = build_report(per_run, [0, 1, 2], {"overall": 123})
    assert report["realtime"]["overall"]["auc"]["ctr"] == pytest.approx(0.72)
    assert report["realtime"]["overall"]["auc_std"]["ctr"] == pytest.approx(0.02)  # sample std of .70/.72/.74
    assert report["fast_slow"]["overall"]["auc_std"]["ctr"] == pytest.approx(0.01)
    assert report["fast_slow"]["overall"]["logloss_std"]["ctr"] == pytest.approx(0.0)
    text = markdown(report, ["realtime", "fast_slow"], ["ctr"])
    assert "| ctr | 0.7200 ± 0.0200 | 0.6100 ± 0.0100 | +0.1100 | yes |" in text
    assert aggregate([run(0.5, 0.1)["overall"]])["auc_std"]["ctr"] == 0.0
    # One seed has no spread: no difference is called beyond it.
    one = build_report({s: {0: runs[0]} for s, runs in per_run.items()}, [0], {"overall": 123})
    assert "| ctr | 0.7000 ± 0.0000 | 0.6000 ± 0.0000 | +0.1000 | n/a (one seed) |" in markdown(
        one, ["realtime", "fast_slow"], ["ctr"])


def test_light_users_are_those_with_at_most_the_given_live_history():
    import torch

    from recsys.metrics import light_users

    counts = [0, 1, 2, 3, 40]  # the dense feature holds log1p(count)
    assert light_users(np.log1p(np.array(counts, dtype=np.float32)), 2).tolist() == [True, True, True, False, False]
    assert light_users(torch.log1p(torch.tensor(counts, dtype=torch.float32)), 0).tolist() == [True] + [False] * 4
