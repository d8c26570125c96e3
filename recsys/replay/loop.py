"""The replay loop. Simulated time walks forward in steps [t_k, t_k+1) of `step_ms`. At each edge t_k:

  1. the stream's samples reported before t_k go to the batch closer, which learns every batch
     closed by t_k (recsys/learning/batch_closer.py: full, or its oldest sample `max_wait_ms` old);
  2. for every push interval P with a push at t_k (t_k a multiple of P, and at the first edge for
     all), the model as it is now is what serving gets until the next push: every row of every
     target (the logged impressions; the candidate sets) requested in [t_k, next push) is scored
     with it now.

One learning run thus serves every push interval: learning is done once, and scoring costs at most
one forward per row and interval (none where another interval already scored the row with the
same model version, as for a model that stopped learning). An observer, if given, sees every
training and scoring event in order (the tests check the rules above with it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
from tqdm import tqdm

from data_pipelines.micro_batch import MicroBatch
from recsys.data.batch import Batch, to_batch
from recsys.learning.batch_closer import BatchCloser
from recsys.learning.sources import SampleSource


class ReplayObserver(Protocol):
    def scored(self, target: str, push_every_ms: int, pushed_at_ms: int, request_ts: np.ndarray) -> None: ...
    def trained(self, report_ts: np.ndarray, closed_at_ms: int) -> None: ...


class Scored(Protocol):
    """Rows a model scores: request times in order, and their request arrays."""

    request_ts: np.ndarray

    def __len__(self) -> int: ...
    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


class Learner(Protocol):
    def train(self, batch: Batch) -> float: ...
    def predict(self, batch: Batch): ...


def replay(learner: Learner, stream: SampleSource, targets: Mapping[str, Scored], n_tasks: int, edges: np.ndarray,
           push_every_ms: list[int], batch_size: int, max_wait_ms: int, score_batch_size: int,
           observer: ReplayObserver | None = None, progress: bool = True,
           desc: str = "replay") -> tuple[dict[str, dict[int, np.ndarray]], BatchCloser]:
    """Online predictions {target: {push interval: [N, n_tasks]}} for every target's rows (NaN for
    any outside the edges), and the batch closer (its batch and sample counts)."""
    step_ms = int(edges[1] - edges[0]) if len(edges) > 1 else 1
    for p in push_every_ms:
        if p <= 0 or p % step_ms:
            raise ValueError(f"push interval {p} ms is not a positive multiple of the replay step ({step_ms} ms)")

    def train_step(batch: MicroBatch, closed_at_ms: int) -> None:
        learner.train(to_batch(batch))
        if observer is not None:
            observer.trained(batch["report_ts"], closed_at_ms)

    closer = BatchCloser(train_step, batch_size, max_wait_ms)
    predictions = {name: {p: np.full((len(rows), n_tasks), np.nan, dtype=np.float32) for p in push_every_ms}
                   for name, rows in targets.items()}
    version = {name: {p: np.full(len(rows), -1, dtype=np.int64) for p in push_every_ms}  # model version that scored
               for name, rows in targets.items()}
    end = int(edges[-1])
    for k in tqdm(range(len(edges) - 1), desc=desc, unit="step", disable=not progress):
        t = int(edges[k])
        closer.add(stream.until(t))
        closer.advance(t)
        for p in push_every_ms:
            if k and t % p:
                continue
            until = min((t // p + 1) * p, end)
            for name, target in targets.items():
                first, last = np.searchsorted(target.request_ts, [t, until], side="left")
                _score(learner, target, np.arange(first, last), predictions[name], version[name], p,
                       closer.batches, score_batch_size)
                if observer is not None and last > first:
                    observer.scored(name, p, t, target.request_ts[first:last])
    return predictions, closer


def _score(learner: Learner, target: Scored, rows: np.ndarray, predictions: dict[int, np.ndarray],
           version: dict[int, np.ndarray], p: int, model_version: int, score_batch_size: int) -> None:
    """Interval p's predictions of `rows` by the model as it is (version `model_version`)."""
    for q in predictions:  # the same model already scored some of these rows for another interval
        same = rows[version[q][rows] == model_version]
        predictions[p][same], version[p][same] = predictions[q][same], model_version
        rows = rows[version[q][rows] != model_version]
    for a in range(0, len(rows), score_batch_size):
        chunk = rows[a:a + score_batch_size]
        predictions[p][chunk] = learner.predict(to_batch(target.rows(chunk))).numpy()
        version[p][chunk] = model_version
