"""`make train`: one training run from the Hydra config. `train(cfg)` is what tests and sweeps call."""

from __future__ import annotations

import os
import time
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys.allocator import keep_freed_memory
from recsys.model.factory import specs
from recsys.train.checkpoint import require_complete
from recsys.train.datamodule import StreamDataModule
from recsys.train.module import build_task
from recsys.train.precision import warn_if_emulated


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags that say what a run compares: model, training stream, GSU set, contrastive on/off,
    precision."""
    model, cross = specs(cfg)
    gsus = list(cross.gsu_names)
    return [f"model:{'ple' if model.multitask['n_levels'] > 1 else 'cgc'}",
            f"stream:{cfg.datamodule.train_stream}", f"gsus:{'+'.join(gsus) if gsus else 'none'}",
            f"contrastive:{'on' if cross.contrastive_weights() else 'off'}", f"precision:{cfg.trainer.precision}",
            *cfg.get("tags", [])]


def run_id(cfg: DictConfig) -> str:
    """An id naming this run in exported artifacts: the run name and when it started."""
    return f"{cfg.run_name}@{time.strftime('%Y%m%dT%H%M%S')}"


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if name == "wandb":
            if not os.environ.get("WANDB_API_KEY"):
                os.environ.setdefault("WANDB_MODE", "offline")  # syncable later with `wandb sync`
            loggers.append(instantiate(logger_cfg, tags=run_tags(cfg)))
        else:
            loggers.append(instantiate(logger_cfg))
    return loggers


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    keep_freed_memory()
    if cfg.get("ckpt_path"):
        require_complete(cfg.ckpt_path)  # before any process starts
    warn_if_emulated(cfg.trainer.precision, cfg.trainer.accelerator)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: StreamDataModule = instantiate(cfg.datamodule)
    task = build_task(cfg, datamodule.manifest)
    task.run_config = {**OmegaConf.to_container(cfg, resolve=True), "run_id": run_id(cfg)}
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=build_loggers(cfg) or False, callbacks=callbacks)
    datamodule.split(trainer.world_size)  # a data set that cannot be split fails here, before any process starts
    if trainer.is_global_zero:
        for lg in trainer.loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics, {"trainer": trainer, "task": task, "datamodule": datamodule}


def format_metrics(metrics: dict[str, float], tasks: list[str]) -> str:
    lines = [f"{'task':<6}{'AUC':>8}{'GAUC':>8}{'logloss':>9}"]
    for t in tasks:
        lines.append(f"{t:<6}{metrics.get(f'val/auc/{t}', float('nan')):>8.4f}"
                     f"{metrics.get(f'val/gauc/{t}', float('nan')):>8.4f}"
                     f"{metrics.get(f'val/logloss/{t}', float('nan')):>9.4f}")
    return "\n".join(lines)


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    metrics, objects = train(cfg)
    if objects["trainer"].is_global_zero:
        print(f"\nvalidation on the later time slice ({objects['datamodule'].data.name}):")
        print(format_metrics(metrics, objects["task"].tasks))


if __name__ == "__main__":
    main()
