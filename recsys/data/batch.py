"""One training batch: TorchRec KeyedJaggedTensors for ids and sequences, dense tensors for the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipelines import contract
from recsys.data.transferable import TensorFields


@dataclass
class Batch(TensorFields):
    sparse: KeyedJaggedTensor  # one id per sample for each of contract.SPARSE_FEATURES (table rows)
    sequences: KeyedJaggedTensor  # keys "<gsu>.<field>", one jagged sequence per sample
    dense: torch.Tensor  # [B, D] float32, contract.DENSE_FEATURES
    labels: torch.Tensor  # [B, T] float32, 1 for pos and pu_pos
    states: torch.Tensor  # [B, T] int64 label states (masked / neg / pos / pu_pos)
    report_ts: torch.Tensor  # [B] int64 ms
    request_ts: torch.Tensor  # [B] int64 ms
    impression_id: torch.Tensor  # [B] int64

    def __len__(self) -> int:
        return self.dense.shape[0]


def labels_of(states: torch.Tensor) -> torch.Tensor:
    """[B, T] float32 labels of label states: 1 for pos and pu_pos, else 0 (masked states carry
    no gradient whatever their label)."""
    return torch.isin(states, torch.tensor(contract.POSITIVE_STATES, device=states.device)).to(torch.float32)


def sequence_feature(gsu: str, field: str) -> str:
    """The key of one GSU field in `Batch.sequences`."""
    return f"{gsu}.{field}"


def _kjt(keys: list[str], values: list[np.ndarray], lengths: list[np.ndarray]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
    )


def to_batch(arrays: dict[str, np.ndarray]) -> Batch:
    """The arrays of one batch, keyed as in the shards (data_pipelines/contract.py)."""
    n = len(arrays["report_ts"])
    ones = np.ones(n, dtype=np.int32)
    sparse = _kjt(list(contract.SPARSE_FEATURES), [arrays[contract.sparse_key(k)] for k in contract.SPARSE_FEATURES],
                  [ones] * len(contract.SPARSE_FEATURES))
    keys, values, lengths = [], [], []
    for gsu in contract.GSU_NAMES:
        for field in contract.SEQUENCE_FIELDS:
            keys.append(sequence_feature(gsu, field))
            values.append(arrays[contract.sequence_key(gsu, field)])
            lengths.append(arrays[contract.lengths_key(gsu)])
    state = torch.from_numpy(arrays["state"].astype(np.int64))
    return Batch(
        sparse=sparse,
        sequences=_kjt(keys, values, lengths),
        dense=torch.from_numpy(np.ascontiguousarray(arrays["dense"], dtype=np.float32)),
        labels=labels_of(state),
        states=state,
        report_ts=torch.from_numpy(arrays["report_ts"].astype(np.int64)),
        request_ts=torch.from_numpy(arrays["request_ts"].astype(np.int64)),
        impression_id=torch.from_numpy(arrays["impression_id"].astype(np.int64)),
    )
