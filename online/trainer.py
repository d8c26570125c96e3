"""`make online-train`: the continuous trainer. It reads a label stream's samples in report order
(today from its shards, replayed on the data's own clock), learns them as they become visible with
the replay's streaming learner (recsys/online/), and feeds the ranker:

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
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from data_pipelines.dataset import FINAL, DataSet
from export.scorer import inputs_from_batch
from online.pusher import Pusher, PushSettings
from recsys.allocator import keep_freed_memory
from recsys.data import ShardDataset, make_loader
from recsys.data.batch import to_batch
from recsys.data.loader import take_rows
from recsys.model.factory import model_from_config
from recsys.online.learner import OnlineLearner
from recsys.online.streaming import Samples, StreamingLearner
from recsys.replay.timeline import ReportedSamples
from recsys.train.precision import warn_if_emulated

LATEST = "latest"  # the checkpoint directory's pointer to its newest checkpoint


@dataclass(frozen=True)
class OnlineTrainSettings:
    name: str  # artifacts/<name>: the export the ranker serves; logs/online/<name>: checkpoints
    stream: str
    seed: int
    batch_size: int
    max_wait_ms: int
    batch_norm_min_batch: int
    push_every_ms: int
    full_every_ms: int
    checkpoint_every_ms: int
    pace: float
    stop_after_ms: int | None
    validation_batch: int
    progress: bool

    @classmethod
    def of(cls, oc: DictConfig, push: DictConfig) -> "OnlineTrainSettings":
        s = cls(name=str(oc.name), stream=str(oc.stream), seed=int(oc.seed), batch_size=int(oc.batch_size),
                max_wait_ms=int(oc.max_wait_s) * 1000, batch_norm_min_batch=int(oc.batch_norm_min_batch),
                push_every_ms=int(push.every_s * 1000), full_every_ms=int(push.full_every_s * 1000),
                checkpoint_every_ms=int(oc.checkpoint_every_s * 1000), pace=float(oc.pace),
                stop_after_ms=None if oc.stop_after_s is None else int(oc.stop_after_s * 1000),
                validation_batch=int(oc.validation_batch), progress=bool(oc.progress))
        if s.push_every_ms <= 0 or s.full_every_ms < s.push_every_ms:
            raise ValueError(f"push.every_s must be positive and push.full_every_s at least as long, got "
                             f"{push.every_s} and {push.full_every_s}")
        if s.checkpoint_every_ms <= 0 or s.pace < 0:
            raise ValueError("online_train.checkpoint_every_s must be positive and online_train.pace at least 0")
        return s


def skip_samples(parts: Iterable[Samples], n: int) -> Iterator[Samples]:
    """The micro-batches after their first `n` samples."""
    for part in parts:
        k = len(part["report_ts"])
        if n >= k:
            n -= k
            continue
        yield take_rows(part, np.arange(n, k)) if n else part
        n = 0


def first_report_ms(data: DataSet, stream: str) -> int:
    for part in ShardDataset(data.stream(stream), batch_size=1).micro_batches():
        if len(part["report_ts"]):
            return int(part["report_ts"][0])
    raise ValueError(f"{data.stream(stream)}: the stream holds no sample")


class OnlineTrainer:
    def __init__(self, cfg: DictConfig, settings: OnlineTrainSettings):
        self.cfg, self.s = cfg, settings
        self.data = DataSet(cfg.data.output_dir)
        if not self.data.has_stream(settings.stream):
            raise FileNotFoundError(f"{self.data.streams}: no shards for stream '{settings.stream}'; run make streams "
                                    f"ARGS=\"world={self.data.name}\" first")
        manifest = self.data.manifest(settings.stream)
        self.learner = OnlineLearner(cfg, manifest, settings.seed, settings.batch_norm_min_batch)
        layout = OmegaConf.to_container(cfg.request_layout, resolve=True)
        copy = model_from_config(cfg, manifest, embedding_device="cpu")
        layout["sequences"] = [g for g in layout["sequences"] if g in copy.gsu_names]
        self.out_dir = Path(cfg.paths.artifacts_dir) / settings.name
        push = cfg.push
        self.pusher = Pusher(self.learner.task.model, copy, layout,
                             PushSettings.of(self.out_dir, str(push.formats), int(push.dense_every),
                                             int(push.max_candidates), int(push.aoti_threads),
                                             float(push.tolerance)),
                             training={"run_id": f"online-{settings.name}", "data": self.data.name,
                                       "stream": settings.stream, "trainer": "online"})
        batch = next(iter(make_loader(ShardDataset(self.data.stream(FINAL), settings.validation_batch))))
        self.validation = inputs_from_batch(batch, copy)
        self.checkpoints = Path(cfg.paths.log_dir) / "online" / settings.name
        self.newest_learned_ms = 0
        self.pushes: list[dict] = []
        self.exports: list[dict] = []

    def _learn(self, batch: Samples, closed_at_ms: int) -> None:
        self.learner.train(to_batch(batch))
        self.pusher.learned()
        self.newest_learned_ms = int(batch["report_ts"][-1])

    def _exported(self, started_ms: int, clock_ms: int, seconds: float, report) -> None:
        self.exports.append({"clock_ms": started_ms, "committed_clock_ms": clock_ms,
                             "export_id": self.pusher.meta["export_id"], "seconds": seconds,
                             "formats": sorted(report.files)})
        # Earlier bases' pushes: no replica loads those bases any more once model.json has moved on.
        for old in (self.out_dir / "pushes").glob("*"):
            if old.name != self.pusher.meta["export_id"]:
                shutil.rmtree(old, ignore_errors=True)

    def _full_export(self, clock_ms: int) -> None:
        """A new base before anything else can be pushed: written and committed now."""
        start = time.perf_counter()
        self._exported(clock_ms, clock_ms, time.perf_counter() - start, self.pusher.full_export(self.validation))

    def _checkpoint(self, clock_ms: int, samples_learned: int) -> Path:
        directory = self.learner.save(self.checkpoints / f"clock-{clock_ms}",
                                      {"clock_ms": clock_ms, "samples_learned": samples_learned})
        pointer = self.checkpoints / f".{LATEST}.tmp"
        pointer.write_text(directory.name)
        pointer.replace(self.checkpoints / LATEST)
        for old in self.checkpoints.glob("clock-*"):  # the newest is all a restart needs
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
        return directory

    def _resume(self) -> dict | None:
        pointer = self.checkpoints / LATEST
        if not pointer.exists():
            return None
        return self.learner.load(self.checkpoints / pointer.read_text().strip())

    def run(self) -> dict:
        s = self.s
        resumed = self._resume()
        skipped = int(resumed["samples_learned"]) if resumed else 0
        first = first_report_ms(self.data, s.stream)
        clock = int(resumed["clock_ms"]) if resumed else (first // s.push_every_ms) * s.push_every_ms
        start_clock = clock
        stop = None if s.stop_after_ms is None else start_clock + s.stop_after_ms
        source = ReportedSamples(skip_samples(ShardDataset(self.data.stream(s.stream), batch_size=1).micro_batches(),
                                              skipped))
        streaming = StreamingLearner(self._learn, s.batch_size, s.max_wait_ms)
        print(f"online-train on '{self.data.name}' ({s.stream}): " +
              (f"resumed at data time {clock} after {skipped:,} samples; " if resumed else "") +
              f"push every {s.push_every_ms / 1000:g} s, full export every {s.full_every_ms / 1000:g} s of data time, "
              f"pace {s.pace:g} -> {self.out_dir}")
        self._full_export(clock)
        last_full = last_checkpoint = clock
        export_started = (clock, time.perf_counter())
        wall_start = time.monotonic()
        exhausted = False
        bar = tqdm(desc="online-train", unit="push", disable=not s.progress)
        while not (exhausted and streaming.pending == 0) and (stop is None or clock < stop):
            clock += s.push_every_ms
            if s.pace > 0:  # the data clock may not run ahead of the wall clock's scaled time
                time.sleep(max(0.0, wall_start + (clock - start_clock) / 1000 * s.pace - time.monotonic()))
            samples = source.until(clock)
            exhausted = source.exhausted
            streaming.add(samples)
            streaming.advance(clock)
            report = self.pusher.finish_full_export() if self.pusher.exporting else None
            if report is not None:  # committed, with its first push
                self._exported(export_started[0], clock, time.perf_counter() - export_started[1], report)
            else:
                record = self.pusher.push(self.newest_learned_ms)
                self.pushes.append({**asdict(record), "path": str(record.path), "clock_ms": clock})
            if clock - last_full >= s.full_every_ms and not self.pusher.exporting:
                # Written in a process of its own; pushes onto the current base go on meanwhile.
                self.pusher.start_full_export(self.validation)
                export_started = (clock, time.perf_counter())
                last_full = clock
            if clock - last_checkpoint >= s.checkpoint_every_ms:
                self._checkpoint(clock, skipped + streaming.samples)
                last_checkpoint = clock
            bar.update(1)
        bar.close()
        if self.pusher.exporting:
            report = self.pusher.finish_full_export(wait=True)
            self._exported(export_started[0], clock, time.perf_counter() - export_started[1], report)
        self.pusher.close()
        self._checkpoint(clock, skipped + streaming.samples)
        summary = {"world": self.data.name, "stream": s.stream, "resumed_after_samples": skipped,
                   "samples_learned": streaming.samples, "batches_learned": streaming.batches,
                   "data_time_ms": [start_clock, clock], "exports": self.exports, "pushes": len(self.pushes),
                   "push_rows": {"p50": _quantile([p["rows"] for p in self.pushes], 0.5),
                                 "max": max((p["rows"] for p in self.pushes), default=0)},
                   "push_bytes": {"p50": _quantile([p["bytes"] for p in self.pushes], 0.5),
                                  "max": max((p["bytes"] for p in self.pushes), default=0)},
                   "push_build_seconds": {"p50": _quantile([p["seconds"] for p in self.pushes], 0.5),
                                          "p99": _quantile([p["seconds"] for p in self.pushes], 0.99)}}
        print(f"learned {streaming.samples:,} samples in {streaming.batches:,} batches; {len(self.exports)} full "
              f"export(s), {len(self.pushes)} pushes (rows p50 {summary['push_rows']['p50']:,.0f}, bytes p50 "
              f"{summary['push_bytes']['p50']:,.0f}); checkpoint {self.checkpoints}")
        return summary


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) if values else 0.0


def run_online_training(cfg: DictConfig) -> dict:
    keep_freed_memory()
    warn_if_emulated(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = OnlineTrainer(cfg, OnlineTrainSettings.of(cfg.online_train, cfg.push))
    summary = trainer.run()
    report = Path(cfg.paths.reports_dir) / f"online_train_{trainer.s.name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
