"""Cross: the ESU target attention over each GSU sequence (eq. 7) and the contrastive alignment
of the sequences' embedding spaces (eq. 6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


MASKED_SCORE = -1e9  # far below any real score; finite in float32 and bfloat16


class TargetAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v over a sequence, with q from the live-side features of the sample.

    query [B, D_q]; sequence [B, L, D_s], or a list of parts [B, L, D_i] with the widths `part_dims`
    that together form it (the concatenation is never built); mask [B, L] (True = a real element)
    -> [B, D_attn].
    Padding gets no weight; a sample with an empty sequence gets zeros.
    """

    def __init__(self, query_dim: int, sequence_dim: int, attention_dim: int, part_dims: list[int] | None = None):
        super().__init__()
        part_dims = list(part_dims or [sequence_dim])
        if sum(part_dims) != sequence_dim:
            raise ValueError(f"part_dims {part_dims} do not add up to sequence_dim {sequence_dim}")
        # Fixed slice bounds rather than shapes read at run time, so that torch.fx can trace it.
        ends = [sum(part_dims[: i + 1]) for i in range(len(part_dims))]
        self.part_bounds = list(zip([0, *ends[:-1]], ends))
        self.w_q = nn.Linear(query_dim, attention_dim, bias=False)
        self.w_k = nn.Linear(sequence_dim, attention_dim, bias=False)
        self.w_v = nn.Linear(sequence_dim, attention_dim, bias=False)
        self.scale = 1.0 / math.sqrt(attention_dim)

    def forward(self, query: torch.Tensor, sequence: torch.Tensor | list[torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        parts = [sequence] if isinstance(sequence, torch.Tensor) else list(sequence)
        # The projections are linear, so they move off the L positions: q.(W_k s) = (W_k^T q).s and
        # sum_l a_l W_v s_l = W_v (sum_l a_l s_l). Same result, L times fewer matrix products.
        q_in_sequence_space = self.w_q(query) @ self.w_k.weight  # [B, D_s]
        if len(parts) != len(self.part_bounds):
            raise ValueError(f"expected {len(self.part_bounds)} sequence parts, got {len(parts)}")
        q_parts = [q_in_sequence_space[:, start:end] for start, end in self.part_bounds]
        scores = sum(torch.matmul(p, q.unsqueeze(-1)).squeeze(-1) for p, q in zip(parts, q_parts)) * self.scale
        # A finite floor rather than -inf keeps an all-padding row free of NaN in the backward pass;
        # multiplying by the mask then gives that row zero weight everywhere.
        scores = scores.masked_fill(~mask, MASKED_SCORE)  # [B, L]
        weights = (torch.softmax(scores, dim=-1) * mask).unsqueeze(1)  # [B, 1, L]
        return self.w_v(torch.cat([torch.matmul(weights, p).squeeze(1) for p in parts], dim=-1))  # [B, A]


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D], [B, L] -> [B, D]; zeros for an empty sequence."""
    count = mask.sum(-1, keepdim=True).clamp(min=1)
    return (sequence * mask.unsqueeze(-1)).sum(1) / count


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float,
             valid: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of `positive` is the positive of row i of `anchor`,
    every other row a negative. Both are L2-normalised here. Rows where `valid` is False (an empty
    sequence on either side) take no part. Returns the mean over anchors (0 if none is valid)."""
    if valid is not None:
        anchor, positive = anchor[valid], positive[valid]
    if anchor.shape[0] == 0:
        return anchor.new_zeros(())
    logits = F.normalize(anchor, dim=-1) @ F.normalize(positive, dim=-1).T / temperature  # [N, N]
    return F.cross_entropy(logits, torch.arange(anchor.shape[0], device=anchor.device))
