"""Every loss term in one place.

Per task and sample, by label state (data_pipelines/streams/labels.py):
  pos / neg -> binary cross-entropy (paper eq. 2 and eq. 5),
  pu_pos    -> -[log p - log(1 - p)] (eq. 3), which is -logit: it adds the positive the fast
               window missed and takes back the false negative it had reported,
  masked    -> nothing (no gradient).
A task's loss is the sum over the batch divided by the batch size, so masked samples dilute
nothing and batches of any label mix weigh the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from data_pipelines.streams.labels import NEG, POS, PU_POS


def task_losses(logits: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """logits, states: [B, T] -> [T] per-task losses."""
    is_pos, is_neg, is_pu = states == POS, states == NEG, states == PU_POS
    bce = F.binary_cross_entropy_with_logits(logits, is_pos.to(logits.dtype), reduction="none")
    per_sample = torch.where(is_pos | is_neg, bce, torch.zeros_like(bce)) + torch.where(
        is_pu, -logits, torch.zeros_like(logits))
    return per_sample.sum(0) / max(logits.shape[0], 1)


def ranking_score(probabilities: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """prod_t (1 + p_t) ** w_t: [B, T], [T] -> [B]."""
    return torch.exp((torch.log1p(probabilities) * weights).sum(-1))
