"""The model as serving calls it: plain tensors in, per-task probabilities and the ranking score out.

    ids          [B, F] int64    one table row per id feature, in `model.json` "id_features" order
    dense        [B, D] float32  in "dense_features" order, transformed as in the shards
    seq_ids      [B, G, L, 2] int64  item and author rows of each GSU element (G GSUs, L positions)
    seq_side     [B, G, L, 3] int64  side buckets of each element (gap, watch, domain: SIDE_FIELDS)
    seq_lengths  [B, G] int64    real elements per GSU; positions past it are ignored
  -> probabilities [B, T] float32 (task order of "tasks"), score [B] float32

Inside, the tensors are laid out exactly as training lays out a batch (KeyedJaggedTensors with one
position bag per sequence slot, recsys/model/inputs.py) and go through the same TorchRec
EmbeddingBagCollections, so serving runs the trained kernels, fbgemm operators included.
"""

# No `from __future__ import annotations` here: torch.fx and TorchScript need the forward's
# annotations as real types.
from typing import NamedTuple, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.batch import Batch
from recsys.model.inputs import SIDE_FIELDS, TARGET_SEQUENCE_FEATURES
from recsys.model.moment_cross import MomentCrossModel

SEQUENCE_ID_FIELDS = ("item", "author")


class ScorerInputs(NamedTuple):
    ids: torch.Tensor
    dense: torch.Tensor
    seq_ids: torch.Tensor
    seq_side: torch.Tensor
    seq_lengths: torch.Tensor

    def __len__(self) -> int:  # NamedTuple's own len is the field count; callers want candidates
        return self.ids.shape[0]

    def slice(self, start: int, end: int) -> "ScorerInputs":
        return ScorerInputs(*(t[start:end] for t in self))


def model_id_features(model: MomentCrossModel, sparse_features: list[str]) -> list[str]:
    """The id features the model reads, in the data's (manifest) order: the `ids` columns."""
    used = {*model.pooled_features, *TARGET_SEQUENCE_FEATURES}
    return [f for f in sparse_features if f in used]


class Scorer(nn.Module):
    def __init__(self, model: MomentCrossModel, id_features: list[str]):
        super().__init__()
        missing = [f for f in [*model.pooled_features, *TARGET_SEQUENCE_FEATURES] if f not in id_features]
        if missing:
            raise ValueError(f"id features {missing} of the model are not in the inputs {id_features}")
        self.model = model.eval()
        self.pooled_keys = list(model.pooled_features)
        self.sequence_keys = list(model.sequence_features)
        self.n_gsus, self.seq_len = len(model.gsu_names), model.seq_len
        self.register_buffer("pooled_columns", torch.tensor([id_features.index(f) for f in model.pooled_features]),
                             persistent=False)
        self.register_buffer("target_columns", torch.tensor(
            [id_features.index(f) for f in TARGET_SEQUENCE_FEATURES]), persistent=False)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor, seq_ids: torch.Tensor, seq_side: torch.Tensor,
                seq_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b = ids.shape[0]
        pooled = KeyedJaggedTensor(
            keys=self.pooled_keys, values=torch.index_select(ids, 1, self.pooled_columns).t().reshape(-1),
            lengths=torch.ones(b * len(self.pooled_keys), dtype=torch.int32))
        # One bag per (sample, position): the target ids sit at position 0, a GSU element at its own.
        slots = torch.arange(self.seq_len)
        mask = slots.view(1, 1, self.seq_len) < seq_lengths.unsqueeze(-1)  # [B, G, L]
        target = torch.index_select(ids, 1, self.target_columns)
        first_slot = (slots == 0).repeat(b).to(torch.int32)
        values, lengths = [target[:, 0], target[:, 1]], [first_slot, first_slot]
        by_gsu = seq_ids.permute(1, 3, 0, 2)  # [G, 2, B, L]
        mask_by_gsu = mask.permute(1, 0, 2)  # [G, B, L]
        for g in range(self.n_gsus):  # python ints: unrolled when traced
            bags = mask_by_gsu[g].reshape(-1).to(torch.int32)
            for f in range(len(SEQUENCE_ID_FIELDS)):
                values.append(by_gsu[g, f][mask_by_gsu[g]])
                lengths.append(bags)
        sequence = KeyedJaggedTensor(keys=self.sequence_keys, values=torch.cat(values), lengths=torch.cat(lengths))
        pooled_emb, seq_emb = self.model.lookup(pooled, sequence, b)
        probabilities = torch.sigmoid(self.model.logits(pooled_emb, seq_emb, seq_side, mask, dense))
        return probabilities, self.model.score(probabilities)


def inputs_from_batch(batch: Batch, gsu_names: list[str], seq_len: int, id_features: list[str]) -> ScorerInputs:
    """A training/evaluation batch as scorer inputs: the first `seq_len` elements of each GSU, as
    training keeps them."""
    def padded(key: str) -> torch.Tensor:
        return batch.sequences[key].to_padded_dense(desired_length=seq_len, padding_value=0).long()

    seq_ids = torch.stack([torch.stack([padded(f"{g}.{f}") for f in SEQUENCE_ID_FIELDS], -1) for g in gsu_names], 1)
    seq_side = torch.stack([torch.stack([padded(f"{g}.{f}") for f in SIDE_FIELDS], -1) for g in gsu_names], 1)
    lengths = torch.stack([batch.sequences[f"{g}.item"].lengths().long().clamp(max=seq_len) for g in gsu_names], 1)
    ids = torch.stack([batch.sparse[f].values().long() for f in id_features], 1)
    return ScorerInputs(ids=ids, dense=batch.dense.float(), seq_ids=seq_ids, seq_side=seq_side, seq_lengths=lengths)
