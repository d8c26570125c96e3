"""What a model would have recommended, scored against the simulator's truth on candidate sets
(recsys/replay/candidates.py): per request, the model ranks every room live then by its predicted
CTR.

- Expected clicks of the top k: the sum of the true click probabilities of the k best-ranked rooms,
  normalized over all requests as (model − random) / (truth-optimal − random), so that a random
  ranking scores 0 and the truth's own ranking 1 (random: the expectation of a uniformly random
  order, k/n of the set's total). The raw expected CTR per slot stands beside it.
- Highlight top-1 share: the share of requests whose top room is in a highlight then, against the
  share the truth's own ranking gives.
- Ranking catch latency: for a highlight segment of a room, the requests from its start until
  `after_s` past its end in which the truth ranks the room in its top k are binned (`bin_s`); the
  latency is the end of the first bin, counted from the segment's start, in which the model ranks
  it in its top k for at least `share` of them (bins with fewer than `min_requests` such requests
  are skipped); None (never) when no bin does. Segments whose room the truth never ranks in its top
  k for `min_requests` requests inside the segment have nothing to catch and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.replay.catch import censored_quantile


@dataclass(frozen=True)
class RankingWindows:
    top_k: tuple[int, ...] = (1, 3)  # expected clicks of the top k, for each k
    catch_top_k: int = 3
    catch_share: float = 0.5
    bin_s: int = 30
    after_s: int = 600
    min_requests: int = 3


def request_of_rows(offsets: np.ndarray) -> np.ndarray:
    """[C] the request of each candidate row."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def ranks(offsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[C] each row's rank within its request, 0 for the highest score (ties: the earlier row first)."""
    request = request_of_rows(offsets)
    order = np.lexsort((-np.asarray(scores, dtype=np.float64), request))
    out = np.empty(len(order), dtype=np.int64)
    out[order] = np.arange(len(order)) - offsets[request[order]]
    return out


def top_k_sum(offsets: np.ndarray, rank: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """[R] the sum of `values` over each request's rows ranked below k."""
    return np.bincount(request_of_rows(offsets), weights=np.where(rank < k, values, 0.0), minlength=len(offsets) - 1)


@dataclass(frozen=True)
class ExpectedClicks:
    model: float  # mean over requests of the expected clicks of the model's top k
    random: float  # ...of a uniformly random order
    best: float  # ...of the truth's own order
    slots: float  # mean slots filled per request (k, or fewer rooms)

    @property
    def normalized(self) -> float:
        """0 for a random ranking, 1 for the truth's; NaN when no request lets the order matter."""
        span = self.best - self.random
        return (self.model - self.random) / span if span > 0 else float("nan")

    @property
    def ctr(self) -> float:
        """The model's expected CTR per slot."""
        return self.model / self.slots if self.slots else float("nan")


def expected_clicks(offsets: np.ndarray, scores: np.ndarray, truth: np.ndarray, k: int) -> ExpectedClicks:
    n = np.diff(offsets).astype(np.float64)
    slots = np.minimum(n, k)
    totals = np.bincount(request_of_rows(offsets), weights=truth, minlength=len(n))
    random = np.divide(slots * totals, n, out=np.zeros_like(totals), where=n > 0)
    model = top_k_sum(offsets, ranks(offsets, scores), truth, k)
    best = top_k_sum(offsets, ranks(offsets, truth), truth, k)
    return ExpectedClicks(model=float(model.mean()), random=float(random.mean()), best=float(best.mean()),
                          slots=float(slots.mean()))


def top1_share(offsets: np.ndarray, scores: np.ndarray, marked: np.ndarray) -> float:
    """The share of requests (with any candidate) whose top-ranked row is marked."""
    top = ranks(offsets, scores) == 0
    return float(marked[top].mean()) if top.any() else float("nan")


def ranking_catches(offsets: np.ndarray, request_ts: np.ndarray, live_id: np.ndarray, scores: np.ndarray,
                    truth: np.ndarray, highlights: pd.DataFrame, windows: RankingWindows) -> list[float | None]:
    """The ranking catch latency (seconds, None = never) of every segment with something to catch."""
    k, bin_ms = windows.catch_top_k, windows.bin_s * 1000
    in_model, in_truth = ranks(offsets, scores) < k, ranks(offsets, truth) < k
    out: list[float | None] = []
    for row in highlights.itertuples(index=False):
        start, end = int(row.start_timestamp), int(row.end_timestamp)
        rows = np.flatnonzero((live_id == row.live_id) & (request_ts >= start)
                              & (request_ts < end + windows.after_s * 1000) & in_truth)
        if (request_ts[rows] < end).sum() < windows.min_requests:
            continue
        b = (request_ts[rows] - start) // bin_ms
        counts = np.bincount(b)
        caught = np.bincount(b, weights=in_model[rows].astype(np.float64))
        hit = np.flatnonzero((counts >= windows.min_requests)
                             & (caught >= windows.catch_share * np.maximum(counts, 1)))
        out.append(float((hit[0] + 1) * windows.bin_s) if len(hit) else None)
    return out


def ranking_figures(offsets: np.ndarray, request_ts: np.ndarray, live_id: np.ndarray, truth: np.ndarray,
                    segment: np.ndarray, highlights: pd.DataFrame, scores: np.ndarray, windows: RankingWindows) -> dict:
    """One model's figures on the candidate sets (scores: its predicted CTR per row)."""
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} candidate rows were not scored")
    in_highlight = segment >= 0
    out: dict = {}
    for k in windows.top_k:
        e = expected_clicks(offsets, scores, truth, k)
        out[f"top{k}"] = {"normalized": e.normalized, "expected_clicks": e.model, "ctr": e.ctr,
                          "random_clicks": e.random, "best_clicks": e.best, "best_ctr": e.best / e.slots}
    out["highlight_top1_share"] = top1_share(offsets, scores, in_highlight)
    out["highlight_top1_share_truth_optimal"] = top1_share(offsets, truth, in_highlight)
    out["catch_latency_s"] = ranking_catches(offsets, request_ts, live_id, scores, truth, highlights, windows)
    return out


def summarize_catches(latencies: list[float | None]) -> dict:
    """Pooled over segments (and seeds): how many, the share caught, the median (never = slowest)."""
    return {"segments": len(latencies),
            "share_caught": float(np.mean([x is not None for x in latencies])) if latencies else None,
            "latency_s_median": censored_quantile(latencies, 0.5)}
