"""Time-ordered split of a data set's streams: train on the training stream's samples reported
before the split, validate on the `final` stream's impressions requested after it."""

from __future__ import annotations

import logging

import lightning.pytorch as pl

from data_pipelines.dataset import FINAL, DataSet
from recsys.data import ShardDataset, make_loader

log = logging.getLogger(__name__)


class StreamDataModule(pl.LightningDataModule):
    def __init__(self, data_dir: str, train_stream: str, batch_size: int, val_batch_size: int, val_fraction: float,
                 num_workers: int, shuffle_buffer: int, seed: int, eval_stream: str = FINAL,
                 on_corrupt: str = "raise"):
        """`data_dir`: the data set (data/<name>); `train_stream`: realtime or fast_slow."""
        super().__init__()
        self.data = DataSet(data_dir)
        self.train_stream, self.eval_stream = train_stream, eval_stream
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.val_fraction, self.num_workers = val_fraction, num_workers
        self.shuffle_buffer, self.seed, self.on_corrupt = shuffle_buffer, seed, on_corrupt
        self.split_ts: int | None = None

    @property
    def manifest(self) -> dict:
        return self.data.manifest(self.train_stream)

    def split(self, world_size: int = 1) -> tuple[list[str], list[str], int]:
        """(training shards, validation shards, split time): the last `val_fraction` of the final
        stream's shards (at least one per rank) are validation; training keeps the training
        stream's shards wholly reported before they begin."""
        evaluation = self.data.manifest(self.eval_stream)["shards"]
        n_val = max(world_size, round(self.val_fraction * len(evaluation)))
        if n_val >= len(evaluation):
            raise ValueError(f"{self.data.stream(self.eval_stream)}: {len(evaluation)} shards cannot give "
                             f"{world_size} rank(s) a validation shard each and leave earlier ones for "
                             f"training; write smaller shards (shards.micro_batches_per_shard)")
        val = evaluation[-n_val:]
        split_ts = min(s["request_ts_min"] for s in val)
        train = [s["file"] for s in self.manifest["shards"] if s["report_ts_max"] < split_ts]
        if not train:
            raise ValueError(f"no {self.train_stream} shard is reported entirely before the validation slice "
                             f"(split at {split_ts}); write smaller shards or lower val_fraction")
        return train, [s["file"] for s in val], split_ts

    def setup(self, stage: str | None = None) -> None:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        self.train_shards, self.val_shards, self.split_ts = self.split(world_size)
        log.info("time split at %d: %d %s shards for training, %d %s shards for validation", self.split_ts,
                 len(self.train_shards), self.train_stream, len(self.val_shards), self.eval_stream)

    def train_dataloader(self):
        dataset = ShardDataset(self.data.stream(self.train_stream), self.batch_size, shuffle=True, seed=self.seed,
                               shuffle_buffer=self.shuffle_buffer, on_corrupt=self.on_corrupt,
                               shards=self.train_shards)
        return make_loader(dataset, num_workers=self.num_workers)

    def val_dataloader(self):
        dataset = ShardDataset(self.data.stream(self.eval_stream), self.val_batch_size, shuffle=False,
                               on_corrupt=self.on_corrupt, shards=self.val_shards)
        return make_loader(dataset, num_workers=min(self.num_workers, 1))
