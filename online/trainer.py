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

`online_train.source: broker` reads the samples the live loop's label joiner publishes instead of the
shards (`make online`, online/live.py): the data clock is then the joiner's watermark, a checkpoint
also holds the broker offset (exactly-once: a restart reads on from the first sample not learned),
and the trainer writes its progress into the broker for the live report.

Every version the ranker may serve is written to `versions.jsonl` beside the checkpoints, with the
samples it had learned (the live report's click-to-served latency joins answers to it), and an
order-free digest of the samples learned is kept with each checkpoint (a sample learned twice or
never changes it).
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
from online import broker as brk
from online.broker_samples import BrokerSamples
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
    source: str  # shards | broker
    redis_url: str | None  # the broker, for source=broker

    @classmethod
    def of(cls, oc: DictConfig, push: DictConfig) -> "OnlineTrainSettings":
        s = cls(name=str(oc.name), stream=str(oc.stream), seed=int(oc.seed), batch_size=int(oc.batch_size),
                max_wait_ms=int(oc.max_wait_s) * 1000, batch_norm_min_batch=int(oc.batch_norm_min_batch),
                push_every_ms=int(push.every_s * 1000), full_every_ms=int(push.full_every_s * 1000),
                checkpoint_every_ms=int(oc.checkpoint_every_s * 1000), pace=float(oc.pace),
                stop_after_ms=None if oc.stop_after_s is None else int(oc.stop_after_s * 1000),
                validation_batch=int(oc.validation_batch), progress=bool(oc.progress), source=str(oc.source),
                redis_url=None if oc.redis_url is None else str(oc.redis_url))
        if s.source not in ("shards", "broker") or (s.source == "broker" and not s.redis_url):
            raise ValueError(f"online_train.source must be shards or broker (with online_train.redis_url), got "
                             f"{s.source!r}")
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
        self.learned = 0  # samples of the stream learned, from its start (a resume counts the checkpoint's)
        self.digest = 0
        self.broker = brk.connect(settings.redis_url) if settings.source == "broker" else None
        self.versions = self.checkpoints / "versions.jsonl"

    def _learn(self, batch: Samples, closed_at_ms: int) -> None:
        self.learner.train(to_batch(batch))
        self.pusher.learned()
        self.newest_learned_ms = int(batch["report_ts"][-1])
        self.learned += len(batch["report_ts"])
        self.digest = (self.digest + sample_digest(batch["impression_id"], batch["report_ts"], batch["kind"])) % 2**64

    def _version(self, push: int, learned: int, clock_ms: int) -> None:
        """A version the ranker may serve, (export, push), and the samples it had learned."""
        self.versions.parent.mkdir(parents=True, exist_ok=True)
        with self.versions.open("a") as f:
            f.write(json.dumps({"export_id": self.pusher.meta["export_id"], "push": push, "samples_learned": learned,
                                "clock_ms": clock_ms, "unix_s": time.time()}) + "\n")

    def _exported(self, started_ms: int, clock_ms: int, seconds: float, report, learned_at_snapshot: int) -> None:
        self.exports.append({"clock_ms": started_ms, "committed_clock_ms": clock_ms,
                             "export_id": self.pusher.meta["export_id"], "seconds": seconds,
                             "formats": sorted(report.files)})
        self._version(0, learned_at_snapshot, started_ms)
        if self.pusher.sequence:  # the commit's first push brought the base up to now
            self._version(self.pusher.sequence, self.learned, clock_ms)
        # Earlier bases' pushes: no replica loads those bases any more once model.json has moved on.
        for old in (self.out_dir / "pushes").glob("*"):
            if old.name != self.pusher.meta["export_id"]:
                shutil.rmtree(old, ignore_errors=True)

    def _full_export(self, clock_ms: int | None) -> None:
        """A new base before anything else can be pushed: written and committed now."""
        start = time.perf_counter()
        report = self.pusher.full_export(self.validation)
        self._exported(clock_ms, clock_ms, time.perf_counter() - start, report, self.learned)

    def _checkpoint(self, clock_ms: int, source) -> Path:
        position = {"clock_ms": clock_ms, "samples_learned": self.learned, "digest": str(self.digest)}
        if isinstance(source, BrokerSamples):
            after, skip = source.offset_for(self.learned)
            position["broker"] = {"after": after.decode(), "skip": skip}
        directory = self.learner.save(self.checkpoints / f"clock-{clock_ms}", position)
        pointer = self.checkpoints / f".{LATEST}.tmp"
        pointer.write_text(directory.name)
        pointer.replace(self.checkpoints / LATEST)
        for old in self.checkpoints.glob("clock-*"):  # the newest is all a restart needs
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
        if "broker" in position:  # entries before the resume point are needed by nobody now
            self.broker.xtrim(brk.samples_stream(self.s.stream), minid=position["broker"]["after"], approximate=True)
        return directory

    def _source(self, resumed: dict | None) -> tuple[object, int]:
        """The samples to learn after those of the checkpoint, and the data time to start the clock at."""
        s = self.s
        if s.source == "broker":
            offset = (resumed or {}).get("broker", {"after": "0-0", "skip": 0})
            source = BrokerSamples(self.broker, brk.samples_stream(s.stream), offset["after"].encode(),
                                   int(offset["skip"]), position=self.learned)
            first = int(resumed["clock_ms"]) if resumed else source.first_watermark()
            return source, (first // s.push_every_ms) * s.push_every_ms
        parts = ShardDataset(self.data.stream(s.stream), batch_size=1).micro_batches()
        first = int(resumed["clock_ms"]) if resumed else first_report_ms(self.data, s.stream)
        return ReportedSamples(skip_samples(parts, self.learned)), (first // s.push_every_ms) * s.push_every_ms

    def _progress(self, clock_ms: int) -> None:
        if self.broker is not None:
            self.broker.hset(brk.PROGRESS, mapping={"trainer_clock_ms": clock_ms, "trainer_learned": self.learned,
                                                    "trainer_pushes": len(self.pushes), "trainer_unix_s": time.time()})

    def _resume(self) -> dict | None:
        pointer = self.checkpoints / LATEST
        if not pointer.exists():
            return None
        return self.learner.load(self.checkpoints / pointer.read_text().strip())

    def run(self) -> dict:
        s = self.s
        resumed = self._resume()
        skipped = self.learned = int(resumed["samples_learned"]) if resumed else 0
        self.digest = int(resumed.get("digest", 0)) if resumed else 0
        # The first base before the first sample: a ranker must serve before the live loop's traffic
        # (and so its samples) can start.
        self._full_export(int(resumed["clock_ms"]) if resumed else None)
        source, clock = self._source(resumed)
        start_clock = clock
        stop = None if s.stop_after_ms is None else start_clock + s.stop_after_ms
        streaming = StreamingLearner(self._learn, s.batch_size, s.max_wait_ms)
        print(f"online-train on '{self.data.name}' ({s.stream}, from {s.source}): " +
              (f"resumed at data time {clock} after {skipped:,} samples; " if resumed else "") +
              f"push every {s.push_every_ms / 1000:g} s, full export every {s.full_every_ms / 1000:g} s of data time, "
              f"pace {s.pace:g} -> {self.out_dir}")
        last_full = last_checkpoint = clock
        export_started = (clock, time.perf_counter(), self.learned)
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
                self._exported(export_started[0], clock, time.perf_counter() - export_started[1], report,
                               export_started[2])
            else:
                record = self.pusher.push(self.newest_learned_ms)
                self.pushes.append({**asdict(record), "path": str(record.path), "clock_ms": clock})
                self._version(record.sequence, self.learned, clock)
            if clock - last_full >= s.full_every_ms and not self.pusher.exporting:
                # Written in a process of its own; pushes onto the current base go on meanwhile.
                self.pusher.start_full_export(self.validation)
                export_started = (clock, time.perf_counter(), self.learned)
                last_full = clock
            if clock - last_checkpoint >= s.checkpoint_every_ms:
                self._checkpoint(clock, source)
                last_checkpoint = clock
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
        summary = {"world": self.data.name, "stream": s.stream, "resumed_after_samples": skipped,
                   "samples_learned": streaming.samples, "batches_learned": streaming.batches,
                   "samples_learned_total": self.learned, "digest": str(self.digest),
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
