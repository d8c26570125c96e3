"""A label stream's samples as the joiner publishes them on the broker (online/joiner.py), as a
SampleSource (recsys/learning/sources.py, like the replay's reader of a stream's shards): `until(t)`
returns every sample reported before t not handed out yet, waiting until the joiner's watermark
says none is missing. Exactly-once learning rests on offsets: `offset_for(n)` names where a consumer that has
learned the first n samples resumes (the entry after which to read, and the samples of the next
entry to skip), and a checkpoint stores it with the model, as a Kafka consumer commits its offsets
with its state.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from data_pipelines.micro_batch import MicroBatch, concat_arrays, take_rows
from data_pipelines.streams import codec
from recsys.learning.sources import ReportBuffer


class BrokerSamples:
    def __init__(self, client, stream: str, after: bytes = b"0-0", skip: int = 0, position: int = 0,
                 block_ms: int = 200):
        """Reads `stream` after entry `after`, dropping the first `skip` samples of the first entry
        read; `position` is the stream position of the first sample kept (the samples learned)."""
        self.client, self.stream, self.block_ms = client, stream, int(block_ms)
        self._after, self._skip = after, int(skip)
        self._done = after  # the newest entry whose samples are all learned
        self._entries: deque[tuple[bytes, int, int]] = deque()  # (id, position of its first sample, samples)
        self._read_position = int(position) - int(skip)  # of the next entry's first sample
        self._buffer = ReportBuffer(f"broker stream {stream}")  # read, not handed out
        self.watermark: int | None = None
        self.exhausted = False  # the joiner said `end` and everything was handed out
        self._ended = False

    def _read(self) -> None:
        reply = self.client.xread({self.stream: self._after}, count=64, block=self.block_ms)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                self._after = entry_id
                if fields.get(b"end"):
                    self._ended = True
                    continue
                count = int(fields[b"count"])
                self._entries.append((entry_id, self._read_position, count))
                self._read_position += count
                if count:
                    batch = codec.decode(fields[b"batch"])
                    if self._skip:
                        batch = take_rows(batch, np.arange(min(self._skip, count), count))
                    self._buffer.add(batch)
                self._skip = 0
                self.watermark = int(fields[b"watermark"])

    def first_watermark(self) -> int:
        """The watermark of the first entry (waits for it)."""
        while self.watermark is None and not self._ended:
            self._read()
        if self.watermark is None:
            raise ValueError(f"{self.stream}: the joiner ended without emitting anything")
        return self.watermark

    def until(self, t_ms: int) -> MicroBatch | None:
        # The joiner's watermark W says every sample reported at or before W has been published.
        while not self._ended and (self.watermark is None or self.watermark < t_ms - 1):
            self._read()
        out = self._buffer.cut(t_ms)
        self.exhausted = self._ended and not self._buffer
        return out

    def offset_for(self, learned: int) -> tuple[bytes, int]:
        """(entry after which to read, samples of the next entry to skip) for a consumer that has
        learned the stream's first `learned` samples; entries before it are forgotten."""
        while self._entries and self._entries[0][1] + self._entries[0][2] <= learned:
            self._done = self._entries.popleft()[0]
        if not self._entries:
            return self._done, 0
        entry_id, first, _ = self._entries[0]  # holds the first sample not learned
        return self._previous_id(entry_id), learned - first

    @staticmethod
    def _previous_id(entry_id: bytes) -> bytes:
        """The greatest id below `entry_id` (Redis ids are ms-seq); reading after it reads `entry_id` next."""
        ms, seq = (int(x) for x in entry_id.split(b"-"))
        return f"{ms}-{seq - 1}".encode() if seq > 0 else f"{ms - 1}-{2 ** 64 - 1}".encode()


class MergedBrokerSamples:
    """A label stream published by several joiner processes, one samples stream each
    (`samples.<stream>.<k>`), as one SampleSource: `until(t)` waits for every joiner's watermark to
    pass t and hands out their samples reported before t merged in (report_ts, impression, kind)
    order — one joiner's own order, so one joiner reads as before. `offset_for(n)` names, per joiner
    stream, where a consumer that has learned the first n samples handed out resumes: a checkpoint
    commits one offset per partition of the samples topic, as a Kafka consumer of several partitions does."""

    def __init__(self, client, streams: list[str], offsets: dict[str, dict] | None = None, position: int = 0,
                 block_ms: int = 200):
        """`offsets`: per stream {"after", "skip", "position"} from a checkpoint (None: from the
        start); `position`: the samples learned in all (the checkpoint's)."""
        offsets = offsets or {}
        self.streams = list(streams)
        self.parts = [BrokerSamples(client, s, offsets.get(s, {}).get("after", "0-0").encode(),
                                    int(offsets.get(s, {}).get("skip", 0)), int(offsets.get(s, {}).get("position", 0)),
                                    block_ms=block_ms) for s in self.streams]
        self._learned = {s: int(offsets.get(s, {}).get("position", 0)) for s in self.streams}  # before `_handed`
        self._position = int(position)  # samples learned before the first of `_handed`
        self._handed: deque[np.ndarray] = deque()  # per batch handed out: each row's stream (index)
        self.exhausted = False

    def first_watermark(self) -> int:
        return min(p.first_watermark() for p in self.parts)

    def until(self, t_ms: int) -> MicroBatch | None:
        cuts = [(k, part.until(t_ms)) for k, part in enumerate(self.parts)]
        self.exhausted = all(part.exhausted for part in self.parts)
        cuts = [(k, c) for k, c in cuts if c is not None]
        if not cuts:
            return None
        if len(cuts) == 1:
            batch, source = cuts[0][1], np.full(len(cuts[0][1]["report_ts"]), cuts[0][0], np.int32)
        else:
            merged = concat_arrays([c for _, c in cuts])
            order = np.lexsort((merged["kind"], merged["impression_id"], merged["report_ts"]))
            batch = take_rows(merged, order)
            source = np.concatenate([np.full(len(c["report_ts"]), k, np.int32) for k, c in cuts])[order]
        self._handed.append(source)
        return batch

    def offset_for(self, learned: int) -> dict[str, dict]:
        """Per stream {"after", "skip", "position"} for a consumer that has learned the first
        `learned` samples (in all) handed out; the batches before them are forgotten."""
        n = learned - self._position
        while self._handed and len(self._handed[0]) <= n:
            done = self._handed.popleft()
            n -= len(done)
            self._position += len(done)
            for k, count in zip(*np.unique(done, return_counts=True)):
                self._learned[self.streams[k]] += int(count)
        partial = np.bincount(self._handed[0][:n], minlength=len(self.streams)) if n and self._handed else \
            np.zeros(len(self.streams), np.int64)
        out = {}
        for k, (stream, part) in enumerate(zip(self.streams, self.parts)):
            position = self._learned[stream] + int(partial[k])
            after, skip = part.offset_for(position)
            out[stream] = {"after": after.decode(), "skip": skip, "position": position}
        return out
