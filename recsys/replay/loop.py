"""The replay loop. For each step [t_k, t_k+1) of simulated time:

  1. score every impression requested in the step with the model as it is, i.e. trained only on
     samples reported before t_k (<= the impression's request time);
  2. then hand the model the samples the stream reported during the step, in report order, in full
     batches (a remainder waits for the next step: learning later than visible is allowed, earlier never).

An observer, if given, sees both events in order (the test uses it to check the rule above).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from tqdm import tqdm

from recsys.data.batch import Batch, to_batch
from recsys.data.loader import concat_arrays, take_rows
from recsys.replay.evaluation import EvaluationSet
from recsys.replay.timeline import ReportedSamples


class ReplayObserver(Protocol):
    def scored(self, request_ts: np.ndarray) -> None: ...
    def trained(self, report_ts: np.ndarray) -> None: ...


class Learner(Protocol):
    def train(self, batch: Batch) -> float: ...
    def predict(self, batch: Batch): ...


def replay(learner: Learner, stream: ReportedSamples, evaluation: EvaluationSet, edges: np.ndarray,
           batch_size: int, score_batch_size: int, observer: ReplayObserver | None = None, progress: bool = True,
           desc: str = "replay") -> np.ndarray:
    """Online predictions [N, T] for the evaluation impressions (NaN for any outside the edges)."""
    predictions = np.full(evaluation.labels.shape, np.nan, dtype=np.float32)
    starts = np.searchsorted(evaluation.request_ts, edges, side="left")
    pending: dict[str, np.ndarray] | None = None
    for k in tqdm(range(len(edges) - 1), desc=desc, unit="step", disable=not progress):
        for a in range(starts[k], starts[k + 1], score_batch_size):
            rows = np.arange(a, min(a + score_batch_size, starts[k + 1]))
            predictions[rows] = learner.predict(to_batch(evaluation.rows(rows))).numpy()
            if observer is not None:
                observer.scored(evaluation.request_ts[rows])
        new = stream.until(int(edges[k + 1]))
        if new is not None:
            pending = new if pending is None else concat_arrays([pending, new])
        if pending is None:
            continue
        n = len(pending["report_ts"])
        full = n // batch_size
        for b in range(full):
            rows = np.arange(b * batch_size, (b + 1) * batch_size)
            learner.train(to_batch(take_rows(pending, rows)))
            if observer is not None:
                observer.trained(pending["report_ts"][rows])
        pending = take_rows(pending, np.arange(full * batch_size, n)) if full * batch_size < n else None
    return predictions
