"""What each replayed run learns from. Besides the data set's label streams (realtime, fast_slow):

- `oracle`: every task's final label visible at the request time itself, the bound on label
  freshness (built from the evaluation impressions; replay only, no system could serve it);
- `frozen`: a stream's samples reported in the first share of the timeline, then nothing (a model
  trained once and never updated).

- a peer (conf/replay.yaml `peers`: DLRM, DCN-v2, LightGBM, the project's model without Cross): another model
  learning a stream (realtime by default) exactly as the project's model learns it — the same
  samples, batches, push intervals and candidate sets — so that the two differ in the model only.

`replay.room_state=false` zeroes the room's real-time dense features for training and scoring
alike, to separate what fresh labels add from what fresh features add (for every run; a peer's
`room_state: false` for that run alone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from data_pipelines.contract import DENSE_FEATURES, ROOM_STATE_FEATURES
from data_pipelines.dataset import FINAL, DataSet
from recsys.data import ShardDataset
from data_pipelines.micro_batch import take_rows
from recsys.replay.evaluation import EvaluationSet
from recsys.learning.sources import ReportedSamples
from recsys.model.factory import CrossSpec, ModelSpec
from recsys.model.gbdt import GbdtSpec
from recsys.model.peers import PeerSpec

ORACLE = "oracle"
FROZEN = "frozen"
_SLICE = 1024


@dataclass(frozen=True)
class PeerRun:
    """conf/replay.yaml `peers.<name>`: a run that learns `stream` (a label stream, oracle or frozen)
    with a model and GSUs of its own — and, with `freeze_tables`, those embedding tables learning only
    until `freeze_after_share` of the timeline (the rest of the model learning on)."""

    stream: str
    model: ModelSpec | PeerSpec | GbdtSpec  # conf/model/*.yaml
    cross: CrossSpec  # conf/cross/*.yaml
    freeze_tables: tuple[str, ...] = ()  # e.g. (item, author): the rooms' and authors' embeddings
    freeze_after_share: float = 1.0
    oracle_input: bool = False  # the ceiling: the room's true highlight multiplier as one more input
    room_state: bool = True  # false: the room's real-time counters zeroed for this run (learning and scoring)

    @property
    def role(self) -> str:
        """What the run is for: "peer", another model a ranking engineer could deploy; "control", a
        run that measures something — an input no system has (the ceiling), a part of the model held
        still, or the room's counters taken away."""
        return "control" if self.oracle_input or self.freeze_tables or not self.room_state else "peer"

    def __post_init__(self) -> None:
        if not isinstance(self.model, (ModelSpec, PeerSpec, GbdtSpec)) or not isinstance(self.cross, CrossSpec):
            raise TypeError("a peer run's model and cross must be conf/model and conf/cross nodes")
        if isinstance(self.model, GbdtSpec) and (self.freeze_tables or self.oracle_input):
            raise ValueError("a gradient-boosted trees peer has no tables to freeze and takes no oracle input")
        if self.oracle_input and not self.room_state:
            raise ValueError("a ceiling run keeps the room's counters: oracle_input needs room_state true")
        object.__setattr__(self, "freeze_tables", tuple(self.freeze_tables))
        if not 0 < self.freeze_after_share <= 1:
            raise ValueError(f"freeze_after_share must be in (0, 1], got {self.freeze_after_share}")


def share_of_timeline(edges: np.ndarray, share: float) -> int:
    """The time (ms) `share` of the way through the replay's clock."""
    return int(edges[0] + share * (edges[-1] - edges[0]))


def learned_stream(run: str, peers: Mapping[str, PeerRun]) -> str:
    """What a run learns from: a peer's stream, else the run's own name (a label stream, oracle, frozen)."""
    return peers[run].stream if run in peers else run


def without_room_state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same samples with the room's real-time dense features set to 0 (the manifest reader
    holds every stream to the contract's dense feature order)."""
    columns = [DENSE_FEATURES.index(f) for f in ROOM_STATE_FEATURES]
    dense = arrays["dense"].copy()
    dense[:, columns] = 0.0
    return {**arrays, "dense": dense}


class WithoutRoomState:
    """A scored target whose rows have the room's real-time dense features zeroed."""

    def __init__(self, target):
        self.target, self.request_ts = target, target.request_ts

    def __len__(self) -> int:
        return len(self.target)

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return without_room_state(self.target.rows(rows))


def oracle_samples(evaluation: EvaluationSet) -> dict[str, np.ndarray]:
    """The evaluation impressions as training samples reported at their request time."""
    return {**evaluation.arrays, "report_ts": evaluation.arrays["request_ts"].copy()}


def manifest_for(data: DataSet, run: str, frozen_stream: str) -> Mapping:
    """The manifest whose vocabularies and sequences the run's model is built for."""
    return data.manifest({ORACLE: FINAL, FROZEN: frozen_stream}.get(run, run))


def training_samples(run: str, data: DataSet, evaluation: EvaluationSet, edges: np.ndarray, frozen_stream: str,
                     frozen_train_share: float, room_state: bool,
                     transform: Callable[[dict], dict] | None = None) -> ReportedSamples:
    """The samples one replayed run learns from, in report order (each micro-batch through
    `transform` last, when given)."""
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
            stop = share_of_timeline(edges, frozen_train_share)
    if not room_state:
        parts = map(without_room_state, parts)
    if transform is not None:
        parts = map(transform, parts)
    return ReportedSamples(parts, stop_ms=stop)
