"""The impressions replay scores: the `final` stream (one sample per impression, every task's final
label), ordered by request time, with the groups the report breaks results down by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_pipelines.streams.labels import POS
from recsys.data import ShardDataset
from recsys.data.loader import concat_arrays, take_rows
from recsys.train.metrics import LIVE_HISTORY_FEATURE, light_users



@dataclass
class EvaluationSet:
    arrays: dict[str, np.ndarray]  # final-stream samples sorted by request_ts (shard layout)
    request_ts: np.ndarray  # [N]
    labels: np.ndarray  # [N, T] 0/1 final truth per task
    groups: dict[str, np.ndarray]  # name -> [N] bool: overall, highlight (simulated worlds), light/heavy users
    live_id: np.ndarray  # [N]
    true_ctr: np.ndarray | None  # [N] the simulator's click probability (simulated worlds only)
    highlight_segment: np.ndarray | None  # [N] segment id, -1 outside highlights

    def __len__(self) -> int:
        return len(self.request_ts)

    def rows(self, rows: np.ndarray, gsu_names: list[str]) -> dict[str, np.ndarray]:
        return take_rows(self.arrays, rows, gsu_names)


def load_evaluation(dataset: ShardDataset, canonical_dir: Path, truth_dir: Path | None, dense_features: list[str],
                    light_user_max_live: int) -> EvaluationSet:
    parts = list(dataset.micro_batches())
    if not parts:
        raise ValueError(f"{dataset.shard_dir}: the evaluation stream is empty")
    arrays = concat_arrays(parts)
    order = np.argsort(arrays["request_ts"], kind="stable")
    arrays = take_rows(arrays, order, dataset.gsu_names)
    n = len(order)

    impressions = pd.read_parquet(canonical_dir / "live_impressions.parquet",
                                  columns=["impression_id", "user_id", "live_id", "request_ts"])
    by_id = impressions.set_index("impression_id").loc[arrays["impression_id"]]
    light = light_users(arrays["dense"][:, dense_features.index(LIVE_HISTORY_FEATURE)], light_user_max_live)
    groups = {"overall": np.ones(n, dtype=bool), "light_users": light, "heavy_users": ~light}

    true_ctr = segment = None
    if truth_dir is not None and (truth_dir / "live_impressions.parquet").exists():
        truth = pd.read_parquet(truth_dir / "live_impressions.parquet",
                                columns=["user_id", "live_id", "timestamp", "true_ctr", "highlight_segment"])
        keys = pd.DataFrame({"user_id": by_id["user_id"].to_numpy(), "live_id": by_id["live_id"].to_numpy(),
                             "timestamp": by_id["request_ts"].to_numpy()})
        joined = keys.merge(truth, how="left", on=["user_id", "live_id", "timestamp"], validate="many_to_one")
        if joined["true_ctr"].isna().any():
            raise ValueError(f"{truth_dir}: {int(joined['true_ctr'].isna().sum())} impressions have no ground truth")
        true_ctr = joined["true_ctr"].to_numpy()
        segment = joined["highlight_segment"].to_numpy()
        groups = {"overall": groups["overall"], "highlight": segment >= 0, **{k: v for k, v in groups.items()
                                                                             if k != "overall"}}
    return EvaluationSet(arrays=arrays, request_ts=arrays["request_ts"].astype(np.int64),
                         labels=(arrays["state"] == POS).astype(np.float32), groups=groups,
                         live_id=by_id["live_id"].to_numpy(), true_ctr=true_ctr, highlight_segment=segment)
