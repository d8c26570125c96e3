"""What each replayed run learns from. Besides the data set's label streams (realtime, fast_slow):

- `oracle`: every task's final label visible at the request time itself, the bound on label
  freshness (built from the evaluation impressions; replay only, no system could serve it);
- `frozen`: a stream's samples reported in the first share of the timeline, then nothing (a model
  trained once and never updated).

`replay.room_state=false` zeroes the room's real-time dense features for training and scoring
alike, to separate what fresh labels add from what fresh features add.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from data_pipelines.contract import DENSE_FEATURES, ROOM_STATE_FEATURES
from data_pipelines.dataset import FINAL, DataSet
from recsys.data import ShardDataset
from data_pipelines.micro_batch import take_rows
from recsys.replay.evaluation import EvaluationSet
from recsys.learning.sources import ReportedSamples

ORACLE = "oracle"
FROZEN = "frozen"
_SLICE = 1024


def without_room_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same samples with the room's real-time dense features set to 0 (the manifest reader
    holds every stream to the contract's dense feature order)."""
    columns = [DENSE_FEATURES.index(f) for f in ROOM_STATE_FEATURES]
    dense = arrays["dense"].copy()
    dense[:, columns] = 0.0
    return {**arrays, "dense": dense}


def oracle_samples(evaluation: EvaluationSet) -> dict[str, np.ndarray]:
    """The evaluation impressions as training samples reported at their request time."""
    return {**evaluation.arrays, "report_ts": evaluation.arrays["request_ts"].copy()}


def manifest_for(data: DataSet, run: str, frozen_stream: str) -> Mapping:
    """The manifest whose vocabularies and sequences the run's model is built for."""
    return data.manifest({ORACLE: FINAL, FROZEN: frozen_stream}.get(run, run))


def training_samples(run: str, data: DataSet, evaluation: EvaluationSet, edges: np.ndarray, frozen_stream: str,
                     frozen_train_share: float, room_state: bool) -> ReportedSamples:
    """The samples one replayed run learns from, in report order."""
    if run == ORACLE:
        oracle = oracle_samples(evaluation)
        n = len(oracle["report_ts"])  # handed out in slices: each step then cuts a small head, not the whole
        parts: Iterable[dict[str, np.ndarray]] = (take_rows(oracle, np.arange(a, min(a + _SLICE, n)))
                                                  for a in range(0, n, _SLICE))
        stop = None
    else:
        stream = frozen_stream if run == FROZEN else run
        parts = ShardDataset(data.stream(stream), batch_size=1).micro_batches()
        stop = None
        if run == FROZEN:
            if not 0 < frozen_train_share <= 1:
                raise ValueError(f"replay.frozen.train_share must be in (0, 1], got {frozen_train_share}")
            stop = int(edges[0] + frozen_train_share * (edges[-1] - edges[0]))
    if not room_state:
        parts = map(without_room_state, parts)
    return ReportedSamples(parts, stop_ms=stop)
