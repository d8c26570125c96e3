"""Stream shards -> batches, for offline training (shuffled) and replay (time-ordered).

Shards are split explicitly: first across ranks (`wds.split_by_node`), then across DataLoader
workers (`wds.split_by_worker`). TorchRec's collectives need every rank to run the same number of
batches, so the count is worked out from the manifest before reading: each worker yields
floor(its samples / batch_size) full batches and every rank stops at the smallest rank total.
A shard that cannot be read raises CorruptShardError naming it (or, with on_corrupt="skip", is
skipped and its batches refilled from the worker's other shards, so counts never change).
"""

from __future__ import annotations

import hashlib
import logging
import random
import tarfile
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from data_pipelines import contract
from data_pipelines.micro_batch import concat_arrays, take_rows
from data_pipelines.streams import codec
from data_pipelines.manifest import read_manifest
from data_pipelines.streams.shards import MEMBER_SUFFIX
from recsys.data.batch import Batch, to_batch

log = logging.getLogger(__name__)


class CorruptShardError(RuntimeError):
    """A shard that cannot be read; the message names the shard and what is wrong with it."""


class _HashingReader:
    """A file read once, hashed on the way (the manifest holds each shard's sha256)."""

    def __init__(self, raw):
        self.raw, self.sha256 = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        return data

    def read_to_end(self) -> None:
        while self.read(1 << 20):
            pass


