"""Batches as the model consumes them.

Sequence lookups take fbgemm's fast CPU path: every target id and every (sample, position, GSU)
element is its own bag of length 0 or 1 in a pooled EmbeddingBagCollection (pooled SUM over one id
is that id's row), and each table has a single feature. An un-pooled EmbeddingCollection has a CPU
backward an order of magnitude slower, and a table shared by several features falls off the
parallel row-wise Adagrad kernel onto a serial loop (DESIGN.md, "Measured on this machine").

So the sequence KJT has two keys, "item" and "author" (contract.SEQUENCE_ID_FIELDS), each with B + B * L * G
bags: first the B targets (the live of each sample, or its author), then bag B + (b * L + l) * G + g
holding element l of GSU g of sample b, or nothing. The lookup output [B + B * L * G, 2 * d] splits
into the targets [B, 2 * d] and, viewed as [B, L, G * 2 * d], every position's 2 * G embedding slots
side by side: slot 2 * g + f for field f of GSU g (`embedding_slots`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipelines.contract import SEQUENCE_ID_FIELDS, SIDE_FIELDS, TARGET_FEATURES
from recsys.data.batch import Batch, sequence_feature
from recsys.data.transferable import TensorFields


@dataclass
class ModelInput(TensorFields):
    pooled: KeyedJaggedTensor  # stride B: one id per sample per pooled feature
    sequence: KeyedJaggedTensor  # keys SEQUENCE_ID_FIELDS, B + B * L * G bags each: see the module's doc
    side: torch.Tensor  # [B, G, L, len(SIDE_FIELDS)] side buckets (0 = padding)
    mask: torch.Tensor  # [B, G, L] bool, True at real elements
    dense: torch.Tensor  # [B, D]
    states: torch.Tensor  # [B, T]
    user: torch.Tensor  # [B] user rows, for GAUC
    targets: torch.Tensor  # [B, len(SEQUENCE_ID_FIELDS)] the target live's item and author rows (the wide part's ids)

    def __len__(self) -> int:
        return self.dense.shape[0]


def embedding_slots(gsu_names: list[str]) -> list[str]:
    """Names of the 2 * G embedding slots of a sequence position, in lookup output order."""
    return [f"{g}.{field}" for g in gsu_names for field in SEQUENCE_ID_FIELDS]


def sequence_bags(target_ids: torch.Tensor, seq_ids: torch.Tensor, mask: torch.Tensor) -> KeyedJaggedTensor:
    """target_ids [B, 2] and seq_ids [B, G, L, 2] (item, author rows), mask [B, G, L] -> the
    sequence KJT. Plain tensor code: the export traces it with torch.fx."""
    by_position = mask.transpose(1, 2)  # [B, L, G]: bags in (b, l, g) order
    bags = torch.cat([torch.ones_like(target_ids[:, 0], dtype=torch.bool), by_position.reshape(-1)]).to(torch.int32)
    elements = seq_ids.transpose(1, 2)[by_position]  # [N, 2]
    return KeyedJaggedTensor(keys=list(SEQUENCE_ID_FIELDS),
                             values=torch.cat([torch.cat([target_ids[:, f], elements[:, f]])
                                               for f in range(len(SEQUENCE_ID_FIELDS))]),
                             lengths=torch.cat([bags, bags]))


def padded_sequences(batch: Batch, gsu_names: list[str],
                     seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `seq_len` elements of each GSU (the most recent or the best scored), padded:
    ids [B, G, L, 2] (SEQUENCE_ID_FIELDS rows), side [B, G, L, len(SIDE_FIELDS)] buckets, lengths [B, G]."""
    def padded(gsu: str, field: str) -> torch.Tensor:
        jagged = batch.sequences[sequence_feature(gsu, field)]
        return jagged.to_padded_dense(desired_length=seq_len, padding_value=0).long()

    if not gsu_names:
        b = len(batch)
        return (torch.zeros(b, 0, seq_len, len(SEQUENCE_ID_FIELDS), dtype=torch.long),
                torch.zeros(b, 0, seq_len, len(SIDE_FIELDS), dtype=torch.long), torch.zeros(b, 0, dtype=torch.long))
    ids = torch.stack([torch.stack([padded(g, f) for f in SEQUENCE_ID_FIELDS], -1) for g in gsu_names], 1)
    side = torch.stack([torch.stack([padded(g, f) for f in SIDE_FIELDS], -1) for g in gsu_names], 1)
    lengths = torch.stack([batch.sequences[sequence_feature(g, SEQUENCE_ID_FIELDS[0])].lengths().long().clamp(
        max=seq_len) for g in gsu_names], 1)
    return ids, side, lengths


def to_model_input(batch: Batch, gsu_names: list[str], seq_len: int, pooled_features: list[str]) -> ModelInput:
    seq_ids, side, lengths = padded_sequences(batch, gsu_names, seq_len)
    mask = torch.arange(seq_len).view(1, 1, seq_len) < lengths.unsqueeze(-1)  # [B, G, L]
    target_ids = torch.stack([batch.sparse[f].values().long() for f in TARGET_FEATURES], 1)
    pooled = KeyedJaggedTensor(
        keys=list(pooled_features),
        values=torch.cat([batch.sparse[k].values() for k in pooled_features]).long(),
        lengths=torch.ones(len(batch) * len(pooled_features), dtype=torch.int32))
    return ModelInput(pooled=pooled, sequence=sequence_bags(target_ids, seq_ids, mask), side=side, mask=mask,
                      dense=batch.dense, states=batch.states, user=batch.sparse["user_id"].values().long(),
                      targets=target_ids)
