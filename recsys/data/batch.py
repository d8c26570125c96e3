"""One training batch: TorchRec KeyedJaggedTensors for ids and sequences, dense tensors for the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipelines.streams.labels import POS, PU_POS
from recsys.data.transferable import TensorFields


@dataclass
class Batch(TensorFields):
    sparse: KeyedJaggedTensor  # one id per sample for each sparse feature (table rows)
    sequences: KeyedJaggedTensor  # keys "<gsu>.<field>", one jagged sequence per sample
    dense: torch.Tensor  # [B, D] float32
    labels: torch.Tensor  # [B, T] float32, 1 for pos and pu_pos
    states: torch.Tensor  # [B, T] int64 label states (masked / neg / pos / pu_pos)
    report_ts: torch.Tensor  # [B] int64 ms
    request_ts: torch.Tensor  # [B] int64 ms
    impression_id: torch.Tensor  # [B] int64

    def __len__(self) -> int:
        return self.dense.shape[0]


def _kjt(keys: list[str], values: list[np.ndarray], lengths: list[np.ndarray]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
    )


def to_batch(arrays: dict[str, np.ndarray], sparse_features: list[str], gsu_names: list[str],
             sequence_fields: list[str]) -> Batch:
    """Arrays of one batch, as stored in the shards (see data_pipelines/streams/shards.py)."""
    n = len(arrays["report_ts"])
    ones = np.ones(n, dtype=np.int32)
    sparse = _kjt(sparse_features, [arrays[f"sparse.{k}"] for k in sparse_features], [ones] * len(sparse_features))
    keys, values, lengths = [], [], []
    for name in gsu_names:
        for field in sequence_fields:
            keys.append(f"{name}.{field}")
            values.append(arrays[f"seq.{name}.{field}"])
            lengths.append(arrays[f"seq.{name}.lengths"])
    state = torch.from_numpy(arrays["state"].astype(np.int64))
    return Batch(
        sparse=sparse,
        sequences=_kjt(keys, values, lengths),
        dense=torch.from_numpy(np.ascontiguousarray(arrays["dense"], dtype=np.float32)),
        labels=((state == POS) | (state == PU_POS)).to(torch.float32),
        states=state,
        report_ts=torch.from_numpy(arrays["report_ts"].astype(np.int64)),
        request_ts=torch.from_numpy(arrays["request_ts"].astype(np.int64)),
        impression_id=torch.from_numpy(arrays["impression_id"].astype(np.int64)),
    )
