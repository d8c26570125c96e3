"""Ranking figures on candidate sets (recsys/replay/ranking.py) against hand-worked sets, and
candidate sets against the logged impressions they must agree with."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from recsys.replay.ranking import RankingWindows, expected_clicks, ranking_catches, ranks, top1_share

# Two requests: three rooms with true CTR 0.1, 0.4, 0.2, then two with 0.3, 0.05.
OFFSETS = np.array([0, 3, 5])
TRUTH = np.array([0.1, 0.4, 0.2, 0.3, 0.05])


def test_ranks_count_from_the_highest_score_within_each_request():
    assert ranks(OFFSETS, np.array([0.5, 0.9, 0.1, 0.2, 0.7])).tolist() == [1, 0, 2, 1, 0]


def test_normalized_clicks_are_one_for_the_truths_ranking_and_hand_worked_otherwise():
    truth_order = expected_clicks(OFFSETS, TRUTH, TRUTH, 1)
    assert truth_order.normalized == pytest.approx(1.0)
    # Random top 1: the mean of each set, (0.7 / 3 + 0.35 / 2) / 2; best: (0.4 + 0.3) / 2.
    assert truth_order.random == pytest.approx((0.7 / 3 + 0.35 / 2) / 2)
    assert truth_order.best == pytest.approx(0.35)
    # The worst order picks 0.1 and 0.05: (0.075 - random) / (0.35 - random).
    worst = expected_clicks(OFFSETS, -TRUTH, TRUTH, 1)
    random = (0.7 / 3 + 0.35 / 2) / 2
    assert worst.model == pytest.approx(0.075)
    assert worst.normalized == pytest.approx((0.075 - random) / (0.35 - random))
    # Top 3 of a set of two fills two slots: every order of the second set scores the same.
    top3 = expected_clicks(OFFSETS, np.array([0.0, 0.0, 1.0, 0.0, 1.0]), TRUTH, 3)
    assert top3.model == pytest.approx((0.7 + 0.35) / 2) and top3.slots == pytest.approx(2.5)
    assert top3.ctr == pytest.approx(top3.model / 2.5)


@pytest.mark.parametrize("k", [1, 2])
def test_a_random_ranking_scores_zero_on_average_over_every_order(k):
    """Every permutation of the scores, each as likely: the mean normalized figure is exactly 0."""
    values = []
    for first in itertools.permutations([0.0, 1.0, 2.0]):
        for second in itertools.permutations([0.0, 1.0]):
            values.append(expected_clicks(OFFSETS, np.array([*first, *second]), TRUTH, k).normalized)
    assert np.mean(values) == pytest.approx(0.0, abs=1e-12)


def test_highlight_top1_share_counts_requests_whose_top_room_is_marked():
    marked = np.array([False, True, False, False, True])
    assert top1_share(OFFSETS, TRUTH, marked) == pytest.approx(0.5)  # 0.4 is marked, 0.3 is not
    assert top1_share(OFFSETS, -TRUTH, marked) == pytest.approx(0.5)  # 0.1 is not, 0.05 is
    assert top1_share(OFFSETS, np.array([0, 1, 0, 0, 1.0]), marked) == pytest.approx(1.0)


def _requests_around(start: int, times_s: list[int], model_has_it: list[bool]):
    """One request per given time (seconds after `start`): the highlight room (live 7, true CTR 0.5)
    and two others (0.1, 0.05); the truth always ranks room 7 first. The model ranks it first where
    `model_has_it`, else last with top_k = 1."""
    offsets, ts, live, truth, scores = [0], [], [], [], []
    for t, hit in zip(times_s, model_has_it):
        ts += [start + t * 1000] * 3
        live += [7, 1, 2]
        truth += [0.5, 0.1, 0.05]
        scores += [0.9 if hit else 0.0, 0.5, 0.4]
        offsets.append(offsets[-1] + 3)
    return (np.array(offsets), np.array(ts, dtype=np.int64), np.array(live), np.array(scores), np.array(truth))


def test_ranking_catch_latency_is_the_end_of_the_first_bin_where_half_the_truths_top_users_get_the_room():
    start = 1_000_000_000
    highlights = pd.DataFrame({"live_id": [7], "start_timestamp": [start], "end_timestamp": [start + 120_000]})
    windows = RankingWindows(top_k=(1,), catch_top_k=1, catch_share=0.5, bin_s=30, after_s=600, min_requests=2)
    # Bin 0 (0-30 s): 0 of 2; bin 1: 1 of 3 (a third); bin 2: one request only (skipped though caught);
    # bin 3 (90-120 s): 2 of 4 -> caught at its end, 120 s.
    times = [5, 20, 35, 40, 50, 70, 95, 100, 110, 115]
    hits = [False, False, True, False, False, True, True, False, True, False]
    offsets, ts, live, scores, truth = _requests_around(start, times, hits)
    assert ranking_catches(offsets, ts, live, scores, truth, highlights, windows) == [120.0]
    # Never caught within the segment and the 10 minutes after it: None.
    offsets, ts, live, scores, truth = _requests_around(start, times + [400, 410], [False] * 12)
    assert ranking_catches(offsets, ts, live, scores, truth, highlights, windows) == [None]
    # Requests after the window do not count: caught only at 700 s + -> never.
    offsets, ts, live, scores, truth = _requests_around(start, times + [730, 735], [False] * 10 + [True, True])
    assert ranking_catches(offsets, ts, live, scores, truth, highlights, windows) == [None]
    # Fewer than min_requests inside the segment with the room in the truth's top k: nothing to catch.
    offsets, ts, live, scores, truth = _requests_around(start, [5, 200], [True, True])
    assert ranking_catches(offsets, ts, live, scores, truth, highlights, windows) == []


def test_live_rooms_are_those_started_at_or_before_the_request_and_not_yet_ended():
    from recsys.replay.candidates import live_rooms

    lives = pd.DataFrame({"live_id": [10, 11, 12], "author_id": [1, 2, 3], "start_ts": [0, 100, 50],
                          "end_ts": [100, 200, 60]})
    requests = pd.DataFrame({"user_id": [5, 6, 7], "request_ts": [100, 50, 59]})
    out = live_rooms(requests, lives)
    assert out[["request", "user_id", "live_id", "author_id"]].values.tolist() == [
        [0, 5, 11, 2], [1, 6, 10, 1], [1, 6, 12, 3], [2, 7, 10, 1], [2, 7, 12, 3]]


def test_a_candidate_that_was_shown_has_exactly_the_logged_impressions_features_and_truth(tiny_streams):
    """Each sampled request's own shown room is among its candidates: its features and GSU
    sequences equal the final stream's for that impression, its truth the simulator's record."""
    from data_pipelines.dataset import FINAL
    from data_pipelines.micro_batch import concat_arrays, take_rows
    from recsys.data import ShardDataset
    from recsys.replay.candidates import build_candidates

    sets = build_candidates(tiny_streams, 300, 0)
    assert sets.requests == 300 and np.all(np.diff(sets.offsets) >= 1)
    assert np.all(np.diff(sets.request_ts) >= 0)
    impressions = pd.read_parquet(tiny_streams.canonical.live_impressions)
    request = np.repeat(np.arange(sets.requests), np.diff(sets.offsets))
    shown = pd.DataFrame({"row": np.arange(len(sets)), "user_id": sets.user_id[request],
                          "request_ts": sets.request_ts, "live_id": sets.live_id}).merge(
        impressions[["impression_id", "user_id", "request_ts", "live_id"]], on=["user_id", "request_ts", "live_id"])
    assert len(shown) == sets.requests  # one shown room per request, found among its candidates

    final = concat_arrays(list(ShardDataset(tiny_streams.stream(FINAL), 1).micro_batches()))
    at = pd.Series(np.arange(len(final["impression_id"])), index=final["impression_id"])
    logged_rows, candidate_rows = at.loc[shown["impression_id"]].to_numpy(), shown["row"].to_numpy()
    logged, candidate = take_rows(final, logged_rows), sets.rows(candidate_rows)
    for key in logged:
        if key not in ("impression_id", "report_ts", "kind", "state"):
            np.testing.assert_array_equal(candidate[key], logged[key], err_msg=key)

    truth = pd.read_parquet(tiny_streams.truth.live_impressions)
    recorded = shown.merge(truth, left_on=["user_id", "request_ts", "live_id"],
                           right_on=["user_id", "timestamp", "live_id"])
    np.testing.assert_array_equal(sets.true_ctr[recorded["row"].to_numpy()], recorded["true_ctr"].to_numpy())
    np.testing.assert_array_equal(sets.segment[recorded["row"].to_numpy()], recorded["highlight_segment"].to_numpy())



def _ranking(normalized: float, share: float, latencies: list) -> dict:
    top = {"normalized": normalized, "expected_clicks": 0.1, "ctr": 0.1, "random_clicks": 0.05, "best_clicks": 0.2,
           "best_ctr": 0.2}
    return {"top1": top, "top3": dict(top, normalized=normalized / 2), "highlight_top1_share": share,
            "highlight_top1_share_truth_optimal": 0.4, "catch_latency_s": latencies}


def test_the_report_pairs_ranking_figures_by_seed_and_pools_catch_latencies():
    from recsys.replay.figures import build_report

    def figures(auc: float, ranking: dict) -> dict:
        return {"push": {"30": {"overall": {"auc": {"ctr": auc}, "logloss": {"ctr": 0.3}}}}, "catch": {},
                "ranking": {"30": ranking}}

    per_run = {"realtime": {s: figures(0.7, _ranking(n, h, lat)) for s, (n, h, lat) in
                            enumerate([(0.50, 0.20, [30.0, 60.0]), (0.56, 0.22, [90.0]), (0.53, 0.18, [None])])},
               "fast_slow": {s: figures(0.6, _ranking(n, h, lat)) for s, (n, h, lat) in
                             enumerate([(0.40, 0.10, [None, None]), (0.48, 0.12, [300.0]), (0.44, 0.14, [None])])}}
    report = build_report(per_run, [0, 1, 2], {"overall": 10}, [30])
    summary = report["summary"]
    # Each seed's headline figures are kept, for pairing another report with this one.
    assert report["runs"]["realtime"]["per_seed"]["1"] == {"overall_auc_ctr": 0.7, "normalized_top1_clicks": 0.56,
                                                           "highlight_top1_share": 0.22}
    assert summary["normalized_top1_clicks"] == {"realtime": pytest.approx(0.53), "fast_slow": pytest.approx(0.44)}
    paired = summary["paired_diff_normalized_top1_clicks"]
    np.testing.assert_allclose(paired["per_seed"], [0.10, 0.08, 0.09])
    assert paired["mean"] == pytest.approx(0.09) and paired["sd"] == pytest.approx(0.01)
    np.testing.assert_allclose(summary["paired_diff_highlight_top1_share"]["per_seed"], [0.10, 0.10, 0.04])
    assert summary["highlight_top1_share"] == {"realtime": pytest.approx(0.20), "fast_slow": pytest.approx(0.12),
                                               "truth_optimal": pytest.approx(0.4)}
    # Pooled over seeds: realtime 30, 60, 90, never -> median 60 s; fast_slow 300 and three nevers -> never.
    assert summary["ranking_catch_latency_s_median"] == {"realtime": 60.0, "fast_slow": None}
    assert summary["ranking_share_caught"] == {"realtime": 0.75, "fast_slow": 0.25}
    assert summary["normalized_top3_clicks"]["realtime"] == pytest.approx(0.265)
