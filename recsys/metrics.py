"""Every offline metric, once: per task AUC, GAUC and logloss, used by training's validation and by
replay alike.

- AUC: torchmetrics' binary AUROC. Undefined (NaN) where the rows hold a single class.
- GAUC: the mean of each user's AUC weighted by the user's impressions, over users with both labels
  (the paper's user-grouped AUC); NaN when no user has both. Computed for all users at once from
  mid-ranks within each user (ties count one half), not one AUROC call per user: replay evaluates
  hundreds of thousands of impressions of tens of thousands of users.
- logloss: binary cross-entropy of the probabilities clamped to [EPS, 1 - EPS].

`task_metrics` computes them from whole arrays; `TaskMetrics` is the torchmetrics `Metric` that
accumulates a validation epoch across batches and ranks and then calls `task_metrics`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc

log = logging.getLogger(__name__)

EPS = 1e-7
METRICS = ("auc", "gauc", "logloss")


def auc(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    labels = labels.long()
    positives = int(labels.sum())
    if not 0 < positives < len(labels):
        return math.nan
    return float(binary_auroc(probabilities.double(), labels))


def gauc(probabilities: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> float:
    p = probabilities.double().cpu().numpy()
    y = labels.cpu().numpy().astype(np.float64)
    u = users.cpu().numpy()
    order = np.lexsort((p, u))
    p, y, u = p[order], y[order], u[order]
    _, group, counts = np.unique(u, return_inverse=True, return_counts=True)
    position = np.arange(len(p)) - (np.cumsum(counts) - counts)[group]  # 0-based rank within the user
    # Runs of equal (user, probability) share their mid-rank.
    new_run = np.r_[True, (u[1:] != u[:-1]) | (p[1:] != p[:-1])]
    starts, run = np.flatnonzero(new_run), np.cumsum(new_run) - 1
    ends = np.r_[starts[1:], len(p)] - 1
    mid_rank = (position[starts] + position[ends])[run] / 2 + 1
    positives = np.bincount(group, weights=y)
    negatives = counts - positives
    rank_sum = np.bincount(group, weights=mid_rank * y)
    both = (positives > 0) & (negatives > 0)
    if not both.any():
        return math.nan
    user_auc = (rank_sum[both] - positives[both] * (positives[both] + 1) / 2) / (positives[both] * negatives[both])
    return float((user_auc * counts[both]).sum() / counts[both].sum())


def logloss(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return math.nan
    p = probabilities.double().clamp(EPS, 1 - EPS)
    y = labels.double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def task_metrics(probabilities, labels, users, tasks: list[str]) -> dict[str, float]:
    """{"auc/<task>", "gauc/<task>", "logloss/<task>"} of [N, T] probabilities against [N, T] 0/1
    labels, users [N] (tensors or numpy arrays). Rows whose probability is NaN (not scored) are left
    out of that task. A metric the rows cannot define is NaN, and a warning names it."""
    probabilities, labels, users = (torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
                                    for x in (probabilities, labels, users))
    out = {}
    for j, task in enumerate(tasks):
        scored = ~torch.isnan(probabilities[:, j])
        p, y, u = probabilities[scored, j], labels[scored, j], users[scored]
        out[f"auc/{task}"], out[f"gauc/{task}"], out[f"logloss/{task}"] = auc(p, y), gauc(p, y, u), logloss(p, y)
    undefined = [name for name, value in out.items() if math.isnan(value)]
    if undefined:
        log.warning("undefined on %d rows, reported as NaN: %s (AUC needs both labels; GAUC a user with both)",
                    len(users), ", ".join(undefined))
    return out


def light_users(live_history_log1p, most: int):
    """True for users with at most `most` earlier live interactions, from the dense feature
    log1p(count) (numpy arrays or torch tensors)."""
    return live_history_log1p <= math.log1p(most + 0.5)


class TaskMetrics(Metric):
    """Accumulates [B, T] probabilities, labels and [B] users over an epoch (gathered from every
    rank at compute) and returns `task_metrics` of them."""

    full_state_update = False

    def __init__(self, tasks: list[str], **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(tasks)
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("users", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> None:
        self.probabilities.append(probabilities.detach().float())
        self.labels.append(labels.detach().long())
        self.users.append(users.detach().long())

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.probabilities, list) and not self.probabilities:  # nothing seen
            return {f"{m}/{t}": torch.tensor(math.nan) for t in self.tasks for m in METRICS}
        states = [torch.cat(s) if isinstance(s, list) else s for s in (self.probabilities, self.labels, self.users)]
        return {k: torch.tensor(v) for k, v in task_metrics(*states, self.tasks).items()}
