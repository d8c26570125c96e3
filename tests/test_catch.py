"""Highlight-catch figures on hand-made series and impressions with answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.replay.catch import (Catch, CatchWindows, SegmentSeries, catch, eligible_segments, segment_series,
                                 summarize)


def series(before: list[tuple[float, float]], inside: list[tuple[float, float]], after: list[tuple[float, float]],
           duration_s: float = 120.0, counts: list[int] | None = None) -> SegmentSeries:
    """(predicted, true) per 30-s bin before, inside and after a segment."""
    offsets = [-30.0 * (len(before) - i) for i in range(len(before))] + [30.0 * i for i in range(len(inside))] + \
              [duration_s + 30.0 * i for i in range(len(after))]
    rows = before + inside + after
    return SegmentSeries(offset_s=np.array(offsets), part=np.array([-1] * len(before) + [0] * len(inside) +
                                                                  [1] * len(after)),
                         predicted=np.array([p for p, _ in rows]), true=np.array([t for _, t in rows]),
                         count=np.array(counts or [10] * len(rows)), duration_s=duration_s)


def test_catch_latency_is_the_end_of_the_first_bin_half_the_true_rise_above_the_models_own_level():
    # Before: true 0.1, predicted 0.05. True peak 0.5: rise 0.4, so the prediction must reach 0.05 + 0.2.
    # Inside, predicted 0.06, 0.10, 0.26, 0.30: first at the third bin (60-90 s) -> caught at 90 s.
    # After: predicted 0.3, 0.2 against true 0.1, 0.1 -> overshoot (0.2 + 0.1) / 2 = 0.15.
    s = series(before=[(0.05, 0.1), (0.05, 0.1)], inside=[(0.06, 0.2), (0.10, 0.5), (0.26, 0.4), (0.30, 0.3)],
               after=[(0.3, 0.1), (0.2, 0.1)])
    got = catch(s, bin_s=30)
    assert got.latency_s == pytest.approx(90.0)
    assert got.rise == pytest.approx(0.4)
    assert got.overshoot == pytest.approx(0.15)
    assert got.rise_share == pytest.approx((0.30 - 0.05) / 0.4)  # the highest lift, after the segment: 0.3
    # Asked for three quarters of the rise (0.3 above 0.05), it is never caught.
    assert catch(s, bin_s=30, fraction=0.75).latency_s is None


def test_a_model_off_by_a_constant_is_judged_by_its_own_rise_and_a_late_catch_counts_after_the_segment():
    # Predicted 0.3 above the truth throughout, never rising inside; it rises by 0.25 >= 0.2 in the
    # second bin after the segment (offset 120 + 30 -> caught at 180 s).
    s = series(before=[(0.4, 0.1)], inside=[(0.4, 0.5), (0.4, 0.3)], after=[(0.5, 0.1), (0.65, 0.1)],
               duration_s=60.0)
    got = catch(s, bin_s=30)
    assert got.latency_s == pytest.approx(60.0 + 30.0 + 30.0)
    never = catch(series(before=[(0.4, 0.1)], inside=[(0.4, 0.5), (0.5, 0.3)], after=[(0.45, 0.1)]), bin_s=30)
    assert never.latency_s is None
    # Before-bins are weighted by their impressions: pre-level (0.0*30 + 0.4*10) / 40 = 0.1 predicted.
    weighted = catch(series(before=[(0.0, 0.1), (0.4, 0.1)], inside=[(0.29, 0.5), (0.31, 0.5)], after=[],
                            counts=[30, 10, 10, 10]), bin_s=30)
    assert weighted.latency_s == pytest.approx(60.0) and np.isnan(weighted.overshoot)


def test_a_segment_without_a_rise_or_without_impressions_before_it_has_nothing_to_catch():
    assert catch(series(before=[(0.1, 0.3)], inside=[(0.1, 0.2)], after=[]), bin_s=30) is None
    assert catch(series(before=[], inside=[(0.1, 0.5)], after=[]), bin_s=30) is None


def test_summary_counts_never_caught_segments_as_slower_than_any_caught_one():
    catches = [Catch(latency_s=90.0, overshoot=0.1, rise=0.3, rise_share=0.6),
               Catch(latency_s=30.0, overshoot=-0.1, rise=0.2, rise_share=0.9),
               Catch(latency_s=None, overshoot=0.3, rise=0.1, rise_share=0.2)]
    got = summarize(catches)
    assert got["segments"] == 3
    assert got["share_caught"] == pytest.approx(2 / 3)
    assert got["catch_latency_s_median"] == pytest.approx(90.0)  # sorted 30, 90, never
    assert got["catch_latency_s_p90"] is None  # the 90th percentile is among the never caught
    assert got["overshoot_mean"] == pytest.approx(0.1)
    assert got["rise_share_median"] == pytest.approx(0.6)
    assert summarize([])["share_caught"] is None


def test_impressions_are_binned_from_the_start_inside_and_from_the_end_after_a_segment():
    start, end = 100_000, 160_000  # a 60-s segment; windows 60 s before and after
    windows = CatchWindows(bin_s=30, before_s=60, after_s=60, min_impressions=1, min_impressions_before=1)
    ts = np.array([30_000, 50_000, 75_000, 80_000, 100_000, 125_000, 130_000, 170_000, 200_000, 230_000])
    predicted = np.array([0.9, 0.1, 0.7, 0.3, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9])
    true = predicted / 2
    in_highlight = np.zeros(len(ts), dtype=bool)
    in_highlight[2] = True  # inside another highlight of the room: not part of the pre-highlight level
    s = segment_series(ts, predicted, true, in_highlight, start, end, windows)
    # 30_000 is outside the window; 50_000 -> before bin -60 s; 80_000 -> -30 s; 100_000 and 125_000
    # -> inside bin 0; 130_000 -> inside bin 30 s; 170_000 -> after bin 0 (offset 60); 200_000 ->
    # after bin 1 (offset 90); 230_000 is past the after window.
    np.testing.assert_allclose(s.offset_s, [-60, -30, 0, 30, 60, 90])
    np.testing.assert_array_equal(s.part, [-1, -1, 0, 0, 1, 1])
    np.testing.assert_array_equal(s.count, [1, 1, 2, 1, 1, 1])
    np.testing.assert_allclose(s.predicted, [0.1, 0.3, 0.3, 0.5, 0.6, 0.8])
    np.testing.assert_allclose(s.true, np.array([0.1, 0.3, 0.3, 0.5, 0.6, 0.8]) / 2)


def test_segments_need_impressions_inside_and_a_clean_window_before():
    highlights = pd.DataFrame({"live_id": [7, 7, 8], "start_timestamp": [1_000_000, 1_200_000, 1_000_000],
                               "end_timestamp": [1_100_000, 1_300_000, 1_100_000]})
    windows = CatchWindows(bin_s=30, before_s=300, after_s=600, min_impressions=2, min_impressions_before=1)
    # Room 7: two impressions before the first segment, two inside each. Room 8: one inside only.
    live_id = np.array([7, 7, 7, 7, 7, 7, 8])
    request_ts = np.array([800_000, 900_000, 1_010_000, 1_020_000, 1_210_000, 1_220_000, 1_010_000])
    segment = np.array([-1, -1, 0, 0, 1, 1, 2])
    # Segment 1 starts 100 s after segment 0 ends, inside its 300-s pre-highlight window: left out.
    assert eligible_segments(highlights, live_id, request_ts, segment, windows) == [0]
