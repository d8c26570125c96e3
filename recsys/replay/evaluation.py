"""The impressions replay scores: the `final` stream (one sample per impression, every task's final
label), ordered by request time, with the groups the report breaks results down by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.contract import DENSE_FEATURES, LIVE_HISTORY_FEATURE, POS, sparse_key
from data_pipelines.dataset import FINAL, DataSet
from recsys.data import ShardDataset
from data_pipelines.micro_batch import concat_arrays, take_rows
from recsys.metrics import light_users


@dataclass
class EvaluationSet:
    arrays: dict[str, np.ndarray]  # final-stream samples sorted by request_ts (shard layout)
    request_ts: np.ndarray  # [N]
    labels: np.ndarray  # [N, T] 0/1 final truth per task
    users: np.ndarray  # [N] user table rows, for GAUC
    groups: dict[str, np.ndarray]  # name -> [N] bool: overall, highlight (simulated worlds), light/heavy users
    live_id: np.ndarray  # [N]
    true_ctr: np.ndarray | None  # [N] the simulator's click probability (simulated worlds only)
    highlight_segment: np.ndarray | None  # [N] segment id (a row of `highlights`), -1 outside highlights
    highlights: pd.DataFrame | None  # live_id, start_timestamp, end_timestamp per segment (simulated worlds)

    def __len__(self) -> int:
        return len(self.request_ts)

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return take_rows(self.arrays, rows)

    def first(self, until_ms: int) -> "EvaluationSet":
        """The impressions requested before `until_ms` (a prefix: the set is in request order)."""
        n = int(np.searchsorted(self.request_ts, until_ms, side="left"))
        keep = np.arange(n)

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:n]

        return EvaluationSet(arrays=take_rows(self.arrays, keep), request_ts=self.request_ts[:n],
                             labels=self.labels[:n], users=self.users[:n],
                             groups={g: m[:n] for g, m in self.groups.items()},
                             live_id=self.live_id[:n], true_ctr=cut(self.true_ctr),
                             highlight_segment=cut(self.highlight_segment), highlights=self.highlights)


def _ground_truth(data: DataSet, impressions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(true click probability, highlight segment or -1) of each impression, from the simulator's
    truth; None for a data set without it (real logs)."""
    if not data.truth.live_impressions.exists():
        return None
    truth = pd.read_parquet(data.truth.live_impressions,
                            columns=["user_id", "live_id", "timestamp", "true_ctr", "highlight_segment"])
    keys = pd.DataFrame({"user_id": impressions["user_id"].to_numpy(), "live_id": impressions["live_id"].to_numpy(),
                         "timestamp": impressions["request_ts"].to_numpy()})
    joined = keys.merge(truth, how="left", on=["user_id", "live_id", "timestamp"], validate="many_to_one")
    if joined["true_ctr"].isna().any():
        raise ValueError(f"{data.truth.live_impressions}: {int(joined['true_ctr'].isna().sum())} impressions "
                         f"have no ground truth")
    return joined["true_ctr"].to_numpy(), joined["highlight_segment"].to_numpy()


def load_evaluation(data: DataSet, light_user_max_live: int) -> EvaluationSet:
    dataset = ShardDataset(data.stream(FINAL), batch_size=1)
    parts = list(dataset.micro_batches())
    if not parts:
        raise ValueError(f"{dataset.shard_dir}: the evaluation stream is empty")
    arrays = concat_arrays(parts)
    arrays = take_rows(arrays, np.argsort(arrays["request_ts"], kind="stable"))
    n = len(arrays["request_ts"])

    impressions = pd.read_parquet(data.canonical.live_impressions,
                                  columns=["impression_id", "user_id", "live_id", "request_ts"])
    by_id = impressions.set_index("impression_id").loc[arrays["impression_id"]]
    light = light_users(arrays["dense"][:, DENSE_FEATURES.index(LIVE_HISTORY_FEATURE)], light_user_max_live)
    groups = {"overall": np.ones(n, dtype=bool), "light_users": light, "heavy_users": ~light}
    true_ctr = segment = highlights = None
    truth = _ground_truth(data, by_id)
    if truth is not None:
        true_ctr, segment = truth
        highlights = pd.read_parquet(data.truth.highlights, columns=["live_id", "start_timestamp", "end_timestamp"])
        groups = {"overall": groups.pop("overall"), "highlight": segment >= 0, **groups}
    return EvaluationSet(arrays=arrays, request_ts=arrays["request_ts"].astype(np.int64),
                         labels=(arrays["state"] == POS).astype(np.float32),
                         users=arrays[sparse_key("user_id")].astype(np.int64), groups=groups,
                         live_id=by_id["live_id"].to_numpy(), true_ctr=true_ctr, highlight_segment=segment,
                         highlights=highlights)
