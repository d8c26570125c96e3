"""Per-task offline metrics: AUC and logloss (torchmetrics), and GAUC, the impression-weighted
mean over users of each user's AUC (users with both labels only), built on torchmetrics' AUROC."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import BinaryAUROC
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.aggregation import MeanMetric


LIVE_HISTORY_FEATURE = "user_live_history_len"  # dense feature: log1p(the user's earlier live interactions)


def light_users(live_history_log1p, most: int):
    """True for users with at most `most` earlier live interactions (numpy arrays or torch tensors)."""
    return live_history_log1p <= math.log1p(most + 0.5)


class GroupedAUC(Metric):
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("group", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, group: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().long())
        self.group.append(group.detach().long())

    def compute(self) -> torch.Tensor:
        preds, target, group = (torch.cat(x) if isinstance(x, list) else x
                                for x in (self.preds, self.target, self.group))
        if preds.numel() == 0:
            return torch.tensor(float("nan"))
        order = torch.argsort(group, stable=True)
        preds, target, group = preds[order], target[order], group[order]
        _, counts = torch.unique_consecutive(group, return_counts=True)
        total, weight = torch.zeros(()), 0
        for p, t in zip(torch.split(preds, counts.tolist()), torch.split(target, counts.tolist())):
            positives = int(t.sum())
            if 0 < positives < len(t):
                total = total + binary_auroc(p, t) * len(t)
                weight += len(t)
        return total / weight if weight else torch.tensor(float("nan"))


class LogLoss(MeanMetric):
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(F.binary_cross_entropy(preds.clamp(1e-7, 1 - 1e-7), target.float(), reduction="none"))


class TaskMetrics(torch.nn.Module):
    """AUC, GAUC and logloss for each task; compute() returns {"auc/ctr": ..., "gauc/ctr": ..., ...}."""

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = list(tasks)
        self.per_task = torch.nn.ModuleDict({
            t: MetricCollection({"auc": BinaryAUROC(), "logloss": LogLoss()}) for t in self.tasks})
        self.gauc = torch.nn.ModuleDict({t: GroupedAUC() for t in self.tasks})

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> None:
        for j, t in enumerate(self.tasks):
            self.per_task[t].update(probabilities[:, j], labels[:, j].long())
            self.gauc[t].update(probabilities[:, j], labels[:, j], users)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for t in self.tasks:
            for name, value in self.per_task[t].compute().items():
                out[f"{name}/{t}"] = value
            out[f"gauc/{t}"] = self.gauc[t].compute()
        return out

    def reset(self) -> None:
        for t in self.tasks:
            self.per_task[t].reset()
            self.gauc[t].reset()
