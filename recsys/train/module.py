"""The LightningModule: losses, optimizers and metrics around a MomentCrossModel.

Sparse (embedding) parameters get fused optimizers applied in backward (TorchRec's
`apply_optimizer_in_backward`); once the strategy has wrapped the model in
DistributedModelParallel they live inside the sharded kernels. Dense parameters get a normal
optimizer; the two are combined as TorchRec's examples do. Optimization is manual because a
CombinedOptimizer would run Lightning's closure once per inner optimizer.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import lightning.pytorch as pl
import torch
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from data_pipelines.streams.labels import POS, PU_POS
from recsys.data.batch import Batch
from recsys.model.inputs import ModelInput, to_model_input
from recsys.model.losses import task_losses
from recsys.model.moment_cross import ModelOutput, MomentCrossModel
from recsys.train.metrics import TaskMetrics, light_users

# Fused into the embedding kernels' backward. Row-wise Adagrad (one accumulator per row) is
# TorchRec's usual choice and the only one with fbgemm's parallel CPU kernel; the others run a
# serial loop there. It is the default (conf/train.yaml).
SPARSE_OPTIMIZERS = {"rowwise_adagrad": RowWiseAdagrad, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD,
                     "adam": torch.optim.Adam}


class MomentCrossTask(pl.LightningModule):
    def __init__(self, model: MomentCrossModel, dense_optimizer: Callable[..., torch.optim.Optimizer],
                 sparse_optimizer: str = "rowwise_adagrad", sparse_lr: float = 0.02,
                 contrastive_weights: dict | None = None, light_users: tuple[int, int] | None = None):
        """`light_users` = (index of the dense feature log1p(earlier live interactions), the most a light
        user has): validation then also reports `val_light/...` on light users' impressions."""
        super().__init__()
        self.model = model
        self.tasks, self.gsu_names, self.seq_len = model.tasks, model.gsu_names, model.seq_len
        self.pooled_features = model.pooled_features
        self.dense_optimizer = dense_optimizer
        self.contrastive_weights = {g: float(w) for g, w in (contrastive_weights or {}).items()}
        self.automatic_optimization = False
        sparse = [*model.pooled_ebc.parameters(), *model.sequence_ebc.parameters()]
        apply_optimizer_in_backward(SPARSE_OPTIMIZERS[sparse_optimizer], sparse, {"lr": sparse_lr})
        self.val_metrics = TaskMetrics(self.tasks)
        self.light_users = light_users
        self.val_light_metrics = TaskMetrics(self.tasks) if light_users is not None else None
        self.run_config: dict | None = None  # the resolved config of the run, saved with every checkpoint

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints describe the run that wrote them, so `make export` rebuilds the same model."""
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config

    # ------------------------------------------------------------------ steps
    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> ModelInput:
        """Lay the batch out as the model consumes it, on the CPU, before it moves to the device."""
        return to_model_input(batch, self.gsu_names, self.seq_len, self.pooled_features)

    def loss(self, x: ModelInput) -> tuple[torch.Tensor, torch.Tensor, ModelOutput]:
        """(total loss, per-task losses [T], model output): every term, weighted as configured."""
        out = self.model(x)
        per_task = task_losses(out.logits, x.states)
        loss = per_task.sum()
        for name, value in out.contrastive.items():
            loss = loss + self.contrastive_weights.get(name, 0.0) * value
        return loss, per_task, out

    def training_step(self, x: ModelInput, batch_idx: int) -> torch.Tensor:
        loss, per_task, out = self.loss(x)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        b = len(x)
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for t, value in zip(self.tasks, per_task):
            self.log(f"train/loss/{t}", value, batch_size=b)
        for name, value in out.contrastive.items():
            self.log(f"train/contrastive/{name}", value, batch_size=b)
        return loss

    def validation_step(self, x: ModelInput, batch_idx: int) -> None:
        probabilities = torch.sigmoid(self.model(x).logits)
        labels = ((x.states == POS) | (x.states == PU_POS)).long()
        self.val_metrics.update(probabilities, labels, x.user)
        if self.val_light_metrics is not None:
            feature, most = self.light_users
            light = light_users(x.dense[:, feature], most)
            self.val_light_metrics.update(probabilities[light], labels[light], x.user[light])

    def on_validation_epoch_end(self) -> None:
        for name, value in self.val_metrics.compute().items():
            self.log(f"val/{name}", value, sync_dist=True, prog_bar=name == "auc/ctr")  # equal on every rank already
        self.val_metrics.reset()
        if self.val_light_metrics is not None:
            for name, value in self.val_light_metrics.compute().items():
                self.log(f"val_light/{name}", value, sync_dist=True)
            self.val_light_metrics.reset()

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(self.model.named_parameters())),
                                      lambda params: self.dense_optimizer(params))
        fused = getattr(self.model, "fused_optimizer", None)  # present once DMP has wrapped the model
        return CombinedOptimizer([fused, dense]) if fused is not None else dense

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(getattr(loader, "loader", None), "dataset", None)
        if dataset is not None and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)


def dense_adam(lr: float = 1e-3, weight_decay: float = 0.0) -> Callable[..., torch.optim.Optimizer]:
    """Hydra-friendly factory (`_partial_` works too): the dense optimizer's constructor."""
    return partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
