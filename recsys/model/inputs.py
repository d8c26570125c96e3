"""Batches as the model consumes them.

Sequence lookups take TorchRec's fast CPU path: every sequence position is its own bag of length
0 or 1 in an EmbeddingBagCollection (pooled SUM over one id is that id's row), instead of an
un-pooled EmbeddingCollection whose CPU backward is an order of magnitude slower (DESIGN.md).
So the sequence KJT has stride B * L: bag b * L + p holds element p of sample b, or nothing.
The target live and its author ride in the same KJT at position 0, so they share the item and
author tables with the sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.batch import Batch
from recsys.data.transferable import TensorFields

SIDE_FIELDS = ("gap", "watch", "domain")
TARGET_SEQUENCE_FEATURES = ("live_item", "author_id")  # looked up with the sequences' tables


@dataclass
class ModelInput(TensorFields):
    pooled: KeyedJaggedTensor  # stride B: one id per sample per pooled feature
    sequence: KeyedJaggedTensor  # stride B * L: the target features and "<gsu>.item" / "<gsu>.author"
    side: torch.Tensor  # [B, G, L, 3] gap, watch, domain buckets (0 = padding)
    mask: torch.Tensor  # [B, G, L] bool, True at real elements
    dense: torch.Tensor  # [B, D]
    states: torch.Tensor  # [B, T]
    user: torch.Tensor  # [B] user rows, for GAUC

    def __len__(self) -> int:
        return self.dense.shape[0]


def _positions(lengths: torch.Tensor) -> torch.Tensor:
    """Position of each jagged value inside its sample: 0, 1, ... per sample."""
    offsets = torch.cumsum(lengths, 0) - lengths
    return torch.arange(int(lengths.sum()), dtype=torch.long) - torch.repeat_interleave(offsets, lengths)


def to_model_input(batch: Batch, gsu_names: list[str], seq_len: int, pooled_features: list[str]) -> ModelInput:
    """Keep the first `seq_len` elements of each enabled GSU (they are the most recent or the best
    scored) and lay them out as position bags."""
    b = len(batch)
    slots = torch.arange(seq_len)
    first_slot = (slots == 0).repeat(b).to(torch.int32)  # [B * L]: a target id at position 0 only
    keys, values, lengths = [], [], []
    for name in TARGET_SEQUENCE_FEATURES:
        keys.append(name)
        values.append(batch.sparse[name].values())
        lengths.append(first_slot)
    side = torch.zeros(b, len(gsu_names), seq_len, len(SIDE_FIELDS), dtype=torch.long)
    mask = torch.zeros(b, len(gsu_names), seq_len, dtype=torch.bool)
    for g, name in enumerate(gsu_names):
        jagged = batch.sequences[f"{name}.item"]
        seq_lengths = jagged.lengths().long()
        pos = _positions(seq_lengths)
        keep = pos < seq_len
        kept_len = torch.clamp(seq_lengths, max=seq_len)
        sample = torch.repeat_interleave(torch.arange(b), seq_lengths)[keep]
        mask[:, g] = slots[None, :] < kept_len[:, None]
        bag_lengths = mask[:, g].reshape(-1).to(torch.int32)
        for field in ("item", "author"):
            keys.append(f"{name}.{field}")
            values.append(batch.sequences[f"{name}.{field}"].values()[keep])
            lengths.append(bag_lengths)
        for j, field in enumerate(SIDE_FIELDS):
            side[sample, g, pos[keep], j] = batch.sequences[f"{name}.{field}"].values()[keep]
    sequence = KeyedJaggedTensor(keys=keys, values=torch.cat(values).long(), lengths=torch.cat(lengths))
    pooled = KeyedJaggedTensor(
        keys=list(pooled_features),
        values=torch.cat([batch.sparse[k].values() for k in pooled_features]).long(),
        lengths=torch.ones(b * len(pooled_features), dtype=torch.int32))
    return ModelInput(pooled=pooled, sequence=sequence, side=side, mask=mask, dense=batch.dense,
                      states=batch.states, user=batch.sparse["user_id"].values().long())
