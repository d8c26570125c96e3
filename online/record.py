"""A live run's record, as `DataSet` is for data: one module naming every file a run of the live loop
writes, each loaded and saved typed. The components write their parts as they run; the report is
computed from the record alone (`python -m online.report` renders it again from the files).

    logs/online/<name>/
      config.yaml            the run's composed config (the comparison replay runs with it)
      answers.npz            the driver: what the ranker answered for each impression (Answers)
      joiner_samples.<k>.npz joiner k's ledger: every sample it emitted (a StreamLedger per stream)
      joiner_served.<k>.npz  joiner k's served ledger: every served-features record it read (ServedLedger)
      rounds.npz             the driver's publishing rounds (Rounds)
      versions.jsonl         the trainer: every version a ranker may serve and what it had learned
      driver_summary.json, joiner_summary.<k>.json
      loop.json              the supervisor: progress samples, faults, the ranker's log and metrics,
                             the quarantine
      latest, clock-<ms>/    the trainer's checkpoints (the newest one named by `latest`)
      joiner.<k>/            joiner k's checkpoints and its ledger in parts (online/joiner_checkpoint.py)
    artifacts/<name>/        the export the ranker serves, and its pushes (export/export_dir.py)
    reports/online_train_<name>.json   the trainer's summary (make online-train writes it too)
    reports/<name>.{json,md,png}       the report
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from export.export_dir import ExportDir
from online.progress import ProgressSample


# -- the driver's answers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DriverClock:
    """Data time runs `speed` times wall time from (data0_ms, unix0_s)."""

    data0_ms: int
    unix0_s: float
    speed: float

    def data_ms(self, unix_s: np.ndarray) -> np.ndarray:
        return self.data0_ms + (np.asarray(unix_s) - self.unix0_s) * self.speed * 1000

    def unix_s(self, data_ms: np.ndarray) -> np.ndarray:
        return self.unix0_s + (np.asarray(data_ms) - self.data0_ms) / 1000 / self.speed


@dataclass
class Answers:
    """What the ranker answered for each impression (rows of the canonical table; NaN / -1 for one
    not answered), the version that answered, and when."""

    tasks: list[str]
    probabilities: np.ndarray  # [N, T] float32
    export: np.ndarray  # [N] int32: index into `exports`
    push: np.ndarray  # [N] int64
    attempts: np.ndarray  # [N] int16
    request_bytes: np.ndarray  # [N] int32: the request's size on the wire (0: never sent)
    sent_unix_s: np.ndarray  # [N]
    answered_unix_s: np.ndarray  # [N]
    exports: list[str]  # export ids, in the order first seen
    rows: np.ndarray  # the rows played, in request order
    clock: DriverClock

    @classmethod
    def empty(cls, n: int, tasks: list[str], rows: np.ndarray, clock: DriverClock) -> "Answers":
        return cls(list(tasks), np.full((n, len(tasks)), np.nan, dtype=np.float32), np.full(n, -1, dtype=np.int32),
                   np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int16), np.zeros(n, dtype=np.int32), np.full(n, np.nan),
                   np.full(n, np.nan), [], np.asarray(rows), clock)

    @property
    def answered(self) -> np.ndarray:
        return np.isfinite(self.answered_unix_s)

    def save(self, path: Path) -> None:
        np.savez(path, tasks=np.array(self.tasks, dtype=str), probabilities=self.probabilities, export=self.export,
                 push=self.push, attempts=self.attempts, request_bytes=self.request_bytes, sent_unix_s=self.sent_unix_s,
                 answered_unix_s=self.answered_unix_s, exports=np.array(self.exports, dtype=str), rows=self.rows,
                 data0_ms=self.clock.data0_ms, unix0_s=self.clock.unix0_s, speed=self.clock.speed)

    @classmethod
    def load(cls, path: Path) -> "Answers":
        with np.load(path, allow_pickle=False) as f:
            return cls([str(t) for t in f["tasks"]], f["probabilities"], f["export"], f["push"], f["attempts"],
                       f["request_bytes"], f["sent_unix_s"], f["answered_unix_s"], [str(e) for e in f["exports"]], f["rows"],
                       DriverClock(int(f["data0_ms"]), float(f["unix0_s"]), float(f["speed"])))


# -- the joiner's ledger ----------------------------------------------------------------------------
@dataclass
class StreamLedger:
    """The samples the joiner emitted on one stream, in emission order."""

    impression_id: np.ndarray
    request_ts: np.ndarray
    report_ts: np.ndarray
    kind: np.ndarray
    state: np.ndarray  # [S, T]
    published_unix_s: np.ndarray  # when each was published
    features_digest: np.ndarray  # uint64: online/served.py features_digest of the sample's features


LEDGER_FIELDS = ("impression_id", "request_ts", "report_ts", "kind", "state", "published_unix_s", "features_digest")


@dataclass
class ServedLedger:
    """The served-features records a joiner read (the ranker's log of what it answered with), in the
    order read, duplicates included (a request answered twice: retried after the answer was lost)."""

    impression_id: np.ndarray
    request_ts: np.ndarray
    state_clock: np.ndarray  # the feature state's clock (newest event) when it answered
    features_digest: np.ndarray  # uint64, of the record's integer features
    dense: np.ndarray  # [R, len(DENSE_FEATURES)] float32

    @classmethod
    def empty(cls, dense_width: int) -> "ServedLedger":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64),
                   np.zeros((0, dense_width), np.float32))

    @classmethod
    def concat(cls, parts: list["ServedLedger"]) -> "ServedLedger":
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in SERVED_FIELDS))

    def save(self, path: Path) -> None:
        np.savez(path, **{f: getattr(self, f) for f in SERVED_FIELDS})

    @classmethod
    def load(cls, path: Path) -> "ServedLedger":
        with np.load(path, allow_pickle=False) as f:
            return cls(*(f[name] for name in SERVED_FIELDS))


SERVED_FIELDS = ("impression_id", "request_ts", "state_clock", "features_digest", "dense")


@dataclass
class Rounds:
    """The driver's publishing rounds: round k put schedule entries [first, end) on the broker at
    unix_ms, then clock marks at `mark` (-1: none yet) (a round retried, or published again by a
    driver started again, appears again)."""

    unix_ms: np.ndarray
    first: np.ndarray
    end: np.ndarray
    mark: np.ndarray

    def published_unix_s(self, entries: int) -> np.ndarray:
        """[entries] when each schedule entry was first published (inf: never)."""
        out = np.full(entries, np.inf)
        for t, a, b in sorted(zip(self.unix_ms.tolist(), self.first.tolist(), self.end.tolist()), reverse=True):
            out[a:b] = t / 1000.0  # the earliest round covering an entry is written last
        return out

    def marked_unix_s(self, ts: np.ndarray) -> np.ndarray:
        """[len(ts)] when a clock mark at or past each time was first published (inf: never): from
        then on the partitions claimed every event up to that time was out."""
        order = np.argsort(self.unix_ms, kind="stable")
        highest = np.maximum.accumulate(self.mark[order]) if len(order) else np.zeros(0, np.int64)
        at = np.searchsorted(highest, ts, side="left")  # the first round whose marks reach ts
        return np.where(at < len(order), self.unix_ms[order][np.minimum(at, len(order) - 1)] / 1000.0, np.inf) \
            if len(order) else np.full(len(ts), np.inf)

    def save(self, path: Path) -> None:
        np.savez(path, unix_ms=self.unix_ms, first=self.first, end=self.end, mark=self.mark)

    @classmethod
    def load(cls, path: Path) -> "Rounds":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["unix_ms"], f["first"], f["end"], f["mark"])


def save_ledger(ledger: dict[str, StreamLedger], path: Path) -> None:
    np.savez(path, **{f"{stream}.{key}": getattr(part, key) for stream, part in ledger.items()
                      for key in LEDGER_FIELDS})


def concat_ledgers(parts: list[dict[str, StreamLedger]]) -> dict[str, StreamLedger]:
    """Ledgers one after the other, stream by stream."""
    streams = sorted({s for part in parts for s in part})
    return {s: StreamLedger(*(np.concatenate([getattr(p[s], key) for p in parts if s in p]) for key in LEDGER_FIELDS))
            for s in streams}


def load_ledger(path: Path) -> dict[str, StreamLedger]:
    with np.load(path, allow_pickle=False) as f:
        streams = sorted({key.rsplit(".", 1)[0] for key in f.files})
        return {s: StreamLedger(*(f[f"{s}.{key}"] for key in LEDGER_FIELDS)) for s in streams}


# -- the trainer's versions -------------------------------------------------------------------------
@dataclass(frozen=True)
class Version:
    """A version a ranker may serve, (export, push), and the samples of its stream it had learned."""

    export_id: str
    push: int
    samples_learned: int
    clock_ms: int
    unix_s: float


# -- summaries --------------------------------------------------------------------------------------
@dataclass
class DriverSummary:
    requests_sent: int
    requests_answered: int
    requests_lost: int
    wall_s: float  # of the last driver
    events_published: int = 0  # the joiner's facts and malformed entries, each acknowledged by the broker
    restarts: int = 0  # drivers started again before the last one ended
    state_events_published: int = 0  # the ranker's own: short-video plays, rooms starting and ending


@dataclass
class JoinerSummary:
    events: int
    quarantined: int
    emitted: dict[str, int]  # samples, by stream
    open_at_end: int  # impressions with no exit when the partitions ended
    resumes: int = 0  # times the joiner started again from its checkpoint
    processes: int = 1  # joiner processes these figures sum
    served: int = 0  # served-features records read (duplicates included)
    served_duplicates: int = 0  # records of a request already served (retried): the first one is kept
    served_conflicts: int = 0  # duplicates whose features differ from the first record's
    served_orphans: int = 0  # records of no impression the joiner holds or expects (its samples all out)
    samples_unserved: int = 0  # samples dropped: their impression has no served features (request lost)


@dataclass
class TrainerSummary:
    world: str
    stream: str
    resumed_after_samples: int
    samples_learned: int  # by this process
    batches_learned: int
    samples_learned_total: int  # from the stream's start (a resume counts the checkpoint's)
    digest: str  # order-free digest of every sample learned (online/trainer.py: sample_digest)
    data_time_ms: list[int]  # [first, last] of the data clock
    exports: list[dict]
    pushes: int
    push_rows: dict[str, float]
    push_bytes: dict[str, float]
    push_build_seconds: dict[str, float]


@dataclass
class Fault:
    event: str  # "trainer killed", "ranker serving again", ...
    unix_s: float


@dataclass
class Restart:
    """A component that died and was started again by the supervisor."""

    component: str
    cause: str  # "SIGKILL (fault schedule)", "exit status 1", ...
    died_unix_s: float  # the kill, or when the supervisor saw it gone
    restarted_unix_s: float | None = None  # started again (after the backoff)
    recovered_unix_s: float | None = None  # at work again (online/live.py: LiveLoop._recovered)


@dataclass
class LoopRecord:
    """What the supervisor saw: the components' progress once a second, the faults it caused, the
    restarts, the ranker's log and metrics, the broker's quarantine."""

    wall_s: float
    series: list[ProgressSample] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    ranker_logs: list[str] = field(default_factory=list)  # of every ranker started, the last one's last
    ranker_metrics: dict[str, float] = field(default_factory=dict)
    quarantine: list[dict[str, str]] = field(default_factory=list)  # entries refused, with their reason
    restarts: list[Restart] = field(default_factory=list)
    faults_skipped: list[str] = field(default_factory=list)  # scheduled faults not injected: their target had finished

    @classmethod
    def of_dict(cls, d: dict) -> "LoopRecord":
        return cls(d["wall_s"], [ProgressSample.of_dict(s) for s in d["series"]], [Fault(**f) for f in d["faults"]],
                   d["ranker_logs"], d["ranker_metrics"], d["quarantine"],
                   [Restart(**r) for r in d.get("restarts", [])], d.get("faults_skipped", []))


LATEST = "latest"  # a checkpoint directory's pointer to its newest checkpoint


def commit_checkpoint(root: Path, directory: Path, pattern: str) -> None:
    """Points `root`/latest at `directory` (written whole before: the pointer is replaced
    atomically, last), then removes the older checkpoints matching `pattern`: the newest is all a
    restart needs."""
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(directory.name)
    pointer.replace(root / LATEST)
    for old in root.glob(pattern):
        if old != directory:
            shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(json.dumps(value, indent=2, default=float) + "\n")
    staged.replace(path)


# -- the run ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveRun:
    name: str
    logs: Path  # logs/online/<name>: the components' records and the trainer's checkpoints
    export: ExportDir  # artifacts/<name>: what the ranker serves
    reports: Path  # reports/

    @classmethod
    def of(cls, paths: DictConfig, name: str) -> "LiveRun":
        """The run `name` under the configured paths (cfg.paths)."""
        name = str(name)
        return cls(name, Path(paths.log_dir) / "online" / name, ExportDir(Path(paths.artifacts_dir) / name),
                   Path(paths.reports_dir))

    def clear(self) -> None:
        """Removes what an earlier run of this name left (its logs, checkpoints and export)."""
        for stale in (self.logs, self.export.root):
            shutil.rmtree(stale, ignore_errors=True)
        self.logs.mkdir(parents=True)

    # files
    @property
    def config_path(self) -> Path:
        return self.logs / "config.yaml"

    @property
    def answers_path(self) -> Path:
        return self.logs / "answers.npz"

    def ledger_path(self, index: int) -> Path:
        return self.logs / f"joiner_samples.{index}.npz"

    def served_path(self, index: int) -> Path:
        return self.logs / f"joiner_served.{index}.npz"

    @property
    def rounds_path(self) -> Path:
        return self.logs / "rounds.npz"

    @property
    def versions_path(self) -> Path:
        return self.logs / "versions.jsonl"

    @property
    def driver_summary_path(self) -> Path:
        return self.logs / "driver_summary.json"

    def joiner_summary_path(self, index: int) -> Path:
        return self.logs / f"joiner_summary.{index}.json"

    @property
    def loop_path(self) -> Path:
        return self.logs / "loop.json"

    @property
    def checkpoints(self) -> Path:
        """The trainer's checkpoints."""
        return self.logs

    def joiner_checkpoints(self, index: int) -> Path:
        return self.logs / f"joiner.{index}"

    @property
    def trainer_summary_path(self) -> Path:
        return self.reports / f"online_train_{self.name}.json"

    def report_path(self, suffix: str) -> Path:
        """reports/<name>.json, .md, .png."""
        return self.reports / f"{self.name}{suffix}"

    # typed load and save
    def save_config(self, cfg: DictConfig) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(OmegaConf.to_yaml(cfg, resolve=True))

    def config(self) -> DictConfig:
        return OmegaConf.load(self.config_path)

    def save_answers(self, answers: Answers) -> None:
        answers.save(self.answers_path)

    def answers(self) -> Answers:
        return Answers.load(self.answers_path)

    def _joiner_files(self, pattern: str) -> list[Path]:
        files = sorted(self.logs.glob(pattern))
        if not files:
            raise FileNotFoundError(f"{self.logs}: no {pattern} (the joiner did not finish)")
        return files

    def save_ledger(self, ledger: dict[str, StreamLedger], index: int = 0) -> None:
        save_ledger(ledger, self.ledger_path(index))

    def ledger(self) -> dict[str, StreamLedger]:
        """Every joiner's ledger, per stream in the order the trainer learns its samples: report
        time, then impression, then kind (one joiner emits in that order; several are merged so)."""
        merged = concat_ledgers([load_ledger(f) for f in self._joiner_files("joiner_samples.*.npz")])
        out = {}
        for stream, part in merged.items():
            order = np.lexsort((part.kind, part.impression_id, part.report_ts))
            out[stream] = StreamLedger(*(getattr(part, key)[order] for key in LEDGER_FIELDS))
        return out

    def save_served(self, served: ServedLedger, index: int = 0) -> None:
        served.save(self.served_path(index))

    def served(self) -> ServedLedger:
        """Every joiner's served ledger, in read order per joiner."""
        return ServedLedger.concat([ServedLedger.load(f) for f in self._joiner_files("joiner_served.*.npz")])

    def save_rounds(self, rounds: Rounds) -> None:
        rounds.save(self.rounds_path)

    def rounds(self) -> Rounds:
        return Rounds.load(self.rounds_path)

    def append_version(self, version: Version) -> None:
        self.versions_path.parent.mkdir(parents=True, exist_ok=True)
        with self.versions_path.open("a") as f:
            f.write(json.dumps(asdict(version)) + "\n")

    def versions(self) -> list[Version]:
        return [Version(**json.loads(line)) for line in self.versions_path.read_text().splitlines()]

    def save_driver_summary(self, summary: DriverSummary) -> None:
        _write_json(self.driver_summary_path, asdict(summary))

    def driver_summary(self) -> DriverSummary:
        return DriverSummary(**json.loads(self.driver_summary_path.read_text()))

    def save_joiner_summary(self, summary: JoinerSummary, index: int = 0) -> None:
        _write_json(self.joiner_summary_path(index), asdict(summary))

    def joiner_summary(self) -> JoinerSummary:
        """Every joiner process's summary, summed."""
        parts = [JoinerSummary(**json.loads(f.read_text())) for f in self._joiner_files("joiner_summary.*.json")]
        emitted: dict[str, int] = {}
        for p in parts:
            for stream, n in p.emitted.items():
                emitted[stream] = emitted.get(stream, 0) + n
        summed = ("served", "served_duplicates", "served_conflicts", "served_orphans", "samples_unserved")
        return JoinerSummary(sum(p.events for p in parts), sum(p.quarantined for p in parts), emitted,
                             sum(p.open_at_end for p in parts), sum(p.resumes for p in parts), len(parts),
                             **{f: sum(getattr(p, f) for p in parts) for f in summed})

    def save_trainer_summary(self, summary: TrainerSummary) -> None:
        _write_json(self.trainer_summary_path, asdict(summary))

    def trainer_summary(self) -> TrainerSummary:
        return TrainerSummary(**json.loads(self.trainer_summary_path.read_text()))

    def save_loop(self, loop: LoopRecord) -> None:
        _write_json(self.loop_path, asdict(loop))

    def loop(self) -> LoopRecord:
        return LoopRecord.of_dict(json.loads(self.loop_path.read_text()))
