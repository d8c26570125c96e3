"""Gradient-boosted trees: the peer a ranking engineer tries before any embedding model.

One LightGBM booster per task over one flat row per sample:

  ids (user, live room, author, category, live type)      as categorical features (table rows)
  hour, the user's activity buckets                        as numbers (they are ordinal)
  the dense counters (contract.DENSE_FEATURES)             as they are
  per GSU: its length, the share of its elements by the candidate's author, of the candidate room
           itself, of live-domain elements, and the mean gap and watch buckets

Trees need no embeddings: a room or a user never seen in the samples fitted falls to the "other"
side of every categorical split on its column, as a missing value does (LightGBM's rule), and the
rest of the row carries it. A booster is refitted from scratch on every sample learned so far
(recsys/learning/gbdt.py), which is how such a model is kept fresh: trees are not updated in place.
Replay only, never served.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data_pipelines.contract import DENSE_FEATURES, LIVE, SPARSE_FEATURES, TARGET_FEATURES
from recsys.data.batch import Batch, sequence_feature

CATEGORICAL = ("user_id", "live_item", "author_id", "category", "live_type")  # ids: no order among them
GSU_STATISTICS = ("length", "same_author", "same_room", "live_share", "mean_gap", "mean_watch")


@dataclass(frozen=True)
class GbdtSpec:
    """conf/model/lightgbm.yaml: the boosters' parameters (LightGBM's names) and the refit interval."""

    num_boost_round: int  # trees per task per refit
    refit_every_s: int  # a refit at most this often (replay seconds); pushes in between serve the last one
    params: dict = field(default_factory=dict)  # LightGBM parameters (num_leaves, learning_rate, ...)
    drop_features: list[str] = field(default_factory=list)  # columns left out (an ablation), or "<gsu>.*"

    def __post_init__(self) -> None:
        if self.num_boost_round < 1:
            raise ValueError(f"model.num_boost_round must be >= 1, got {self.num_boost_round}")
        if self.refit_every_s <= 0:
            raise ValueError(f"model.refit_every_s must be > 0, got {self.refit_every_s}")
        reserved = {"objective", "seed", "categorical_feature", "verbosity"} & set(self.params)
        if reserved:
            raise ValueError(f"model.params may not set {sorted(reserved)}: the learner sets them")

    def columns(self, gsu_names: list[str]) -> list[int]:
        """The indices of `feature_names(gsu_names)` the boosters see (all but `drop_features`)."""
        names = feature_names(gsu_names)
        unknown = [p for p in self.drop_features if not any(_matches(n, p) for n in names)]
        if unknown:
            raise ValueError(f"model.drop_features names no feature: {unknown} (features: {names})")
        return [i for i, n in enumerate(names) if not any(_matches(n, p) for p in self.drop_features)]


def _matches(name: str, pattern: str) -> bool:
    """A feature name against a drop_features entry: the name itself, or "<gsu>.*" for a GSU's all."""
    return name == pattern or (pattern.endswith(".*") and name.startswith(pattern[:-1]))


def feature_names(gsu_names: list[str]) -> list[str]:
    """The columns of `features`, in order."""
    return [*SPARSE_FEATURES, *DENSE_FEATURES,
            *(f"{gsu}.{statistic}" for gsu in gsu_names for statistic in GSU_STATISTICS)]


def features(batch: Batch, gsu_names: list[str]) -> np.ndarray:
    """[B, len(feature_names)] float64: one row per sample (ids exact: table rows are far below 2**53)."""
    n = len(batch)
    sparse = batch.sparse.values().numpy().reshape(len(SPARSE_FEATURES), n).T  # one id per sample and feature
    item, author = (sparse[:, SPARSE_FEATURES.index(f)] for f in TARGET_FEATURES)
    sequences = batch.sequences.to_dict()
    columns = [sparse.astype(np.float64), batch.dense.numpy().astype(np.float64)]
    for gsu in gsu_names:
        lengths = sequences[sequence_feature(gsu, "item")].lengths().numpy()
        owner = np.repeat(np.arange(n), lengths)

        def mean(values: np.ndarray) -> np.ndarray:
            total = np.bincount(owner, weights=values.astype(np.float64), minlength=n)
            return np.divide(total, lengths, out=np.zeros(n), where=lengths > 0)

        def field_of(name: str) -> np.ndarray:
            return sequences[sequence_feature(gsu, name)].values().numpy()

        columns.append(np.stack([lengths.astype(np.float64),
                                 mean(field_of("author") == author[owner]),
                                 mean(field_of("item") == item[owner]),
                                 mean(field_of("domain") == LIVE),
                                 mean(field_of("gap")),
                                 mean(field_of("watch"))], axis=1))
    return np.concatenate(columns, axis=1)
