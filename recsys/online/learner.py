"""The model an online learner trains: the same LightningModule, model, losses and optimizers as
`make train`, wrapped in DistributedModelParallel in this one process, driven batch by batch, at
the training's precision (`trainer.precision`). `steps` counts the updates: the model's version.

Online batches can be tiny (a batch closes after `max_wait` however few samples it holds), and a
BatchNorm normalising a handful of samples by their own mean and variance distorts them (a single
sample it cannot normalise at all). Below `batch_norm_min_batch` samples, BatchNorm layers
therefore normalise with their running statistics and leave them as they are."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import DictConfig

from recsys.data.batch import Batch
from recsys.train.module import build_task
from recsys.train.precision import forward_context
from recsys.train.strategy import distributed_model, ensure_process_group


class OnlineLearner:
    def __init__(self, cfg: DictConfig, manifest: Mapping, seed: int, batch_norm_min_batch: int = 32):
        ensure_process_group()
        torch.manual_seed(seed)
        self.task = build_task(cfg, manifest)
        self.task.model = distributed_model(self.task.model, torch.device("cpu"), local_world_size=1)
        self.optimizer = self.task.configure_optimizers()
        self.precision = cfg.trainer.precision
        self.batch_norm_min_batch = int(batch_norm_min_batch)
        self._batch_norms = [m for m in self.task.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.steps = 0

    def train(self, batch: Batch) -> float:
        x = self.task.on_before_batch_transfer(batch, 0)
        self.task.model.train()
        if len(batch) < self.batch_norm_min_batch:
            for module in self._batch_norms:
                module.eval()
        with forward_context(self.precision):
            loss, _, _ = self.task.loss(x)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.item()

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Per-task probabilities [B, T] with the model as it is now (inference mode: BatchNorm
        uses its running statistics, nothing is learned)."""
        x = self.task.on_before_batch_transfer(batch, 0)
        self.task.model.eval()
        with forward_context(self.precision):
            return torch.sigmoid(self.task.model(x).logits)
