"""Where a learner's samples come from: a `SampleSource` hands out a label stream's samples in report
order, once each, as a clock moves — `until(t)` returns every sample reported before t not handed
out yet. The replay reads a stream's shards (`ReportedSamples`), the live loop's trainer the label
joiner's output on the broker (online/broker_samples.py); both cut at t the one way, through
`ReportBuffer`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

from data_pipelines.micro_batch import MicroBatch, concat_arrays, split_reported_before


class SampleSource(Protocol):
    exhausted: bool  # every sample there will ever be has been handed out

    def until(self, t_ms: int) -> MicroBatch | None:
        """Every sample reported before `t_ms` not handed out yet (None: none)."""


class ReportBuffer:
    """Samples read but not handed out yet, in report order: `add` refuses samples out of order,
    `cut(t)` hands out those reported before t (splitting a micro-batch that straddles t)."""

    def __init__(self, what: str):
        self.what = what  # named in the error for samples out of order
        self._parts: list[MicroBatch] = []
        self.newest_ms = np.iinfo(np.int64).min  # the newest report time added

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, part: MicroBatch) -> None:
        ts = part["report_ts"]
        if not len(ts):
            return
        if ts[0] < self.newest_ms or np.any(np.diff(ts) < 0):
            raise ValueError(f"{self.what}: samples are not in report_ts order")
        self.newest_ms = int(ts[-1])
        self._parts.append(part)

    def cut(self, t_ms: int) -> MicroBatch | None:
        if not self._parts:
            return None
        arrays = concat_arrays(self._parts) if len(self._parts) > 1 else self._parts[0]
        before, after = split_reported_before(arrays, t_ms)
        self._parts = [after] if after is not None else []
        return before


class ReportedSamples:
    """A stream's micro-batches (its shards read in order, or any in report order) as a
    SampleSource. Samples reported at or after `stop_ms` are never handed out (a model that stops
    learning there)."""

    def __init__(self, micro_batches: Iterable[MicroBatch], stop_ms: int | None = None):
        self._source: Iterator[MicroBatch] = iter(micro_batches)
        self._buffer = ReportBuffer("stream shards (rebuild them with make streams)")
        self._stop_ms = np.iinfo(np.int64).max if stop_ms is None else int(stop_ms)
        self._read_all = False
        self.exhausted = False

    def until(self, t_ms: int) -> MicroBatch | None:
        t_ms = min(int(t_ms), self._stop_ms)
        while not self._read_all and self._buffer.newest_ms < t_ms:  # a later sample may still come
            part = next(self._source, None)
            if part is None:
                self._read_all = True
            else:
                self._buffer.add(part)
        out = self._buffer.cut(t_ms)
        self.exhausted = self._read_all and not self._buffer
        return out
