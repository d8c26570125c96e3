"""Callbacks of the training runs."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl


class SnapshotAtEpochStart(pl.Callback):
    """Write a (sharded) checkpoint when epoch `epoch` starts: the exact state a run trains from,
    e.g. to check that a resumed run starts where the interrupted one stopped."""

    def __init__(self, dirpath: str, epoch: int):
        self.dirpath, self.epoch = Path(dirpath), epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.dirpath / f"start-epoch{self.epoch:02d}")
