"""The model a learner trains as labels arrive: the same LightningModule, model, losses and
optimizers as `make train`, wrapped in DistributedModelParallel in this one process, driven batch by
batch, at the training's precision (`trainer.precision`). `steps` counts the updates: the model's version.

Such batches can be tiny (a batch closes after `max_wait` however few samples it holds), and a
BatchNorm normalising a handful of samples by their own mean and variance distorts them (a single
sample it cannot normalise at all). Below `batch_norm_min_batch` samples, BatchNorm layers
therefore normalise with their running statistics and leave them as they are."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from omegaconf import DictConfig

from recsys.data.batch import Batch
from recsys.train.checkpoint import require_complete
from recsys.train.module import build_task
from recsys.train.precision import forward_context
from recsys.train.strategy import distributed_model, ensure_process_group


class Learner:
    def __init__(self, cfg: DictConfig, manifest: Mapping, seed: int, batch_norm_min_batch: int = 32,
                 model_specs: tuple | None = None):
        """`model_specs`: (model spec, cross spec) in place of the config's `model` and `cross` (a
        replay's peer run); the task, optimizers and precision stay the config's."""
        ensure_process_group()
        torch.manual_seed(seed)
        self.task = build_task(cfg, manifest, model_specs=model_specs)
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

    def freeze_tables(self, tables: set[str]) -> None:
        """From the next update on, the embedding tables named (`item`, `author`, a pooled table of
        conf/model) no longer learn: their fused optimizer's learning rate is set to 0. The fused
        update runs per kernel, so every table of a frozen kernel must be named; a table that shares
        its kernel with one that still learns needs an optimizer of its own first
        (task.sparse_optimizer_by_table)."""
        found: set[str] = set()
        for kernel in _fused_kernels(self.task.model.fused_optimizer):
            held = {name.rsplit(".", 2)[-2] for name in kernel.params}
            if held & tables and not held <= tables:
                raise ValueError(f"tables {sorted(held & tables)} share a fused kernel with {sorted(held - tables)}, "
                                 f"which would stop learning too; give them an optimizer of their own "
                                 f"(task.sparse_optimizer_by_table)")
            if held & tables:
                for group in kernel.param_groups:
                    group["lr"] = 0.0
                # The kernel takes its learning rate into the forward that the fused update runs after:
                # set it now, or the next update would still learn at the old rate.
                kernel.zero_grad()
                found |= held
        if tables - found:
            raise ValueError(f"no embedding table named {sorted(tables - found)}")

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Per-task probabilities [B, T] with the model as it is now (inference mode: BatchNorm
        uses its running statistics, nothing is learned)."""
        x = self.task.on_before_batch_transfer(batch, 0)
        self.task.model.eval()
        with forward_context(self.precision):
            return torch.sigmoid(self.task.model(x).logits)

    # A checkpoint: the model's shards and both optimizers' state with torch.distributed.checkpoint,
    # then `learner_state.json` (the caller's position, plain data) last: its presence says the
    # directory is whole.
    STATE_FILE = "learner_state.json"

    def _sharded_state(self) -> dict:
        return {"model": self.task.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def save(self, directory: str | Path, position: Mapping) -> Path:
        """Writes the learner and `position` (JSON-able: where its input stands) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        dcp.save(self._sharded_state(), checkpoint_id=str(directory))
        staged = directory / f".{self.STATE_FILE}.tmp"
        staged.write_text(json.dumps({"steps": self.steps, "position": dict(position)}))
        os.replace(staged, directory / self.STATE_FILE)
        return directory

    def load(self, directory: str | Path) -> dict:
        """Restores a checkpoint written by save(); returns its position."""
        directory = Path(directory)
        require_complete(directory, self.STATE_FILE)
        if hasattr(self.optimizer, "init_state"):  # lazily created state must exist to be loaded into
            self.optimizer.init_state()
        state = self._sharded_state()
        dcp.load(state, checkpoint_id=str(directory))
        self.task.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        saved = json.loads((directory / self.STATE_FILE).read_text())
        self.steps = int(saved["steps"])
        return saved["position"]


def _fused_kernels(optimizer) -> list:
    """The innermost optimizers of a (combined) fused optimizer: one per embedding kernel."""
    inner = getattr(optimizer, "optimizers", None)
    if not inner:
        return [optimizer]
    return [kernel for _, sub in inner for kernel in _fused_kernels(sub)]
