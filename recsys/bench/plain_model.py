"""The plain-PyTorch twin of MomentCrossModel for the training benchmark: the same layers after
the lookups, but embeddings as nn.EmbeddingBag (pooled) and nn.Embedding (sequences) trained by a
dense optimizer, as an eager implementation without TorchRec would do it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.model.moment_cross import ModelOutput, MomentCrossModel


@dataclass
class PlainInput:
    pooled: torch.Tensor  # [B, F] ids in MomentCrossModel.pooled_features order
    target_item: torch.Tensor  # [B]
    target_author: torch.Tensor  # [B]
    items: torch.Tensor  # [B, G, L] (0 = padding)
    authors: torch.Tensor  # [B, G, L]
    side: torch.Tensor  # [B, G, L, 3]
    mask: torch.Tensor  # [B, G, L]
    dense: torch.Tensor  # [B, D]
    states: torch.Tensor  # [B, T]


class PlainMomentCross(nn.Module):
    def __init__(self, twin: MomentCrossModel, table_sizes: dict[str, int], pooled_tables: dict[str, list[str]],
                 embedding_dim: int):
        super().__init__()
        self.twin = twin  # built on the meta device: only its layers after the lookups are used
        self.twin.pooled_ebc = None
        self.twin.sequence_ebc = None
        self.table_of = {f: t for t, features in pooled_tables.items() for f in features}
        self.pooled = nn.ModuleDict({t: nn.EmbeddingBag(table_sizes[t], embedding_dim, mode="sum")
                                     for t in pooled_tables})
        self.item = nn.Embedding(table_sizes["item"], embedding_dim)
        self.author = nn.Embedding(table_sizes["author"], embedding_dim)

    def forward(self, x: PlainInput) -> ModelOutput:
        t = self.twin
        pooled = {f: self.pooled[self.table_of[f]](x.pooled[:, j:j + 1]) for j, f in enumerate(t.pooled_features)}
        seq = {"live_item": self.item(x.target_item).unsqueeze(1), "author_id": self.author(x.target_author).unsqueeze(1)}
        mask = x.mask.unsqueeze(-1)
        for g, name in enumerate(t.gsu_names):  # padding rows are zeroed, as empty bags are in TorchRec
            seq[f"{name}.item"] = self.item(x.items[:, g]) * mask[:, g]
            seq[f"{name}.author"] = self.author(x.authors[:, g]) * mask[:, g]
        return ModelOutput(logits=t.logits(pooled, seq, side=x.side, mask=x.mask, dense=x.dense),
                           contrastive=t.contrastive_losses(seq, x.mask))
