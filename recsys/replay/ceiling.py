"""The ceiling: a run given one input no real system has — the room's true highlight multiplier at the
request (the factor the simulator multiplies the room's click probability by: 1 outside a highlight,
up to the segment's peak boost at its peak; data_pipelines/world/feedback.py) — as one more dense
feature, for training and scoring alike. How much of the gap between the project's model and the
truth's own ranking that input closes says how much of the gap is information the model does not
have, not learning it could do. Simulated worlds only; never a default run (a peer run with
`oracle_input: true`, conf/replay.yaml `peers.ceiling`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from data_pipelines.dataset import DataSet
from data_pipelines.micro_batch import MicroBatch
from data_pipelines.world.simulate import World

ORACLE_FEATURE = "oracle_highlight_ctr_boost"  # the dense column added after the contract's


def highlight_boost(world: World, live_id: np.ndarray, request_ts: np.ndarray) -> np.ndarray:
    """The simulator's highlight factor on the click probability of rooms `live_id` at `request_ts`
    (epoch ms), as data_pipelines/world/feedback.py applies it."""
    h = world.highlights
    segment, intensity = h.shape_at(np.asarray(live_id), np.asarray(request_ts) - np.int64(world.cfg.start_ms),
                                    world.cfg.span_ms)
    seg = np.clip(segment, 0, max(len(h) - 1, 0))
    peak = h.peak_ctr_boost[seg] if len(h) else np.ones(len(segment))
    return np.where(segment >= 0, 1.0 + (peak - 1.0) * intensity, 1.0).astype(np.float32)


def with_column(arrays: MicroBatch, column: np.ndarray) -> MicroBatch:
    """The same rows with `column` appended to their dense features."""
    return {**arrays, "dense": np.concatenate([arrays["dense"], column[:, None].astype(np.float32)], axis=1)}


def with_oracle_feature(manifest: Mapping) -> dict:
    """The manifest a ceiling model is built for: one dense feature more."""
    return {**manifest, "dense_features": [*manifest["dense_features"], ORACLE_FEATURE]}


class LoggedBoost:
    """The oracle input of every logged impression, by impression id."""

    def __init__(self, data: DataSet, world: World):
        impressions = pd.read_parquet(data.canonical.live_impressions, columns=["impression_id", "live_id",
                                                                                "request_ts"])
        self._by_id = pd.Series(highlight_boost(world, impressions["live_id"].to_numpy(),
                                                impressions["request_ts"].to_numpy()),
                                index=impressions["impression_id"].to_numpy())

    def of(self, impression_id: np.ndarray) -> np.ndarray:
        return self._by_id.loc[impression_id].to_numpy()

    def __call__(self, arrays: MicroBatch) -> MicroBatch:
        return with_column(arrays, self.of(arrays["impression_id"]))


class WithOracle:
    """A scored target (the replay's impressions or candidate sets) whose rows carry the oracle input."""

    def __init__(self, target, boost: np.ndarray):
        if len(boost) != len(target):
            raise ValueError(f"{len(boost)} oracle values for {len(target)} rows")
        self.target, self.boost, self.request_ts = target, boost, target.request_ts

    def __len__(self) -> int:
        return len(self.target)

    def rows(self, rows: np.ndarray) -> MicroBatch:
        return with_column(self.target.rows(rows), self.boost[rows])
