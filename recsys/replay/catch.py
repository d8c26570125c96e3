"""How fast a model catches a highlight, from the simulator's truth at 30-second resolution.

For one highlight segment of a room, its impressions are binned: bins before the segment and
inside it are aligned to its start, bins after it to its end. Per bin: the model's mean predicted
CTR and the mean true click probability (the simulator's).

- rise: from the room's pre-highlight level (mean true CTR before the segment) to the segment's
  true peak (the highest inside bin);
- catch latency: seconds from the segment's start to the end of the first bin, inside the segment
  or after it, in which the prediction stands at least half the rise (a `fraction` of it) above the model's
  own pre-highlight level (its own, so that a model off by a constant is neither caught at once nor
  never); censored (None) when that never happens;
- rise share: the largest share of the rise the prediction reached in that window (how far a model
  that is never caught got);
- overshoot: mean over the bins after the segment of predicted minus true CTR (positive: the model
  still predicts the highlight after it is over).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CatchWindows:
    bin_s: int = 30
    before_s: int = 300  # the pre-highlight level is measured over this long before the start
    after_s: int = 600  # catching may happen this late; overshoot is measured over this window
    min_impressions: int = 30  # inside the segment, for it to count
    min_impressions_before: int = 10
    fractions: tuple[float, ...] = (0.5, 0.25)  # of the true rise, for a segment to count as caught; first: headline

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        if self.bin_s <= 0 or not self.fractions:
            raise ValueError(f"catch: bin_s must be positive and fractions name at least one, got {self.bin_s} and "
                             f"{list(self.fractions)}")


@dataclass(frozen=True)
class SegmentSeries:
    """One segment's bins, in time order. offset_s: each bin's start, seconds from the segment's
    start (negative before it; after the segment, duration_s + the offset from its end)."""

    offset_s: np.ndarray
    part: np.ndarray  # per bin: -1 before, 0 inside, 1 after the segment
    predicted: np.ndarray  # mean predicted CTR per bin
    true: np.ndarray  # mean true CTR per bin
    count: np.ndarray  # impressions per bin
    duration_s: float


@dataclass(frozen=True)
class Catch:
    latency_s: float | None  # None: never caught within the window
    overshoot: float  # NaN when the room had no impressions after the segment
    rise: float
    rise_share: float  # the largest (predicted - its pre-highlight level) / rise in the window


def catch(series: SegmentSeries, bin_s: int, fraction: float = 0.5) -> Catch | None:
    """The catch figures of one segment; None when its true CTR does not rise above the
    pre-highlight level (nothing to catch) or a part of it has no impressions."""
    before, inside, after = (series.part == -1), (series.part == 0), (series.part == 1)
    if not before.any() or not inside.any():
        return None
    weights = series.count[before]
    pre_true = float(np.average(series.true[before], weights=weights))
    pre_predicted = float(np.average(series.predicted[before], weights=weights))
    rise = float(series.true[inside].max()) - pre_true
    if rise <= 0:
        return None
    searched = inside | after
    lift = series.predicted - pre_predicted
    hit = np.flatnonzero(searched & (lift >= fraction * rise))
    latency = float(series.offset_s[hit[0]] + bin_s) if len(hit) else None
    overshoot = float(np.mean(series.predicted[after] - series.true[after])) if after.any() else float("nan")
    return Catch(latency_s=latency, overshoot=overshoot, rise=rise, rise_share=float(lift[searched].max() / rise))


def _bins(offset_ms: np.ndarray, bin_ms: int, part: int, base_s: float, predicted: np.ndarray, true: np.ndarray
          ) -> list[tuple[float, int, float, float, int]]:
    k = offset_ms // bin_ms
    out = []
    for b in np.unique(k):
        sel = k == b
        out.append((base_s + b * bin_ms / 1000, part, float(predicted[sel].mean()), float(true[sel].mean()),
                    int(sel.sum())))
    return out


def segment_series(request_ts: np.ndarray, predicted: np.ndarray, true: np.ndarray, in_highlight: np.ndarray,
                   start_ms: int, end_ms: int, windows: CatchWindows) -> SegmentSeries:
    """The bins of one segment from its room's impressions (request_ts sorted; `in_highlight`
    marks impressions inside any highlight, which are left out of the before and after windows)."""
    bin_ms = windows.bin_s * 1000
    lo, hi = np.searchsorted(request_ts, [start_ms - windows.before_s * 1000, end_ms + windows.after_s * 1000])
    ts, p, y, hl = request_ts[lo:hi], predicted[lo:hi], true[lo:hi], in_highlight[lo:hi]
    before = (ts < start_ms) & ~hl
    inside = (ts >= start_ms) & (ts < end_ms)
    after = (ts >= end_ms) & ~hl
    duration_s = (end_ms - start_ms) / 1000
    rows = [*_bins(ts[before] - start_ms, bin_ms, -1, 0.0, p[before], y[before]),
            *_bins(ts[inside] - start_ms, bin_ms, 0, 0.0, p[inside], y[inside]),
            *_bins(ts[after] - end_ms, bin_ms, 1, duration_s, p[after], y[after])]
    offset, part, pred, tru, count = (np.array(c) for c in zip(*rows)) if rows else (np.zeros(0),) * 5
    return SegmentSeries(offset_s=offset.astype(np.float64), part=part.astype(np.int64),
                         predicted=pred.astype(np.float64), true=tru.astype(np.float64),
                         count=count.astype(np.int64), duration_s=duration_s)


def eligible_segments(highlights: pd.DataFrame, live_id: np.ndarray, request_ts: np.ndarray,
                      segment: np.ndarray, windows: CatchWindows) -> list[int]:
    """Segments (rows of the highlights table) with enough impressions inside and before them, and
    no other highlight of the same room in the window before them."""
    inside_counts = np.bincount(segment[segment >= 0], minlength=len(highlights))
    before_ms = windows.before_s * 1000
    out = []
    previous_end = highlights.groupby("live_id")["end_timestamp"].shift(1).to_numpy()
    for s, row in enumerate(highlights.itertuples(index=False)):
        if inside_counts[s] < windows.min_impressions:
            continue
        if not np.isnan(previous_end[s]) and previous_end[s] > row.start_timestamp - before_ms:
            continue
        room = live_id == row.live_id
        before = room & (request_ts >= row.start_timestamp - before_ms) & (request_ts < row.start_timestamp)
        if before.sum() >= windows.min_impressions_before:
            out.append(s)
    return out


def highlight_catches(highlights: pd.DataFrame, segments: list[int], live_id: np.ndarray, request_ts: np.ndarray,
                      predicted: np.ndarray, true: np.ndarray, in_highlight: np.ndarray,
                      windows: CatchWindows) -> dict[float, list[Catch]]:
    """{fraction: the catch figures of each given segment that has a rise to catch} (request_ts sorted)."""
    by_room = {room: np.flatnonzero(live_id == room) for room in np.unique(highlights["live_id"].to_numpy()[segments])}
    out: dict[float, list[Catch]] = {f: [] for f in windows.fractions}
    for s in segments:
        row = highlights.iloc[s]
        rows = by_room[row["live_id"]]
        series = segment_series(request_ts[rows], predicted[rows], true[rows], in_highlight[rows],
                                int(row["start_timestamp"]), int(row["end_timestamp"]), windows)
        for fraction in windows.fractions:
            result = catch(series, windows.bin_s, fraction)
            if result is not None:
                out[fraction].append(result)
    return out


def censored_quantile(latencies: list[float | None], q: float) -> float | None:
    """The q-quantile of latencies where None (never caught) counts as slower than any: the smallest
    value with a share q at or below it, None when that falls among the never caught (or none given)."""
    if not latencies:
        return None
    ordered = np.sort(np.array([np.inf if x is None else x for x in latencies], dtype=np.float64))
    value = ordered[min(int(np.ceil(q * len(ordered))) - 1, len(ordered) - 1)]
    return None if np.isinf(value) else float(value)


def summarize(catches: list[Catch]) -> dict[str, float | int | None]:
    """Median and p90 catch latency (censored segments count as never caught: a quantile that falls
    among them is None), share caught, mean overshoot, median rise share."""
    n = len(catches)
    if not n:
        return {"segments": 0, "share_caught": None, "catch_latency_s_median": None, "catch_latency_s_p90": None,
                "overshoot_mean": None, "rise_share_median": None}
    latencies = [c.latency_s for c in catches]
    overshoot = np.array([c.overshoot for c in catches])
    return {"segments": n, "share_caught": float(np.mean([x is not None for x in latencies])),
            "catch_latency_s_median": censored_quantile(latencies, 0.5),
            "catch_latency_s_p90": censored_quantile(latencies, 0.9),
            "overshoot_mean": float(np.nanmean(overshoot)) if np.isfinite(overshoot).any() else None,
            "rise_share_median": float(np.median([c.rise_share for c in catches]))}
