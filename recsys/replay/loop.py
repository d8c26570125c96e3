"""The replay loop. Simulated time walks forward in steps [t_k, t_k+1) of `step_ms`. At each edge t_k:

  1. the stream's samples reported before t_k go to the streaming learner, which learns every batch
     closed by t_k (recsys/online/streaming.py: full, or its oldest sample `max_wait_ms` old);
  2. for every push interval P with a push at t_k (t_k a multiple of P, and at the first edge for
     all), the model as it is now is what serving gets until the next push: every impression
     requested in [t_k, next push) is scored with it now.

One learning run thus serves every push interval: learning is done once, and scoring costs at most
one forward per impression and interval (none where another interval already scored the impression
with the same model version, as for a model that stopped learning). An observer, if given, sees every training and scoring event in
order (the tests check the rules above with it).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from tqdm import tqdm

from recsys.data.batch import Batch, to_batch
from recsys.online.streaming import Samples, StreamingLearner
from recsys.replay.evaluation import EvaluationSet
from recsys.replay.timeline import ReportedSamples


class ReplayObserver(Protocol):
    def scored(self, push_every_ms: int, pushed_at_ms: int, request_ts: np.ndarray) -> None: ...
    def trained(self, report_ts: np.ndarray, closed_at_ms: int) -> None: ...


class Learner(Protocol):
    def train(self, batch: Batch) -> float: ...
    def predict(self, batch: Batch): ...


def replay(learner: Learner, stream: ReportedSamples, evaluation: EvaluationSet, edges: np.ndarray,
           push_every_ms: list[int], batch_size: int, max_wait_ms: int, score_batch_size: int,
           observer: ReplayObserver | None = None, progress: bool = True,
           desc: str = "replay") -> tuple[dict[int, np.ndarray], StreamingLearner]:
    """Online predictions {push interval: [N, T]} for the evaluation impressions (NaN for any
    outside the edges), and the streaming learner (its batch and sample counts)."""
    step_ms = int(edges[1] - edges[0]) if len(edges) > 1 else 1
    for p in push_every_ms:
        if p <= 0 or p % step_ms:
            raise ValueError(f"push interval {p} ms is not a positive multiple of the replay step ({step_ms} ms)")

    def train_step(batch: Samples, closed_at_ms: int) -> None:
        learner.train(to_batch(batch))
        if observer is not None:
            observer.trained(batch["report_ts"], closed_at_ms)

    streaming = StreamingLearner(train_step, batch_size, max_wait_ms)
    predictions = {p: np.full(evaluation.labels.shape, np.nan, dtype=np.float32) for p in push_every_ms}
    version = {p: np.full(len(evaluation), -1, dtype=np.int64) for p in push_every_ms}  # model version that scored
    request_ts, end = evaluation.request_ts, int(edges[-1])
    for k in tqdm(range(len(edges) - 1), desc=desc, unit="step", disable=not progress):
        t = int(edges[k])
        streaming.add(stream.until(t))
        streaming.advance(t)
        for p in push_every_ms:
            if k and t % p:
                continue
            until = min((t // p + 1) * p, end)
            first, last = np.searchsorted(request_ts, [t, until], side="left")
            rows = np.arange(first, last)
            for q in push_every_ms:  # the same model already scored some of these rows for another interval
                same = rows[version[q][rows] == streaming.batches]
                predictions[p][same], version[p][same] = predictions[q][same], streaming.batches
                rows = rows[version[q][rows] != streaming.batches]
            for a in range(0, len(rows), score_batch_size):
                chunk = rows[a:a + score_batch_size]
                predictions[p][chunk] = learner.predict(to_batch(evaluation.rows(chunk))).numpy()
                version[p][chunk] = streaming.batches
            if observer is not None and last > first:
                observer.scored(p, t, request_ts[first:last])
    return predictions, streaming
