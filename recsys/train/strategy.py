"""A Lightning strategy that wraps the model in TorchRec's DistributedModelParallel.

Lightning's DDP strategy would replicate every embedding table on every rank. Instead the inner
`MomentCrossModel` is handed to DMP with a plan from TorchRec's planner: tables are sharded
(table-wise on CPU, any supported type on GPU) and materialised from the meta device, and the
dense layers are wrapped in DDP by DMP itself. Checkpoints are sharded: every rank writes its own
shards with torch.distributed.checkpoint, and resume loads them back in place, fused optimizer
state included.
"""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from lightning.pytorch.strategies import DDPStrategy
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingEnv

from recsys.model.moment_cross import MomentCrossModel
from recsys.train.checkpoint import MODEL_PREFIX, TRAINER_STATE, read_trainer_state, require_complete

log = logging.getLogger(__name__)


class TorchRecStrategy(DDPStrategy):
    strategy_name = "torchrec"

    def __init__(self, sharding_types: list[str] | None = None, **kwargs: Any):
        """`sharding_types` limits the planner (e.g. ["table_wise"]); None lets it choose."""
        kwargs.setdefault("process_group_backend", None)
        super().__init__(**kwargs)
        self.sharding_types = list(sharding_types) if sharding_types else None

    def model_to_device(self) -> None:
        """Move the dense layers only: embedding tables stay on meta until DMP materialises them."""
        assert self.model is not None
        for module in self.model.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if not param.is_meta and param.device != self.root_device:
                    module._parameters[name] = torch.nn.Parameter(param.to(self.root_device),
                                                                  requires_grad=param.requires_grad)
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None and not buf.is_meta:
                    module._buffers[name] = buf.to(self.root_device)

    def _setup_model(self, model: pl.LightningModule) -> pl.LightningModule:
        model.model = distributed_model(model.model, self.root_device, self.num_processes, self.sharding_types,
                                        log_plan=self.is_global_zero)
        return model  # no DDP wrapper around the LightningModule: DMP already handles the dense layers

    def _register_ddp_hooks(self) -> None:
        """DDP communication hooks belong to a DDP wrapper, which this strategy does not create."""

    def teardown(self) -> None:
        """As Lightning's, except that a model whose tables are still on the meta device (a run that
        failed before DMP materialised them) is not moved to the CPU: that would raise "Cannot copy
        out of meta tensor" and hide the run's own error."""
        module = self.lightning_module
        if module is None or not any(t.is_meta for t in itertools.chain(module.parameters(), module.buffers())):
            super().teardown()
            return
        self._lightning_module = None
        try:
            super().teardown()
        finally:
            self._lightning_module = module

    # ------------------------------------------------------------------ sharded checkpoints
    @property
    def restore_checkpoint_after_setup(self) -> bool:
        """Shards can only be loaded into the sharded model and the optimizers built for it."""
        return True

    def _sharded_state(self) -> dict[str, Any]:
        return {"model": self.lightning_module.state_dict(),
                "optimizers": [opt.state_dict() for opt in self.optimizers]}

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        """Every rank writes its shards into the directory `filepath`; rank 0 adds the rest."""
        path = Path(filepath)
        dcp.save(self._sharded_state(), checkpoint_id=str(path))
        if self.is_global_zero:
            rest = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
            staged = path / f".{TRAINER_STATE}.tmp"
            torch.save(rest, staged)
            os.replace(staged, path / TRAINER_STATE)  # its presence says the checkpoint is whole
        self.barrier("save_checkpoint")

    def load_checkpoint(self, checkpoint_path: str | os.PathLike, weights_only: bool | None = None) -> dict[str, Any]:
        path = require_complete(checkpoint_path)
        for opt in self.optimizers:  # lazily created optimizer state must exist to be loaded into
            if hasattr(opt, "init_state"):
                opt.init_state()
        state = self._sharded_state()
        dcp.load(state, checkpoint_id=str(path))  # fills `state`: this rank's shards and the replicated rest
        rest = read_trainer_state(path)  # loop and callback state: plain data
        return {**rest, "state_dict": state["model"], "optimizer_states": state["optimizers"]}

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        # Copied explicitly (a sharded module's state_dict may hand out copies, not views), through
        # DMP's own load_state_dict, which knows how its wrapped module names its parameters.
        state = checkpoint["state_dict"]
        unexpected = [k for k in state if not k.startswith(MODEL_PREFIX)]
        if strict and unexpected:
            raise KeyError(f"checkpoint entries outside the model: {unexpected[:5]}")
        self.lightning_module.model.load_state_dict({k.removeprefix(MODEL_PREFIX): v for k, v in state.items()
                                                     if k.startswith(MODEL_PREFIX)}, strict=strict)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            optimizer.load_state_dict(state)

    def remove_checkpoint(self, filepath: str | os.PathLike) -> None:
        if self.is_global_zero:
            import shutil

            shutil.rmtree(filepath, ignore_errors=True)


def distributed_model(inner: MomentCrossModel, device: torch.device, local_world_size: int,
                      sharding_types: list[str] | None = None, log_plan: bool = False) -> DistributedModelParallel:
    """`inner` (tables on meta) in DMP over the default process group, with a plan from TorchRec's
    planner; `sharding_types` limits the planner (e.g. ["table_wise"])."""
    constraints = None
    if sharding_types:
        constraints = {name: ParameterConstraints(sharding_types=list(sharding_types))
                       for ebc in (inner.lookup.pooled_ebc, inner.lookup.sequence_ebc, inner.lookup.bias_ebc)
                       if ebc is not None for name in (cfg.name for cfg in ebc.embedding_bag_configs())}
    topology = Topology(world_size=dist.get_world_size(), compute_device=device.type,
                        local_world_size=local_world_size)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints, debug=False)
    plan = planner.collective_plan(inner, None, dist.GroupMember.WORLD)
    if log_plan:
        log.info("sharding plan:\n%s", plan)
    # static_graph=False: DDP's static-graph mode delays the first all-reduce to a callback that
    # Lightning's manual backward never triggers here, and dense gradients silently stay per rank.
    return DistributedModelParallel(
        inner, env=ShardingEnv.from_process_group(dist.GroupMember.WORLD), device=device, plan=plan,
        data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False))


def ensure_process_group() -> None:
    """A one-process gloo group, for DMP outside a Lightning run (replay, benchmarks). Its store
    lives in memory, so no port is taken and concurrent jobs cannot collide."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