class ShardDataset(IterableDataset):
    """Batches of one stream's shards. Iterate it through `make_loader` (it caps the batch count)."""

    def __init__(self, shard_dir: str | Path, batch_size: int, shuffle: bool = False, seed: int = 0,
                 shuffle_buffer: int = 8, on_corrupt: str = "raise", shards: list[str] | None = None):
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', not {on_corrupt!r}")
        self.shard_dir = Path(shard_dir)
        self.manifest = read_manifest(self.shard_dir)
        known = {s["file"]: s for s in self.manifest["shards"]}
        chosen = shards if shards is not None else list(known)
        unknown = [s for s in chosen if s not in known]
        if unknown:
            raise ValueError(f"{self.shard_dir}: shards {unknown} are not in the manifest")
        self.shards = [known[name] for name in chosen]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.on_corrupt = on_corrupt
        self.epoch = 0
        self.skipped: list[str] = []  # shards left out in skip mode (this process's reads)

    # ------------------------------------------------------------------ planning
    def set_epoch(self, epoch: int) -> None:
        """Shuffled mode reorders shards and samples per epoch (the same order on every rank)."""
        self.epoch = epoch

    def shard_order(self) -> list[dict]:
        order = list(self.shards)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def batches_per_rank(self, world_size: int, num_workers: int) -> list[int]:
        """Full batches each rank yields: the sum over its workers of floor(samples / batch)."""
        order = self.shard_order()
        totals = []
        for rank in range(world_size):
            mine = order[rank::world_size]
            workers = [mine[w::max(num_workers, 1)] for w in range(max(num_workers, 1))]
            totals.append(sum(sum(s["samples"] for s in w) // self.batch_size for w in workers))
        return totals

    # ------------------------------------------------------------------ reading
    def micro_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Every micro-batch of every shard in shard order, read in this process (replay walks a
        stream this way; time order when shuffle=False)."""
        self.skipped = []
        return self._samples(self.shard_order())

    def _micro_batches(self, shard: dict) -> Iterator[dict[str, np.ndarray]]:
        path = self.shard_dir / shard["file"]
        seen = samples = 0
        try:
            with open(path, "rb") as raw, tarfile.open(fileobj=(stream := _HashingReader(raw)), mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if not member.name.endswith("." + MEMBER_SUFFIX):
                        raise CorruptShardError(f"{path}: unexpected member {member.name!r}")
                    data = tar.extractfile(member).read()
                    try:
                        arrays = codec.decode(data)
                    except codec.CodecError as exc:
                        raise CorruptShardError(f"{path}: member {member.name}: {exc}") from exc
                    self._check(arrays, path, member.name)
                    seen += 1
                    samples += len(arrays["report_ts"])
                    yield arrays
                stream.read_to_end()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptShardError(f"{path}: unreadable tar after {seen} micro-batches ({exc})") from exc
        if seen != shard["micro_batches"] or samples != shard["samples"]:
            raise CorruptShardError(f"{path}: truncated: {seen} of {shard['micro_batches']} micro-batches, "
                                    f"{samples} of {shard['samples']} samples")
        if stream.sha256.hexdigest() != shard["sha256"]:  # e.g. a tar header changed; members are checked each
            raise CorruptShardError(f"{path}: sha256 differs from the manifest's: the file changed after it was "
                                    f"written")

    @staticmethod
    def _check(arrays: dict[str, np.ndarray], path: Path, member: str) -> None:
        n = len(arrays.get("report_ts", ()))
        missing = [k for k in contract.micro_batch_keys() if k not in arrays]
        if missing:
            raise CorruptShardError(f"{path}: member {member}: missing arrays {missing[:5]}")
        for g in contract.GSU_NAMES:
            lengths = arrays[contract.lengths_key(g)]
            total = int(lengths.sum())
            if len(lengths) != n or any(len(arrays[contract.sequence_key(g, f)]) != total
                                        for f in contract.SEQUENCE_FIELDS):
                raise CorruptShardError(f"{path}: member {member}: sequence '{g}' lengths and values disagree")

    def _samples(self, shards: list[dict]) -> Iterator[dict[str, np.ndarray]]:
        """Micro-batches of `shards`; in skip mode a bad shard is logged and left out."""
        for shard in shards:
            try:
                yield from self._micro_batches(shard)
            except CorruptShardError as exc:
                if self.on_corrupt == "raise":
                    raise
                log.warning("skipping corrupt shard: %s", exc)
                self.skipped.append(shard["file"])

    def _worker_batches(self, shards: list[dict]) -> Iterator[Batch]:
        quota = sum(s["samples"] for s in shards) // self.batch_size
        self.skipped = []
        rng = np.random.default_rng([self.seed, self.epoch, len(shards)])
        made, buffer, pending = 0, [], None
        source, read_since_refill = self._samples(shards), 0
        while made < quota:
            mb = next(source, None)
            if mb is not None:
                read_since_refill += 1
                buffer.append(mb)
                if self.shuffle and len(buffer) < self.shuffle_buffer:
                    continue
            elif not buffer:  # exhausted yet short: only after skipped shards, refill from the good ones
                good = [s for s in shards if s["file"] not in self.skipped]
                if not good or read_since_refill == 0:
                    raise CorruptShardError(f"no readable shard left for this worker (skipped: {self.skipped})")
                source, read_since_refill = self._samples(good), 0
                continue
            pool = concat_arrays(([pending] if pending is not None else []) + buffer)
            buffer = []
            n = len(pool["report_ts"])
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            full = n // self.batch_size
            for b in range(min(full, quota - made)):
                rows = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield to_batch(take_rows(pool, rows))
                made += 1
            rest = order[full * self.batch_size:]
            pending = take_rows(pool, rest) if len(rest) else None

    def __iter__(self) -> Iterator[Batch]:
        pipeline = wds.DataPipeline(
            wds.SimpleShardList([s["file"] for s in self.shard_order()]),
            wds.split_by_node,  # ranks take shards i, i + world_size, ...
            wds.split_by_worker,  # then the rank's workers split its shards the same way
        )
        by_name = {s["file"]: s for s in self.shards}
        mine = [by_name[item["url"]] for item in pipeline]
        yield from self._worker_batches(mine)


class RankBatches:
    """A DataLoader over a ShardDataset capped at the batch count every rank can reach."""

    def __init__(self, loader: DataLoader, n_batches: int):
        self.loader, self.n_batches = loader, n_batches

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Batch]:
        return islice(iter(self.loader), self.n_batches)


def make_loader(dataset: ShardDataset, num_workers: int = 0) -> RankBatches:
    """The rank's batches: `len()` is the same on every rank (TorchRec collectives require it)."""
    rank, world_size, _, _ = wds.utils.pytorch_worker_info()
    if not dataset.shuffle and num_workers > 1:
        raise ValueError("time-ordered mode needs num_workers <= 1: several workers interleave their batches")
    per_rank = dataset.batches_per_rank(world_size, num_workers)
    n_batches = min(per_rank)
    if n_batches == 0:
        raise ValueError(f"{dataset.shard_dir}: {len(dataset.shards)} shards give some rank no full batch of "
                         f"{dataset.batch_size} with {world_size} ranks x {max(num_workers, 1)} workers; "
                         f"use a smaller batch or more, smaller shards")
    if n_batches < per_rank[rank]:
        log.info("rank %d: stopping at %d of %d batches so that all ranks run the same count",
                 rank, n_batches, per_rank[rank])
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, persistent_workers=False)
    return RankBatches(loader, n_batches)
