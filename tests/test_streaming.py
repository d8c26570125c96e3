"""The streaming learner's flush rule: samples learned in report order, in batches that close when
full or when their oldest sample has waited max_wait; never before a sample's report time, never
later than max_wait after it, and the same batches however the clock is advanced."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.learning.batch_closer import BatchCloser


class Recorder:
    def __init__(self):
        self.batches: list[tuple[list[int], int, int]] = []  # (report_ts, closed_at, clock when trained)
        self.learner: BatchCloser | None = None

    def __call__(self, batch, closed_at_ms: int) -> None:
        self.batches.append((batch["report_ts"].tolist(), closed_at_ms, self.learner.now_ms))


def run(report_ts: list[int], batch_size: int, max_wait_ms: int, ticks: list[int]) -> Recorder:
    """Feed the samples as a caller must (everything reported before a tick, before advancing to it)."""
    recorder = Recorder()
    learner = BatchCloser(recorder, batch_size, max_wait_ms)
    recorder.learner = learner
    ts = np.asarray(report_ts, dtype=np.int64)
    handed = 0
    for tick in ticks:
        upto = int(np.searchsorted(ts, tick, side="left"))
        if upto > handed:
            learner.add({"report_ts": ts[handed:upto], "row": np.arange(handed, upto)})
            handed = upto
        learner.advance(tick)
    return recorder


def test_batches_close_when_full_or_when_their_oldest_sample_has_waited_max_wait():
    # batch size 3, max wait 30: [0 10 20] fills at 20; [35 36 37] fills at 37; [38] times out at 68;
    # [100 101] times out at 130 (their wait runs from 100); 200 is still waiting at the last tick.
    got = run([0, 10, 20, 35, 36, 37, 38, 100, 101, 200], 3, 30, ticks=list(range(0, 201, 10)))
    assert [(b, closed) for b, closed, _ in got.batches] == [
        ([0, 10, 20], 20), ([35, 36, 37], 37), ([38], 68), ([100, 101], 130)]
    # Each is trained at the first tick by which all of it was visible (a sample reported at 20 is
    # handed over at the tick after 20) and it had closed.
    assert [trained for _, _, trained in got.batches] == [30, 40, 70, 130]


@pytest.mark.parametrize("batch_size", [1, 7, 256])
@pytest.mark.parametrize("max_wait_ms", [1, 30_000])
def test_no_sample_is_learned_before_its_report_or_later_than_max_wait_after(batch_size, max_wait_ms):
    rng = np.random.default_rng(batch_size + max_wait_ms)
    report_ts = np.sort(rng.integers(0, 600_000, size=2_000)).tolist()
    end = 700_000
    fine = run(report_ts, batch_size, max_wait_ms, ticks=list(range(0, end, 1_000)) + [end])
    learned = [t for b, _, _ in fine.batches for t in b]
    assert learned == report_ts  # every sample once, in report order
    for batch, closed, trained in fine.batches:
        assert len(batch) <= batch_size
        assert closed >= batch[-1]  # never learned before it was reported
        assert closed <= batch[0] + max_wait_ms  # nor later than max_wait after its oldest sample...
        assert len(batch) == batch_size or closed == batch[0] + max_wait_ms  # ...small only when timed out
        assert closed <= trained <= closed + 1_000  # trained by the first tick after closing
    # A coarse, irregular clock trains the same batches, only later.
    ticks = np.unique(np.concatenate([rng.integers(0, end, size=37), [end]])).tolist()
    coarse = run(report_ts, batch_size, max_wait_ms, ticks)
    assert [(b, c) for b, c, _ in coarse.batches] == [(b, c) for b, c, _ in fine.batches]


def test_the_clock_and_the_samples_only_move_forward():
    learner = BatchCloser(lambda batch, closed: None, 4, 10)
    learner.add({"report_ts": np.array([5, 6])})
    with pytest.raises(ValueError, match="report_ts order"):
        learner.add({"report_ts": np.array([4])})
    learner.advance(100)
    with pytest.raises(ValueError, match="clock went back"):
        learner.advance(99)
    with pytest.raises(ValueError, match="batch_size"):
        BatchCloser(lambda batch, closed: None, 0, 10)
