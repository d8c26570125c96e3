"""The LightningModule: losses, optimizers and metrics around a MomentCrossModel.

Sparse (embedding) parameters get fused optimizers applied in backward (TorchRec's
`apply_optimizer_in_backward`); once the strategy has wrapped the model in
DistributedModelParallel they live inside the sharded kernels. Dense parameters get a normal
optimizer; the two are combined as TorchRec's examples do. Optimization is manual because a
CombinedOptimizer would run Lightning's closure once per inner optimizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from data_pipelines.contract import DENSE_FEATURES, LIVE_HISTORY_FEATURE
from recsys.data.batch import Batch, labels_of
from recsys.metrics import TaskMetrics, light_users
from recsys.model.factory import build_model, model_from_config
from recsys.model.inputs import ModelInput, to_model_input
from recsys.model.losses import task_losses
from recsys.model.moment_cross import ModelOutput, MomentCrossModel


def sparse_parameter_groups(lookup: torch.nn.Module, optimizer: partial, lr_by_table: Mapping[str, float],
                            optimizer_by_table: Mapping[str, partial] | None = None
                            ) -> list[tuple[type, dict, list[torch.nn.Parameter]]]:
    """The embedding tables grouped by their fused optimizer (class, arguments): the shared one, one
    group per table with a learning rate of its own, one per table with an optimizer of its own
    (fused optimizers differ per kernel, so TorchRec keeps such a table in a kernel of its own)."""
    tables = {name.rsplit(".", 2)[-2]: param for name, param in lookup.named_parameters()}
    optimizer_by_table = dict(optimizer_by_table or {})
    for key, named in (("sparse_lr_by_table", lr_by_table), ("sparse_optimizer_by_table", optimizer_by_table)):
        unknown = sorted(set(named) - set(tables))
        if unknown:
            raise ValueError(f"task.{key} names tables the model does not have: {unknown}; it has {sorted(tables)}")
    both = sorted(set(lr_by_table) & set(optimizer_by_table))
    if both:
        raise ValueError(f"tables {both} are in both task.sparse_lr_by_table and task.sparse_optimizer_by_table; "
                         "give their learning rate in the optimizer of their own")
    keywords = dict(optimizer.keywords)
    shared = [p for t, p in tables.items() if t not in lr_by_table and t not in optimizer_by_table]
    groups = [(optimizer.func, keywords, shared)] if shared else []
    groups += [(optimizer.func, {**keywords, "lr": float(lr)}, [tables[t]]) for t, lr in lr_by_table.items()]
    return groups + [(own.func, dict(own.keywords), [tables[t]]) for t, own in optimizer_by_table.items()]


class MomentCrossTask(pl.LightningModule):
    def __init__(self, model: MomentCrossModel, dense_optimizer: partial, sparse_optimizer: partial,
                 light_user_max_live: int | None = None, sparse_lr_by_table: Mapping[str, float] | None = None,
                 sparse_optimizer_by_table: Mapping[str, partial] | None = None):
        """`dense_optimizer`, `sparse_optimizer`: optimizer classes with their arguments bound (Hydra
        `_partial_`). The sparse one is fused into the embedding kernels' backward: TorchRec's
        row-wise Adagrad (the default) is the only one fbgemm runs in parallel on CPU; the others
        (torch.optim.Adagrad, SGD, Adam) run a serial loop there. With `light_user_max_live`,
        validation also reports `val_light/...` on users with at most that many earlier live
        interactions. `sparse_lr_by_table` gives some tables (by name: `item`, `author`, or a pooled
        table of conf/model) a learning rate of their own, `sparse_optimizer_by_table` an optimizer
        of their own (e.g. plain SGD for the wide part's bias tables, `item_bias`, `author_bias`)."""
        super().__init__()
        self.model = model
        self.tasks, self.gsu_names, self.seq_len = model.tasks, model.gsu_names, model.seq_len
        self.pooled_features = model.pooled_features
        self.contrastive_weights = model.head.contrastive_weights
        self.dense_optimizer, self.sparse_optimizer = dense_optimizer, sparse_optimizer
        self.automatic_optimization = False
        for optimizer_class, keywords, params in sparse_parameter_groups(
                model.lookup, sparse_optimizer, dict(sparse_lr_by_table or {}), sparse_optimizer_by_table):
            apply_optimizer_in_backward(optimizer_class, params, keywords)
        self.val_metrics = TaskMetrics(self.tasks)
        self.light_user_max_live = light_user_max_live
        self.val_light_metrics = TaskMetrics(self.tasks) if light_user_max_live is not None else None
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
            loss = loss + self.contrastive_weights[name] * value
        return loss, per_task, out

    def training_step(self, x: ModelInput, batch_idx: int) -> torch.Tensor:
        loss, per_task, out = self.loss(x)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        average_batch_norm_statistics(self.model)
        b = len(x)
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        for t, value in zip(self.tasks, per_task):
            self.log(f"train/loss/{t}", value, batch_size=b)
        for name, value in out.contrastive.items():
            self.log(f"train/contrastive/{name}", value, batch_size=b)
        return loss

    def validation_step(self, x: ModelInput, batch_idx: int) -> None:
        probabilities = torch.sigmoid(self.model(x).logits)
        labels = labels_of(x.states).long()
        self.val_metrics.update(probabilities, labels, x.user)
        if self.val_light_metrics is not None:
            light = light_users(x.dense[:, DENSE_FEATURES.index(LIVE_HISTORY_FEATURE)], self.light_user_max_live)
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


def average_batch_norm_statistics(model: torch.nn.Module) -> None:
    """Make every rank's BatchNorm running statistics the mean over the ranks (a no-op in one
    process). DDP synchronises gradients, not buffers: without this each rank kept the statistics
    of its own batches, and a checkpoint (which takes each replicated tensor from one rank) held
    one rank's running mean and another's running variance, a state no rank had."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    stats = [buffer for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
             for buffer in (module.running_mean, module.running_var) if buffer is not None]
    if not stats:
        return
    flat = torch.cat([s.reshape(-1) for s in stats])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for s, mean in zip(stats, torch.split(flat, [s.numel() for s in stats])):
        s.copy_(mean.view_as(s))


def build_task(cfg: DictConfig, manifest: Mapping, embedding_device: torch.device | str = "meta",
               model_specs: tuple | None = None) -> MomentCrossTask:
    """The task of a job's config (`task`, with the model from `model`, `cross` and the manifest, or
    from `model_specs`: (model spec, cross spec) given, a replay's peer run)."""
    model = model_from_config(cfg, manifest, embedding_device) if model_specs is None \
        else build_model(*model_specs, manifest, embedding_device)
    return instantiate(cfg.task, model=model)
