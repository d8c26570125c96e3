"""The metrics training and replay share (recsys/metrics.py), against scikit-learn on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recsys.metrics import EPS, TaskMetrics, auc, gauc, logloss, task_metrics


def _sklearn_gauc(p: np.ndarray, y: np.ndarray, users: np.ndarray) -> float:
    """Each user's AUC weighted by the user's impressions, over users with both labels."""
    total = weight = 0.0
    for u in np.unique(users):
        mine = users == u
        if 0 < y[mine].sum() < mine.sum():
            total += roc_auc_score(y[mine], p[mine]) * mine.sum()
            weight += mine.sum()
    return total / weight


@pytest.fixture()
def scored():
    rng = np.random.default_rng(3)
    n = 600
    users = rng.integers(0, 40, n)
    y = (rng.random(n) < 0.3).astype(np.int64)
    p = np.round(np.clip(0.2 * y + rng.random(n) * 0.8, 0, 1), 2)  # rounded: many ties, within and across users
    y[users == 5] = 0  # a user with one class only: left out of GAUC
    return p, y, users


def test_auc_gauc_and_logloss_agree_with_sklearn(scored):
    p, y, users = scored
    pt, yt, ut = torch.tensor(p), torch.tensor(y), torch.tensor(users)
    assert auc(pt, yt) == pytest.approx(roc_auc_score(y, p), abs=1e-7)  # torchmetrics returns float32
    assert gauc(pt, yt, ut) == pytest.approx(_sklearn_gauc(p, y, users), abs=1e-9)
    q = np.clip(p, EPS, 1 - EPS)  # sklearn clips too, to its own epsilon: compare on the same clipped values
    assert logloss(pt, yt) == pytest.approx(log_loss(y, q), abs=1e-9)


def test_undefined_metrics_are_nan():
    ones = torch.ones(5, dtype=torch.long)
    p = torch.linspace(0.1, 0.9, 5)
    assert math.isnan(auc(p, ones))  # one class
    assert math.isnan(gauc(p, torch.tensor([1, 0, 1, 0, 1]), torch.arange(5)))  # every user has one impression
    assert math.isnan(logloss(p[:0], ones[:0]))


def test_task_metrics_skip_unscored_rows_per_task(scored):
    p, y, users = scored
    probabilities = np.stack([p, 1 - p], 1).astype(np.float32)
    labels = np.stack([y, y], 1)
    probabilities[:100, 1] = np.nan  # task b was not scored on the first 100 rows
    got = task_metrics(probabilities, labels, users, ["a", "b"])
    assert set(got) == {f"{m}/{t}" for m in ("auc", "gauc", "logloss") for t in ("a", "b")}
    keep = slice(100, None)
    assert got["auc/b"] == pytest.approx(roc_auc_score(y[keep], 1 - probabilities[keep, 0]), abs=1e-6)
    assert got["gauc/b"] == pytest.approx(_sklearn_gauc(1 - probabilities[keep, 0], y[keep], users[keep]), abs=1e-6)
    assert got["auc/a"] == pytest.approx(roc_auc_score(y, probabilities[:, 0]), abs=1e-6)


def test_the_epoch_metric_over_batches_equals_the_metrics_of_the_whole(scored):
    p, y, users = scored
    metric = TaskMetrics(["ctr"])
    for rows in np.array_split(np.arange(len(p)), 7):
        metric.update(torch.tensor(p[rows, None]), torch.tensor(y[rows, None]), torch.tensor(users[rows]))
    got = metric.compute()
    assert got["auc/ctr"].item() == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert got["gauc/ctr"].item() == pytest.approx(_sklearn_gauc(p.astype(np.float32), y, users), abs=1e-6)
    metric.reset()
    assert all(math.isnan(v.item()) for v in metric.compute().values())  # nothing seen: undefined


def test_undefined_metrics_are_named_in_a_warning(caplog):
    labels = np.zeros((4, 2), dtype=np.int64)
    labels[1, 1] = 1
    got = task_metrics(np.full((4, 2), 0.3), labels, np.arange(4), ["ctr", "gtr"])
    assert math.isnan(got["auc/ctr"]) and not math.isnan(got["auc/gtr"])
    assert "reported as NaN: auc/ctr, gauc/ctr, gauc/gtr" in caplog.text
