"""`make online-train`: the continuous trainer. It reads a label stream's samples in report order
(today from its shards, replayed on the data's own clock), learns them as they become visible with
the replay's learner and batch closer (recsys/learning/), and feeds the ranker:

  * a full export (a new base: model files and model.json) at the start, after a resume and every
    `push.full_every_s` of data time; the periodic ones are written in a process of their own while
    pushes onto the current base go on, and committed with a first push that brings the new base
    up to the moment of the commit (online/pusher.py);
  * a push every `push.every_s` of data time in between: the embedding rows learned since the
    previous push and the dense tensors (online/pusher.py, export/push.py);
  * a checkpoint every `online_train.checkpoint_every_s`: the learner and how many samples of the
    stream it has learned. A restart resumes from the newest one, skips exactly the samples learned,
    and starts a new base (the pushes written after the checkpoint came from a model it no longer
    has).

`online_train.pace` ties the data clock to the wall clock: 0 learns as fast as it can; p > 0 lets
one second of data time take p seconds of wall time (1 = real time), so that pushes arrive at the
ranker at the rate a deployment would send them.

`online_train.source: broker` reads the samples the live loop's label joiner publishes instead of the
shards (`make online`, online/live.py): the data clock is then the joiner's watermark, a checkpoint
also holds the broker offset (exactly-once: a restart reads on from the first sample not learned),
and the trainer writes its progress into the broker for the live report.

Every version the ranker may serve is written to the run's record (online/record.py: Version),
with the samples it had learned (the live report's click-to-served latency joins answers to it),
and an order-free digest of the samples learned is kept with each checkpoint (a sample learned
twice or never changes it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data_pipelines.configured import build
from data_pipelines.dataset import FINAL, DataSet
from data_pipelines.micro_batch import MicroBatch, take_rows
from export.scorer import inputs_from_batch
from online import broker as brk
from online.broker_samples import MergedBrokerSamples
from online.process import own_process_group
from online.progress import TrainerProgress, publish
from online.pusher import Pusher, PushSettings
from online.record import LATEST, LiveRun, TrainerSummary, Version, commit_checkpoint
from recsys.allocator import keep_freed_memory
from recsys.data import ShardDataset, make_loader
from recsys.data.batch import to_batch
from recsys.learning.batch_closer import BatchCloser
from recsys.learning.learner import Learner
from recsys.learning.sources import ReportedSamples, SampleSource
from recsys.learning.spec import LearnerSpec
from recsys.model.factory import model_from_config
from recsys.train.precision import warn_if_emulated



@dataclass(frozen=True)
class OnlineTrainSettings:
    """conf/online_train.yaml `online_train:` (one key per field); the pushes' settings are `push:`
    (online/pusher.py: PushSettings)."""

    name: str  # the run (online/record.py): artifacts/<name> is served, logs/online/<name> holds checkpoints
    stream: str
    seed: int
    learner: LearnerSpec  # conf/learner: the replay's too
    checkpoint_every_s: float  # data time
    pace: float  # wall seconds per second of data time: 0 = as fast as it learns, 1 = real time
    stop_after_s: float | None  # data seconds to learn; None: the whole stream
    validation_batch: int  # samples of the evaluation stream every full export is checked on
    progress: bool
    source: str  # shards | broker
    redis_url: str | None  # the broker, for source=broker (the live loop passes its own)
    joiners: int = 1  # source=broker: the joiner processes publishing the stream (one samples stream each)

    def __post_init__(self) -> None:
        if self.source not in ("shards", "broker"):
            raise ValueError(f"online_train.source must be shards or broker, got {self.source!r}")
        if self.joiners < 1:
            raise ValueError(f"online_train.joiners must be at least 1, got {self.joiners}")
        if self.checkpoint_every_s <= 0 or self.pace < 0:
            raise ValueError("online_train.checkpoint_every_s must be positive and online_train.pace at least 0")

    @property
    def checkpoint_every_ms(self) -> int:
        return int(self.checkpoint_every_s * 1000)

    @property
    def stop_after_ms(self) -> int | None:
        return None if self.stop_after_s is None else int(self.stop_after_s * 1000)


def skip_samples(parts: Iterable[MicroBatch], n: int) -> Iterator[MicroBatch]:
    """The micro-batches after their first `n` samples."""
    for part in parts:
        k = len(part["report_ts"])
        if n >= k:
            n -= k
            continue
        yield take_rows(part, np.arange(n, k)) if n else part
        n = 0


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def sample_digest(impression_id: np.ndarray, report_ts: np.ndarray, kind: np.ndarray) -> int:
    """An order-free 64-bit digest of samples (sum of a hash of each one's key, mod 2^64): equal for
    the same multiset of samples, so a sample learned twice or missed changes it."""
    with np.errstate(over="ignore"):
        h = (impression_id.astype(np.uint64) * _MIX[0]) ^ (report_ts.astype(np.uint64) * _MIX[1]) \
            ^ ((kind.astype(np.uint64) + np.uint64(1)) * _MIX[2])
        h ^= h >> np.uint64(31)
        h *= _MIX[0]
        return int(h.sum(dtype=np.uint64))


def first_report_ms(data: DataSet, stream: str) -> int:
    for part in ShardDataset(data.stream(stream), batch_size=1).micro_batches():
        if len(part["report_ts"]):
            return int(part["report_ts"][0])
    raise ValueError(f"{data.stream(stream)}: the stream holds no sample")


class OnlineTrainer:
    def __init__(self, cfg: DictConfig, settings: OnlineTrainSettings, push: PushSettings,
                 broker_url: str | None = None):
        """`broker_url`: where the joiner publishes (source=broker); None: `online_train.redis_url`."""
        self.cfg, self.s, self.push_settings = cfg, settings, push
        self.data = DataSet(cfg.data.output_dir)
        self.data.require_streams([settings.stream, FINAL])
        broker_url = broker_url or settings.redis_url
        if settings.source == "broker" and not broker_url:
            raise ValueError("online_train.source=broker needs a broker: set online_train.redis_url")
        manifest = self.data.manifest(settings.stream)
        self.learner = Learner(cfg, manifest, settings.seed, settings.learner.batch_norm_min_batch)
        layout = OmegaConf.to_container(cfg.request_layout, resolve=True)
        copy = model_from_config(cfg, manifest, embedding_device="cpu")
        layout["sequences"] = [g for g in layout["sequences"] if g in copy.gsu_names]
        self.run_record = LiveRun.of(cfg.paths, settings.name)
        self.export = self.run_record.export
        self.pusher = Pusher(self.learner.task.model, copy, layout, self.export.root, push,
                             training={"run_id": f"online-{settings.name}", "data": self.data.name,
                                       "stream": settings.stream, "trainer": "online"})
        batch = next(iter(make_loader(ShardDataset(self.data.stream(FINAL), settings.validation_batch))))
        self.validation = inputs_from_batch(batch, copy)
        self.checkpoints = self.run_record.checkpoints
        self.newest_learned_ms = 0
        self.pushes: list[dict] = []
        self.exports: list[dict] = []
        self.learned = 0  # samples of the stream learned, from its start (a resume counts the checkpoint's)
        self.digest = 0
        self.broker = brk.connect(broker_url) if settings.source == "broker" else None

    def _learn(self, batch: MicroBatch, closed_at_ms: int) -> None:
        self.learner.train(to_batch(batch))
        self.pusher.learned()
        self.newest_learned_ms = int(batch["report_ts"][-1])
        self.learned += len(batch["report_ts"])
        self.digest = (self.digest + sample_digest(batch["impression_id"], batch["report_ts"], batch["kind"])) % 2**64

    def _version(self, push: int, learned: int, clock_ms: int) -> None:
        """A version the ranker may serve, (export, push), and the samples it had learned."""
        self.run_record.append_version(Version(self.pusher.meta["export_id"], push, learned, clock_ms, time.time()))

    def _exported(self, started_ms: int, clock_ms: int, seconds: float, report, learned_at_snapshot: int) -> None:
        self.exports.append({"clock_ms": started_ms, "committed_clock_ms": clock_ms,
                             "export_id": self.pusher.meta["export_id"], "seconds": seconds,
                             "formats": sorted(report.files)})
        self._version(0, learned_at_snapshot, started_ms)
        if self.pusher.sequence:  # the commit's first push brought the base up to now
            self._version(self.pusher.sequence, self.learned, clock_ms)
        # Earlier bases' pushes: no replica loads those bases any more once model.json has moved on.
        for old in self.export.pushes_root.glob("*"):
            if old.name != self.pusher.meta["export_id"]:
                shutil.rmtree(old, ignore_errors=True)

    def _full_export(self, clock_ms: int | None) -> None:
        """A new base before anything else can be pushed: written and committed now."""
        start = time.perf_counter()
        report = self.pusher.full_export(self.validation)
        self._exported(clock_ms, clock_ms, time.perf_counter() - start, report, self.learned)

    def _checkpoint(self, clock_ms: int, source: SampleSource) -> Path:
        position = {"clock_ms": clock_ms, "samples_learned": self.learned, "digest": str(self.digest)}
        if isinstance(source, MergedBrokerSamples):
            position["broker"] = source.offset_for(self.learned)
        directory = self.learner.save(self.checkpoints / f"clock-{clock_ms}", position)
        commit_checkpoint(self.checkpoints, directory, "clock-*")
        for stream, offset in position.get("broker", {}).items():  # entries before it are needed by nobody now
            self.broker.xtrim(stream, minid=offset["after"], approximate=True)
        return directory

    def _source(self, resumed: dict | None) -> tuple[SampleSource, int]:
        """The samples to learn after those of the checkpoint, and the data time to start the clock at."""
        s, every = self.s, self.push_settings.every_ms
        if s.source == "broker":
            streams = [brk.samples_stream(s.stream, k) for k in range(s.joiners)]
            offsets = (resumed or {}).get("broker")
            if offsets is not None and sorted(offsets) != sorted(streams):
                raise ValueError(f"the checkpoint read {sorted(offsets)}, this run's joiners publish {streams}: "
                                 f"joiner.processes cannot change while a run resumes")
            source = MergedBrokerSamples(self.broker, streams, offsets, position=self.learned)
            first = int(resumed["clock_ms"]) if resumed else source.first_watermark()
            return source, (first // every) * every
        parts = ShardDataset(self.data.stream(s.stream), batch_size=1).micro_batches()
        first = int(resumed["clock_ms"]) if resumed else first_report_ms(self.data, s.stream)
        return ReportedSamples(skip_samples(parts, self.learned)), (first // every) * every

    def _progress(self, clock_ms: int) -> None:
        if self.broker is not None:
            publish(self.broker, TrainerProgress(clock_ms=clock_ms, learned=self.learned, pushes=len(self.pushes),
                                                 unix_s=time.time()))

    def _resume(self) -> dict | None:
        pointer = self.checkpoints / LATEST
        if not pointer.exists():
            return None
        return self.learner.load(self.checkpoints / pointer.read_text().strip())

    def run(self) -> TrainerSummary:
        s, push = self.s, self.push_settings
        resumed = self._resume()
        skipped = self.learned = int(resumed["samples_learned"]) if resumed else 0
        self.digest = int(resumed.get("digest", 0)) if resumed else 0
        # The first base before the first sample: a ranker must serve before the live loop's traffic
        # (and so its samples) can start.
        self._full_export(int(resumed["clock_ms"]) if resumed else None)
        source, clock = self._source(resumed)
        start_clock = clock
        stop = None if s.stop_after_ms is None else start_clock + s.stop_after_ms
        closer = BatchCloser(self._learn, s.learner.batch_size, s.learner.max_wait_ms)
        print(f"online-train on '{self.data.name}' ({s.stream}, from {s.source}): " +
              (f"resumed at data time {clock} after {skipped:,} samples; " if resumed else "") +
              f"push every {push.every_s:g} s, full export every {push.full_every_s:g} s of data time, "
              f"pace {s.pace:g} -> {self.export.root}")
        last_full = last_checkpoint = clock
        learned_at_checkpoint = self.learned
        export_started = (clock, time.perf_counter(), self.learned)
        wall_start = time.monotonic()
        exhausted = False
        bar = tqdm(desc="online-train", unit="push", disable=not s.progress)
        while not (exhausted and closer.pending == 0) and (stop is None or clock < stop):
            clock += push.every_ms
            if s.pace > 0:  # the data clock may not run ahead of the wall clock's scaled time
                time.sleep(max(0.0, wall_start + (clock - start_clock) / 1000 * s.pace - time.monotonic()))
            samples = source.until(clock)
            exhausted = source.exhausted
            closer.add(samples)
            closer.advance(clock)
            report = self.pusher.finish_full_export() if self.pusher.exporting else None
            if report is not None:  # committed, with its first push
                self._exported(export_started[0], clock, time.perf_counter() - export_started[1], report,
                               export_started[2])
            else:
                record = self.pusher.push(self.newest_learned_ms)
                self.pushes.append({**asdict(record), "path": str(record.path), "clock_ms": clock})
                self._version(record.sequence, self.learned, clock)
            if clock - last_full >= push.full_every_ms and not self.pusher.exporting:
                # Written in a process of its own; pushes onto the current base go on meanwhile.
                self.pusher.start_full_export(self.validation)
                export_started = (clock, time.perf_counter(), self.learned)
                last_full = clock
            # Nothing learned since the last checkpoint: it still holds this model (resuming there
            # re-reads only samples not learned yet), so none is written.
            if clock - last_checkpoint >= s.checkpoint_every_ms and self.learned != learned_at_checkpoint:
                self._checkpoint(clock, source)
                last_checkpoint, learned_at_checkpoint = clock, self.learned
            self._progress(clock)
            bar.update(1)
        bar.close()
        if self.pusher.exporting:
            report = self.pusher.finish_full_export(wait=True)
            self._exported(export_started[0], clock, time.perf_counter() - export_started[1], report,
                           export_started[2])
        self.pusher.close()
        self._checkpoint(clock, source)
        self._progress(clock)
        rows, sizes, build = ([p[k] for p in self.pushes] for k in ("rows", "bytes", "seconds"))
        summary = TrainerSummary(
            world=self.data.name, stream=s.stream, resumed_after_samples=skipped, samples_learned=closer.samples,
            batches_learned=closer.batches, samples_learned_total=self.learned, digest=str(self.digest),
            data_time_ms=[start_clock, clock], exports=self.exports, pushes=len(self.pushes),
            push_rows={"p50": _quantile(rows, 0.5), "max": max(rows, default=0)},
            push_bytes={"p50": _quantile(sizes, 0.5), "max": max(sizes, default=0)},
            push_build_seconds={"p50": _quantile(build, 0.5), "p99": _quantile(build, 0.99)})
        print(f"learned {closer.samples:,} samples in {closer.batches:,} batches; {len(self.exports)} full "
              f"export(s), {len(self.pushes)} pushes (rows p50 {summary.push_rows['p50']:,.0f}, bytes p50 "
              f"{summary.push_bytes['p50']:,.0f}); checkpoint {self.checkpoints}")
        return summary


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else 0.0


def run_online_training(cfg: DictConfig, broker_url: str | None = None) -> TrainerSummary:
    """The trainer of cfg.online_train and cfg.push; its summary goes into the run's record."""
    keep_freed_memory()
    warn_if_emulated(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = OnlineTrainer(cfg, build(cfg.online_train), build(cfg.push), broker_url)
    summary = trainer.run()
    trainer.run_record.save_trainer_summary(summary)
    return summary


def main(config_yaml: str, broker_url: str, threads: int) -> None:
    """The trainer's process, as the supervisor (online/live.py) spawns it."""
    own_process_group()
    import torch

    torch.set_num_threads(threads)
    run_online_training(OmegaConf.create(config_yaml), broker_url)
