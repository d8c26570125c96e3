"""The batch closer: when a label stream's samples are learned — in report order, in batches that close when full or
when their oldest sample has waited `max_wait_ms`, whichever comes first.

The batches are a function of the samples alone (their report times), not of how often the clock
is advanced: `advance(now)` trains, in order, every batch that has closed by `now`. A batch closes
at the report time of its last sample when it fills up, else at its oldest sample's report time +
`max_wait_ms`, and holds the samples reported before then. So no sample is learned before it was
reported, nor later than `max_wait_ms` after, whatever the batch size.

The caller's side of the contract: before `advance(now)`, `add` every sample reported before `now`
(a timed-out batch is cut on the assumption that nothing reported before its deadline is missing).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_pipelines.micro_batch import MicroBatch, concat_arrays, take_rows


class BatchCloser:
    def __init__(self, train_step: Callable[[MicroBatch, int], object], batch_size: int, max_wait_ms: int):
        """`train_step(batch, closed_at_ms)` learns one batch (arrays in the stream's layout)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_wait_ms < 1:
            raise ValueError(f"max_wait_ms must be at least 1, got {max_wait_ms}")
        self.train_step = train_step
        self.batch_size = int(batch_size)
        self.max_wait_ms = int(max_wait_ms)
        self._parts: list[MicroBatch] = []  # added, not learned yet, in report order
        self._pending = 0
        self._newest_added = np.iinfo(np.int64).min
        self.now_ms = np.iinfo(np.int64).min
        self.batches = 0
        self.samples = 0

    @property
    def pending(self) -> int:
        return self._pending

    def add(self, samples: MicroBatch | None) -> None:
        """Samples in report order, none reported before anything added earlier."""
        if samples is None or len(samples["report_ts"]) == 0:
            return
        ts = samples["report_ts"]
        if ts[0] < self._newest_added or np.any(np.diff(ts) < 0):
            raise ValueError("samples must be added in report_ts order")
        self._newest_added = int(ts[-1])
        self._parts.append(samples)
        self._pending += len(ts)

    def advance(self, now_ms: int) -> int:
        """Learn every batch closed by `now_ms`; returns how many. Time never runs backwards."""
        if now_ms < self.now_ms:
            raise ValueError(f"the clock went back from {self.now_ms} to {now_ms}")
        self.now_ms = int(now_ms)
        trained = 0
        while self._pending:
            head = self._head()
            ts = head["report_ts"]
            deadline = int(ts[0]) + self.max_wait_ms
            # The batch: up to batch_size samples reported before the deadline.
            n = min(self.batch_size, int(np.searchsorted(ts, deadline, side="left")))
            closed_at = int(ts[n - 1]) if n == self.batch_size else deadline
            if closed_at > now_ms:
                break
            batch = take_rows(head, np.arange(n))
            self._parts = [take_rows(head, np.arange(n, len(ts)))] if n < len(ts) else []
            self._pending -= n
            self.train_step(batch, closed_at)
            self.batches += 1
            self.samples += n
            trained += 1
        return trained

    def _head(self) -> MicroBatch:
        """The pending samples as one set of arrays (merged on demand)."""
        if len(self._parts) > 1:
            self._parts = [concat_arrays(self._parts)]
        return self._parts[0]
