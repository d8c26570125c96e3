"""The label-window engines against samples worked out by hand from DESIGN.md's rules.

Times are ms. Tasks: (ctr, lvtr, ltr, cmtr, gtr). Tick 30 s, fast window 5 min, slow window 1 h.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_pipelines.contract import ACTION_CODES, MASKED as M, NEG as N, POS as P, PU_POS as U, TASKS
from data_pipelines.streams.consistency import label_consistency
from data_pipelines.streams.labels import (NO_POSITIVE, FastSlowStream, FinalLabels, Impressions, RealtimeStream,
                                           first_positive_times)

NONE = NO_POSITIVE
# A: click at 0, stays 4000 s; long view at 60 s; likes at 10 s and 20 s; comments at 45 s, 50 s and
#    400 s; a gift at 3700 s (after the 1-hour window).
# B: click at 1000 s, stays 900 s; long view at 1060 s; a comment 10 minutes in (1600 s).
# C: shown at 2000 s, no click.
# D: click at 5000 s, stays 10 s; a like at 5005 s.
IMPRESSIONS = Impressions(
    request_ts=np.array([0, 1_000_000, 2_000_000, 5_000_000]),
    exit_ts=np.array([4_000_000, 1_900_000, 2_000_000, 5_010_000]),
    first_positive_ts=np.array([
        [0, 60_000, 10_000, 45_000, 3_700_000],
        [1_000_000, 1_060_000, NONE, 1_600_000, NONE],
        [NONE, NONE, NONE, NONE, NONE],
        [5_000_000, NONE, 5_005_000, NONE, NONE],
    ]),
)


def as_rows(samples) -> list[tuple]:
    return [(int(i), int(t), tuple(int(x) for x in s))
            for i, t, s in zip(samples.impression, samples.report_ts, samples.state)]


def test_realtime_reports_first_positives_per_tick_and_negatives_at_exit():
    assert as_rows(RealtimeStream(tick_ms=30_000).emit(IMPRESSIONS)) == [
        (0, 30_000, (P, M, P, M, M)),  # click (0 s) and first like (10 s) share tick 0
        (0, 60_000, (M, M, M, P, M)),  # first comment at 45 s; the 50 s and 400 s ones never appear
        (0, 90_000, (M, P, M, M, M)),  # long view at exactly 60 s opens tick 2
        (1, 1_030_000, (P, M, M, M, M)),
        (1, 1_090_000, (M, P, M, M, M)),
        (1, 1_630_000, (M, M, M, P, M)),  # the comment 10 minutes in, reported within its tick
        (1, 1_930_000, (M, M, N, M, N)),  # exit at 1900 s: tick 30 ends at 1930 s; like and gift never came
        (2, 2_030_000, (N, N, N, N, N)),  # no click: every task negative at the end of the exit tick
        (0, 3_720_000, (M, M, M, M, P)),  # the gift after an hour is still reported
        (3, 5_030_000, (P, M, P, M, M)),  # positives and the exit share a tick: positives first
        (3, 5_030_000, (M, N, M, N, N)),
    ]


def test_fast_slow_reports_a_five_minute_snapshot_and_late_positives_as_pu():
    assert as_rows(FastSlowStream(fast_window_ms=300_000, slow_window_ms=3_600_000).emit(IMPRESSIONS)) == [
        (0, 300_000, (P, P, P, P, N)),  # the gift at 3700 s is a false negative here ...
        (1, 1_300_000, (P, P, N, N, N)),  # ... and so, for now, is B's comment at 1600 s
        (2, 2_300_000, (N, N, N, N, N)),
        (1, 4_600_000, (M, M, M, U, M)),  # the slow window corrects the comment with pu_pos
        (3, 5_300_000, (P, N, P, N, N)),
        # nothing for A's gift: it came after the slow window and is ignored
    ]


def test_final_labels_hold_every_task_once_everything_is_known():
    assert as_rows(FinalLabels().emit(IMPRESSIONS)) == [
        (1, 1_900_000, (P, P, N, P, N)),
        (2, 2_000_000, (N, N, N, N, N)),
        (0, 4_000_000, (P, P, P, P, P)),
        (3, 5_010_000, (P, N, P, N, N)),
    ]


def test_labels_are_ones_for_pos_and_pu_pos_only():
    import torch

    from recsys.data.batch import labels_of

    samples = FastSlowStream().emit(IMPRESSIONS)
    labels = labels_of(torch.from_numpy(samples.state.astype(np.int64))).numpy()
    np.testing.assert_array_equal(labels[3], [0, 0, 0, 1, 0])  # the pu_pos sample
    np.testing.assert_array_equal(labels[0], [1, 1, 1, 1, 0])
    assert set(labels[samples.state == M].tolist()) == {0.0}


def test_consistency_report_on_the_hand_built_impressions():
    realtime = label_consistency(RealtimeStream().emit(IMPRESSIONS), IMPRESSIONS, TASKS)
    fast_slow = label_consistency(FastSlowStream().emit(IMPRESSIONS), IMPRESSIONS, TASKS)
    assert realtime["gtr"]["coverage"] == 1.0 and realtime["gtr"]["delay_median_s"] == 20.0  # 3700 -> 3720 s
    assert fast_slow["gtr"] == {"true_positives": 1, "coverage": 0.0, "false_negative_share": 1.0,
                                "delay_median_s": None, "delay_p90_s": None}
    # cmtr: A reported at 300 s (255 s late), B first as a negative, then pu_pos at 4600 s (3000 s late).
    assert fast_slow["cmtr"]["coverage"] == 1.0
    assert fast_slow["cmtr"]["false_negative_share"] == 0.5
    assert fast_slow["cmtr"]["delay_median_s"] == pytest.approx((255 + 3000) / 2)
    # ctr: three clicks, all 30 s late in realtime and 300 s late in fast_slow.
    assert realtime["ctr"]["delay_median_s"] == 30.0 and fast_slow["ctr"]["delay_median_s"] == 300.0


def test_first_positive_times_from_canonical_tables():
    impressions = pd.DataFrame({"impression_id": [10, 11, 12], "request_ts": [0, 1_000, 2_000],
                                "exit_ts": [100_000, 1_000, 90_000], "clicked": [True, False, True],
                                "watch_ms": [100_000, 0, 88_000 - 60_000]})
    actions = pd.DataFrame({
        "impression_id": [10, 10, 10, 10, 12, 10],
        "ts": [50_000, 45_000, 70_000, 80_000, 5_000, 99_000],
        "action": [ACTION_CODES[a] for a in ("comment", "comment", "comment", "like", "gift", "gift")],
    })
    fp = first_positive_times(impressions, actions, long_view_ms=60_000)
    np.testing.assert_array_equal(fp, [
        [0, 60_000, 80_000, 45_000, 99_000],  # the earliest of three comments
        [NONE, NONE, NONE, NONE, NONE],
        [2_000, NONE, NONE, NONE, 5_000],  # 28 s of watching is no long view
    ])
