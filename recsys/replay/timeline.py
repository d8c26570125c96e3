"""What a stream has reported by a given moment, and the steps replay walks through."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from recsys.data.loader import concat_arrays, take_rows


def step_edges(first_ms: int, last_ms: int, step_ms: int) -> np.ndarray:
    """Boundaries t_0 < t_1 < ... covering [first_ms, last_ms], on multiples of the step in epoch
    time (so that every push interval that is a multiple of the step pushes on an edge): step k is
    [t_k, t_k+1)."""
    if step_ms <= 0:
        raise ValueError(f"step must be positive, got {step_ms} ms")
    start = (first_ms // step_ms) * step_ms
    n = int(np.ceil((last_ms + 1 - start) / step_ms))
    return start + step_ms * np.arange(max(n, 1) + 1, dtype=np.int64)


class ReportedSamples:
    """A stream's samples in report_ts order, handed out once each: `until(t)` returns every sample
    reported before t that was not handed out yet (micro-batches straddling t are split). Samples
    reported at or after `stop_ms` are never handed out (a model that stops learning there). The
    micro-batches must come in report order (a stream's shards read with shuffle=False); `until`
    refuses any that do not."""

    def __init__(self, micro_batches: Iterable[dict[str, np.ndarray]], stop_ms: int | None = None):
        self._source: Iterator[dict[str, np.ndarray]] = iter(micro_batches)
        self._head: dict[str, np.ndarray] | None = None  # read but not handed out yet
        self._last_ts = np.iinfo(np.int64).min
        self._stop_ms = np.iinfo(np.int64).max if stop_ms is None else int(stop_ms)
        self.exhausted = False  # every sample has been handed out

    def until(self, t_ms: int) -> dict[str, np.ndarray] | None:
        t_ms = min(int(t_ms), self._stop_ms)
        parts = []
        while True:
            if self._head is None:
                self._head = next(self._source, None)
                if self._head is None:
                    self.exhausted = True
                    break
                ts = self._head["report_ts"]
                if len(ts) and (ts[0] < self._last_ts or np.any(np.diff(ts) < 0)):
                    raise ValueError("stream shards are not in report_ts order; rebuild them with make streams")
                if len(ts):
                    self._last_ts = int(ts[-1])
            ts = self._head["report_ts"]
            cut = int(np.searchsorted(ts, t_ms, side="left"))  # samples [0, cut) were reported before t
            if cut == len(ts):
                parts.append(self._head)
                self._head = None
                continue
            if cut > 0:
                parts.append(take_rows(self._head, np.arange(cut)))
                self._head = take_rows(self._head, np.arange(cut, len(ts)))
            break
        return concat_arrays(parts) if parts else None
