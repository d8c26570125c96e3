"""The model on per-candidate inputs: every candidate a whole sample, the user's part repeated in it.

    ids          [B, F] int64    one table row per id feature, in `model.json` "id_features" order
    dense        [B, D] float32  in "dense_features" order, transformed as in the shards
    seq_ids      [B, G, L, 2] int64  rows of each GSU element's SEQUENCE_ID_FIELDS (item, author)
    seq_side     [B, G, L, J] int64  buckets of each element's SIDE_FIELDS (gap, watch, domain)
                 L is the model's seq_len, or fewer positions if no sequence fills the rest
    seq_lengths  [B, G] int64    real elements per GSU; positions past it are ignored
  -> probabilities [B, T] float32 (task order of "tasks"), score [B] float32

Inside, the tensors are laid out exactly as training lays out a batch (KeyedJaggedTensors with one
position bag per sequence position and slot, recsys/model/inputs.py) and go through the same TorchRec
EmbeddingBagCollections: this is the training forward in eval mode, the reference the exported
request-level scorer (export/request_scorer.py) is held to, and the "before" of its benchmark.
"""

# No `from __future__ import annotations` here: torch.fx and TorchScript need the forward's
# annotations as real types.
from typing import NamedTuple, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipelines.contract import SPARSE_FEATURES, TARGET_FEATURES
from recsys.data.batch import Batch
from recsys.model.inputs import padded_sequences, sequence_bags
from recsys.model.moment_cross import MomentCrossModel


class CandidateInputs(NamedTuple):
    ids: torch.Tensor
    dense: torch.Tensor
    seq_ids: torch.Tensor
    seq_side: torch.Tensor
    seq_lengths: torch.Tensor

    def __len__(self) -> int:  # NamedTuple's own len is the field count; callers want candidates
        return self.ids.shape[0]

    def slice(self, start: int, end: int) -> "CandidateInputs":
        return CandidateInputs(*(t[start:end] for t in self))


def model_id_features(model: MomentCrossModel) -> list[str]:
    """The id features the model reads, in the data contract's order: the `ids` columns."""
    used = {*model.pooled_features, *TARGET_FEATURES}
    return [f for f in SPARSE_FEATURES if f in used]


class CandidateScorer(nn.Module):
    def __init__(self, model: MomentCrossModel, id_features: list[str]):
        super().__init__()
        missing = [f for f in [*model.pooled_features, *TARGET_FEATURES] if f not in id_features]
        if missing:
            raise ValueError(f"id features {missing} of the model are not in the inputs {id_features}")
        self.model = model.eval()
        self.pooled_keys = list(model.pooled_features)
        self.seq_len = model.seq_len
        self.register_buffer("pooled_columns", torch.tensor([id_features.index(f) for f in model.pooled_features]),
                             persistent=False)
        self.register_buffer("target_columns", torch.tensor(
            [id_features.index(f) for f in TARGET_FEATURES]), persistent=False)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor, seq_ids: torch.Tensor, seq_side: torch.Tensor,
                seq_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b = ids.shape[0]
        pooled = KeyedJaggedTensor(
            keys=self.pooled_keys, values=torch.index_select(ids, 1, self.pooled_columns).t().reshape(-1),
            lengths=torch.ones(b * len(self.pooled_keys), dtype=torch.int32))
        length = seq_ids.shape[2]  # seq_len, or fewer: positions past every sequence's end change nothing
        mask = torch.arange(length).view(1, 1, length) < seq_lengths.unsqueeze(-1)  # [B, G, L]
        target_ids = torch.index_select(ids, 1, self.target_columns)
        sequence = sequence_bags(target_ids, seq_ids, mask)
        pooled_emb, target_emb, seq_emb = self.model.lookup(pooled, sequence, b)
        logits, _ = self.model.head(pooled_emb, target_emb, seq_emb, seq_side, mask, dense, with_means=False)
        if self.model.lookup.bias_ebc is not None:  # the wide part
            logits = logits + self.model.lookup.bias(target_ids)
        probabilities = torch.sigmoid(logits)
        return probabilities, self.model.head.score(probabilities)


def inputs_from_batch(batch: Batch, model: MomentCrossModel) -> CandidateInputs:
    """A training/evaluation batch as the model's scorer inputs: the first `seq_len` elements of each
    of its GSUs, as training keeps them."""
    seq_ids, seq_side, lengths = padded_sequences(batch, model.gsu_names, model.seq_len)
    ids = torch.stack([batch.sparse[f].values().long() for f in model_id_features(model)], 1)
    return CandidateInputs(ids=ids, dense=batch.dense.float(), seq_ids=seq_ids, seq_side=seq_side, seq_lengths=lengths)
