"""The plain-PyTorch twin of MomentCrossModel for the training benchmark: the same head (every layer
after the lookups), but embeddings as nn.EmbeddingBag (pooled) and nn.Embedding (sequences) trained
by a dense optimizer, as an eager implementation without TorchRec would do it. It hands the head
the same layouts the EmbeddingBagCollections produce, with one lookup per table."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.model.moment_cross import ModelOutput, MomentCrossHead


@dataclass
class PlainInput:
    pooled: torch.Tensor  # [B, F] ids in the head's pooled_features order
    target_item: torch.Tensor  # [B]
    target_author: torch.Tensor  # [B]
    items: torch.Tensor  # [B, G, L] (0 = padding)
    authors: torch.Tensor  # [B, G, L]
    side: torch.Tensor  # [B, G, L, 3]
    mask: torch.Tensor  # [B, G, L]
    dense: torch.Tensor  # [B, D]
    states: torch.Tensor  # [B, T]


class PlainMomentCross(nn.Module):
    def __init__(self, head: MomentCrossHead, table_sizes: dict[str, int], pooled_tables: dict[str, list[str]],
                 embedding_dim: int):
        super().__init__()
        self.head = head
        self.pooled_tables = pooled_tables
        self.pooled = nn.ModuleDict({t: nn.EmbeddingBag(table_sizes[t], embedding_dim, mode="sum")
                                     for t in pooled_tables})
        self.item = nn.Embedding(table_sizes["item"], embedding_dim)
        self.author = nn.Embedding(table_sizes["author"], embedding_dim)

    def forward(self, x: PlainInput) -> ModelOutput:
        pooled, target, sequence = self.embed(x)
        logits, means = self.head(pooled, target, sequence, x.side, x.mask, x.dense, with_means=True)
        return ModelOutput(logits=logits, contrastive=self.head.contrastive_losses(means, x.mask))

    def embed(self, x: PlainInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layouts EmbeddingLookup returns: pooled [B, F * d], target [B, 2 * d],
        sequence [B, L, S * d]."""
        b = x.pooled.shape[0]
        pooled, column = [], 0
        for table, features in self.pooled_tables.items():  # features of a table sit side by side
            ids = x.pooled[:, column:column + len(features)].reshape(-1, 1)
            pooled.append(self.pooled[table](ids).view(b, -1))
            column += len(features)
        target_item, item = self._lookup(self.item, x.target_item, x.items, x.mask)
        target_author, author = self._lookup(self.author, x.target_author, x.authors, x.mask)
        sequence = torch.stack([item, author], dim=3).view(b, self.head.seq_len, -1)
        return torch.cat(pooled, -1), torch.cat([target_item, target_author], dim=-1), sequence

    @staticmethod
    def _lookup(table: nn.Embedding, target: torch.Tensor, elements: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One lookup of the targets [B] and elements [B, G, L] -> [B, d] and [B, L, G, d]; empty
        positions are zero, as empty bags are in TorchRec."""
        b, n_seq, length = elements.shape
        rows = table(torch.cat([target, elements.transpose(1, 2).reshape(-1)]))
        return rows[:b], rows[b:].view(b, length, n_seq, -1) * mask.transpose(1, 2).unsqueeze(-1)
