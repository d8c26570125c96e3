"""`make online`: the live loop on an accelerated clock (docs/online.md).

    traffic driver --events--> broker (Redis Streams, events.<p>) --> label joiner
         |  ^                                                             |
     Rank|  |answers                                           samples.<stream>
         v  |                                                             v
      ranker (gRPC) <---- pushes every 30 s, full exports ---- continuous trainer

This module is the supervisor: it starts every component as a process of its own — the broker
(redis-server), the trainer, the ranker, the joiner, the driver — each of which reads its own config
node (online/trainer.py, online/joiner.py, online/driver.py: their `main`), watches them, samples
their progress once a second, runs the fault drill when asked, and stops them all at the end,
whatever happened. What the components and the supervisor saw is the run's record
(online/record.py), from which online/report/ computes the report. The tests use the supervisor's
handles to kill and restart components mid-stream.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass

import hydra
from omegaconf import DictConfig, OmegaConf

from data_pipelines.configured import build
from data_pipelines.dataset import FINAL, DataSet
from online import broker as brk
from online import driver, joiner, trainer
from online.progress import ProgressSample
from online.record import Fault, LiveRun, LoopRecord
from serving.binaries import RANKER_SERVER
from serving.server_process import RankerServer

ROLES = ("trainer", "joiner", "driver")
# online.drill: each fault at this share of the played span (by the driver's clock).
DRILL = ((0.3, "trainer killed and restarted"), (0.5, "ranker restarted"), (0.7, "broker restarted"))


@dataclass(frozen=True)
class LiveSettings:
    """conf/online.yaml `online:` (one key per field): the loop as a whole. The components' own
    settings are their nodes (driver, joiner, online_train, push), which take the shared ones from
    here by interpolation."""

    name: str  # the run (online/record.py): artifacts/<name>, logs/online/<name>, reports/<name>.*
    speed: float  # data seconds per wall second
    partitions: int  # the events' partitions (by user)
    span_s: float | None  # data seconds played from the first impression; None: the whole data set
    redis_url: str | None  # None: a broker of the job's own
    ranker_format: str  # auto | torchscript | aoti
    ranker_threads: int  # the ranker's --intra-op-threads
    trainer_threads: int  # torch threads of the trainer
    replay: bool  # the replay of the same world, learner and seed beside the live figures
    progress: bool
    drill: bool  # the fault drill: DRILL's faults in turn

    def __post_init__(self) -> None:
        if self.speed <= 0 or self.partitions < 1 or self.ranker_threads < 1 or self.trainer_threads < 1:
            raise ValueError(f"online.speed, online.partitions, online.ranker_threads and online.trainer_threads must "
                             f"be positive, got {self}")
        if self.ranker_format not in ("auto", "torchscript", "aoti"):
            raise ValueError(f"online.ranker_format must be auto, torchscript or aoti, got {self.ranker_format!r}")


def _signal_group(proc: multiprocessing.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # gone already, or not yet its own group
        if proc.is_alive():
            os.kill(proc.pid, sig)


class LiveLoop:
    """Every component of the loop, started in order and stopped at the end (`close`, always)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.s: LiveSettings = build(cfg.online)
        self.run = LiveRun.of(cfg.paths, self.s.name)
        self.data = DataSet(cfg.data.output_dir)
        self.learned_stream = str(cfg.online_train.stream)
        self.data.require_streams([self.learned_stream, FINAL])  # the trainer's table sizes, the report's truth
        if not RANKER_SERVER.exists():
            raise FileNotFoundError(f"{RANKER_SERVER} does not exist: run make ranker first")
        self.sample_streams = list(build(cfg.stream).engines)  # what the joiner publishes
        self.ctx = multiprocessing.get_context("spawn")
        self.broker: brk.BrokerServer | None = None
        self.broker_url = ""
        self.ranker: RankerServer | None = None
        self.ranker_port = brk.free_port()
        self.procs: dict[str, multiprocessing.Process] = {}
        self.record = LoopRecord(wall_s=0.0)
        self.redis = None
        self.config_yaml = ""
        self._started = time.time()

    # -- components ---------------------------------------------------------------------------
    def start(self) -> "LiveLoop":
        self.run.clear()
        self.run.save_config(self.cfg)
        if self.s.redis_url is None:
            self.broker = brk.BrokerServer().start()
            self.broker_url = self.broker.url
        else:
            self.broker_url = self.s.redis_url
        self.redis = brk.connect(self.broker_url)
        self._clear_streams()
        self.config_yaml = OmegaConf.to_yaml(self.cfg, resolve=True)
        self.start_trainer()
        self._wait(self.run.export.has_meta, "the trainer's first full export", 900, ["trainer"])
        self.start_ranker()
        self._spawn("joiner", joiner.main, (self.config_yaml, self.broker_url))
        self._spawn("driver", driver.main, (self.config_yaml, self.broker_url, f"127.0.0.1:{self.ranker_port}"))
        return self

    def _clear_streams(self) -> None:
        keys = [brk.events_stream(p) for p in range(self.s.partitions)] + [
            brk.samples_stream(n) for n in self.sample_streams] + [brk.QUARANTINE, brk.PROGRESS]
        self.redis.delete(*keys)

    def _spawn(self, role: str, target, args: tuple) -> None:
        proc = self.ctx.Process(target=target, args=args, name=f"online-{role}", daemon=False)
        proc.start()
        self.procs[role] = proc

    def _fault(self, event: str) -> None:
        self.record.faults.append(Fault(event, time.time()))

    def start_trainer(self) -> None:
        self._spawn("trainer", trainer.main, (self.config_yaml, self.broker_url, self.s.trainer_threads))

    def kill_trainer(self) -> None:
        _signal_group(self.procs["trainer"], signal.SIGKILL)
        self.procs["trainer"].join()
        self._fault("trainer killed")

    def start_ranker(self) -> None:
        self.ranker = RankerServer(self.run.export.root, "--format", self.s.ranker_format, "--intra-op-threads",
                                   str(self.s.ranker_threads), port=self.ranker_port)

    def restart_ranker(self) -> None:
        self.ranker.terminate()
        self.record.ranker_logs.append(self.ranker.stderr)
        self._fault("ranker stopped")
        self.start_ranker()
        self._fault("ranker serving again")

    def restart_broker(self, down_s: float = 1.0) -> None:
        if self.broker is None:
            raise RuntimeError("the broker is not this job's own (online.redis_url is set)")
        self._fault("broker stopped")
        self.broker.restart(down_s)
        self._fault("broker up again")

    # -- watching ---------------------------------------------------------------------------------
    def sample(self) -> ProgressSample:
        # Events published and not consumed yet: the joiner trims what it has read (approximately).
        backlog = float(sum(self.redis.xlen(brk.events_stream(p)) for p in range(self.s.partitions)))
        row = ProgressSample.read(self.redis, backlog)
        self.record.series.append(row)
        return row

    def _check_alive(self, roles: list[str]) -> None:
        for role in roles:
            proc = self.procs.get(role)
            if proc is not None and proc.exitcode not in (None, 0):
                raise RuntimeError(f"the {role} process exited with status {proc.exitcode}; see its output above")

    def _wait(self, done, what: str, timeout_s: float, roles: list[str]) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            self._check_alive(roles)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not there after {timeout_s:.0f} s")
            time.sleep(0.2)

    def wait_until(self, condition, what: str, timeout_s: float = 600) -> None:
        """Samples progress each second until `condition(sample)` holds."""
        deadline = time.monotonic() + timeout_s
        while not condition(self.sample()):
            self._check_alive(list(self.procs))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not reached after {timeout_s:.0f} s")
            time.sleep(1.0)

    def finish(self, timeout_s: float = 3600) -> None:
        """Waits for the driver, the joiner and the trainer to end, sampling progress each second
        (and running the fault drill when asked)."""
        deadline = time.monotonic() + timeout_s
        drill = list(DRILL) if self.s.drill else []
        while any(self.procs[r].is_alive() for r in ROLES):
            self._check_alive(list(self.procs))
            if time.monotonic() > deadline:
                raise TimeoutError(f"the live loop did not end within {timeout_s:.0f} s")
            share = self.sample().driver.played_share()
            if drill and share is not None and share >= drill[0][0]:
                self._drill(drill.pop(0)[1])
            for proc in self.procs.values():
                proc.join(timeout=1.0 / len(self.procs))
        self._check_alive(list(self.procs))
        self.sample()

    def _drill(self, fault: str) -> None:
        print(f"drill: {fault}")
        if fault.startswith("trainer"):
            self.kill_trainer()
            self.start_trainer()
            self._fault("trainer started again")
        elif fault.startswith("ranker"):
            self.restart_ranker()
        else:
            self.restart_broker()

    def collect(self) -> None:
        """What the record needs from the components still running (the quarantine, the ranker's
        metrics and log), then the record itself."""
        self.record.quarantine = [{k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
                                  for _, fields in self.redis.xrange(brk.QUARANTINE)]
        self.record.ranker_metrics = self.ranker.metrics()
        self.record.ranker_logs.append(self.ranker.stderr)
        self.record.wall_s = time.time() - self._started
        self.run.save_loop(self.record)

    def close(self) -> None:
        """Stops whatever still runs: processes, ranker, broker."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
            proc.join(10)
            _signal_group(proc, signal.SIGKILL)  # and whatever it started
            proc.join()
        if self.ranker is not None:
            try:
                self.ranker.terminate()
            except Exception:  # already gone, or not answering: kill it
                self.ranker.kill()
        if self.redis is not None:
            self.redis.close()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> "LiveLoop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Stopped(BaseException):
    """SIGTERM or SIGINT reached the supervisor: the loop is closed (every process it started
    stopped, broker and ranker included) and the job exits with 128 + the signal's number. A
    BaseException, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """Within: the first SIGTERM or SIGINT raises Stopped where the supervisor is, so that the
    loop's context manager closes it (Python's default SIGTERM ends the process at once, leaving
    the broker and the ranker running); any later one is ignored, so that it cannot cut the
    closing short. The previous handlers are restored on the way out."""
    stopping = False

    def handler(signum, frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_live(cfg: DictConfig) -> dict:
    from online.report import write_report

    with stop_on_signals(), LiveLoop(cfg) as loop:
        loop.start()
        loop.finish()
        loop.collect()
    report = write_report(loop.run, cfg)
    s = report["summary"]
    replay = "none" if s["replay_auc_ctr"] is None else f"{s['replay_auc_ctr']:.4f}"
    latency = s["click_to_served_s"]
    print(f"served CTR AUC {s['served_auc_ctr']:.4f} (replay {replay}); click to served p50 {latency['p50'] or 0:.1f} s, "
          f"p99 {latency['p99'] or 0:.1f} s of data time; {s['requests_answered']:,}/{s['requests_sent']:,} requests "
          f"answered; {s['samples_learned']:,}/{s['samples_emitted']:,} samples learned; {s['pushes_applied']:,} "
          f"pushes applied")
    print(f"wrote {loop.run.report_path('.{json,md,png}')}")
    return report


@hydra.main(config_path="../conf", config_name="online", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    try:
        run_live(cfg)
    except Stopped as stop:
        print(f"make online: {stop}; every process it started is stopped", file=sys.stderr)
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    main()
