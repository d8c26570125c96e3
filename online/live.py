"""`make online`: the live loop on an accelerated clock (docs/online.md).

    traffic driver --events.<p>--> broker --events.<p>, served.<p>--> label joiner --samples--> trainer
       |  ^ ids-only Rank,          |  ^                                                         |
       v  | answers      events.<p> v  | served.<p> (features logged, then the answer)          |
      ranker (gRPC) + live feature state <------- pushes every 30 s, full exports -------------+

This module is the supervisor: it starts every component as a process of its own — the broker
(redis-server), the trainer, the ranker, the joiner, the driver — each of which reads its own config
node (online/trainer.py, online/joiner.py, online/driver.py: their `main`), watches them, samples
their progress once a second, starts again any that dies (online/supervision.py: backoff and a
limit), runs the fault drill or the chaos run when asked, and stops them all at the end, whatever
happened. What the components and the supervisor saw is the run's record (online/record.py), from
which online/report/ computes the report. The tests use the supervisor's handles to kill and
restart components mid-stream.
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
from urllib.parse import urlsplit

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from data_pipelines.configured import build
from data_pipelines.dataset import FINAL, DataSet
from online import broker as brk
from online.progress import ProgressSample
from online.record import Fault, LiveRun, LoopRecord, Restart, Rounds
from online.supervision import Kill, RestartPolicy, fault_schedule
from serving.binaries import RANKER_SERVER
from serving.server_process import RankerServer



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
    # How far behind the ranker's state clock a request may be, in wall seconds (× speed: data time):
    # a request retried through an outage finds the clock moved on by the outage's data time.
    feature_tolerance_wall_s: float
    served_log_wait_ms: int  # the ranker answers once a request's features are logged (or UNAVAILABLE)
    trainer_threads: int  # torch threads of the trainer
    replay: bool  # the replay of the same world, learner and seed beside the live figures
    progress: bool
    drill: bool  # the fault drill (online/supervision.py: DRILL)
    restart: RestartPolicy  # a component that dies is started again (online/supervision.py)
    chaos: int = 0  # SIGKILLs of randomly chosen components at random moments (online/supervision.py)
    chaos_seed: int = 0
    broker_fsync: str = "always"  # the job's own broker: always | everysec (online/broker.py: BrokerServer)

    def __post_init__(self) -> None:
        fault_schedule(self.drill, self.chaos, self.chaos_seed)  # refuses both at once, or a negative count
        if (self.drill or self.chaos) and self.redis_url is not None:
            raise ValueError(f"online.drill and online.chaos stop the job's own broker; online.redis_url points at "
                             f"another ({self.redis_url}): unset it to run a fault schedule")
        if self.broker_fsync not in brk.FSYNC_POLICIES:
            raise ValueError(f"online.broker_fsync must be one of {brk.FSYNC_POLICIES}, got {self.broker_fsync!r}")
        if self.speed <= 0 or self.partitions < 1 or self.ranker_threads < 1 or self.trainer_threads < 1:
            raise ValueError(f"online.speed, online.partitions, online.ranker_threads and online.trainer_threads must "
                             f"be positive, got {self}")
        if self.feature_tolerance_wall_s <= 0 or self.served_log_wait_ms <= 0:
            raise ValueError(f"online.feature_tolerance_wall_s and online.served_log_wait_ms must be positive, got "
                             f"{self.feature_tolerance_wall_s} and {self.served_log_wait_ms}")
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
        self.joiners = build(cfg.joiner).processes
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
        self.schedule: list[Kill] = fault_schedule(self.s.drill, self.s.chaos, self.s.chaos_seed)  # still to come
        self._killed_at: dict[str, tuple[float, str]] = {}  # component -> (when a fault stopped it, the signal)
        self._restarting: dict[str, tuple[Restart, float]] = {}  # component -> (its restart, when to start it)
        self._recovering: list[Restart] = []  # started again, not yet at work

    # -- components ---------------------------------------------------------------------------
    def start(self) -> "LiveLoop":
        self.run.clear()
        self.run.save_config(self.cfg)
        if self.s.redis_url is None:
            self.broker = brk.BrokerServer(fsync=self.s.broker_fsync).start()
            self.broker_url = self.broker.url
        else:
            self.broker_url = self.s.redis_url
        # Short outages only: the supervisor itself starts the broker again when it dies.
        self.redis = brk.connect(self.broker_url, outage_s=3.0)
        self._clear_streams()
        self.config_yaml = OmegaConf.to_yaml(self.cfg, resolve=True)
        self.start_trainer()
        self._wait(self.run.export.has_meta, "the trainer's first full export", 900, ["trainer"])
        self.start_ranker()
        for index in range(self.joiners):
            self.start_joiner(index)
        self.start_driver()
        return self

    def _clear_streams(self) -> None:
        keys = [brk.events_stream(p) for p in range(self.s.partitions)] + [
            brk.served_stream(p) for p in range(self.s.partitions)] + [brk.ROUNDS] + [
            brk.samples_stream(n, k) for n in self.sample_streams for k in range(self.joiners)] + [
            brk.QUARANTINE, brk.PROGRESS, brk.ANSWERS]
        self.redis.delete(*keys)

    # The components' modules are imported where they are started, not above: a spawned process
    # imports this module first (as __mp_main__), and their imports (torch, TorchRec: ~6 s) would
    # be paid again by every process of the loop at every start and restart.
    def _spawn(self, role: str, target, args: tuple) -> None:
        proc = self.ctx.Process(target=target, args=args, name=f"online-{role}", daemon=False)
        proc.start()
        self.procs[role] = proc

    def _fault(self, event: str) -> None:
        self.record.faults.append(Fault(event, time.time()))

    def start_trainer(self) -> None:
        from online import trainer

        self._spawn("trainer", trainer.main, (self.config_yaml, self.broker_url, self.s.trainer_threads))

    def start_ranker(self) -> None:
        """The ranker with its live feature state: rebuilt from the events streams before it serves,
        fed by them after, logging every answer's features to served.<p> before it answers."""
        broker = urlsplit(self.broker_url)
        self.ranker = RankerServer(
            self.run.export.root, "--format", self.s.ranker_format, "--intra-op-threads", str(self.s.ranker_threads),
            "--features-catalog", str(self.data.require(self.data.feature_catalog, "make streams")),
            "--events-broker", f"{broker.hostname}:{broker.port}", "--event-partitions", str(self.s.partitions),
            "--feature-tolerance-ms", str(int(self.s.feature_tolerance_wall_s * self.s.speed * 1000)),
            "--log-served", "--log-served-wait-ms", str(self.s.served_log_wait_ms), port=self.ranker_port)

    def start_joiner(self, index: int) -> None:
        from online import joiner

        self._spawn(f"joiner.{index}", joiner.main, (self.config_yaml, self.broker_url, index))

    def start_driver(self) -> None:
        from online import driver

        self._spawn("driver", driver.main, (self.config_yaml, self.broker_url, f"127.0.0.1:{self.ranker_port}"))

    # -- supervision ------------------------------------------------------------------------------
    def _exit_status(self, component: str) -> int | None:
        """None while `component` runs (or ended well: a process role with status 0); else its status."""
        if component in self.procs:
            code = self.procs[component].exitcode
            return None if code in (None, 0) else code
        if component == "ranker":
            return None if self.ranker is None else self.ranker.proc.poll()
        if component == "broker":
            return None if self.broker is None or self.broker.alive else self.broker.process.returncode
        raise KeyError(component)

    def kill(self, component: str, sig: str = "SIGKILL") -> None:
        """SIGKILL (a crash) or SIGTERM (an operator's stop); the supervisor notices and starts the
        component again."""
        if component == "broker" and self.broker is None:
            raise RuntimeError("the broker is not this job's own (online.redis_url is set)")
        self._killed_at[component] = (time.time(), sig)
        self._fault(f"{component} {'killed' if sig == 'SIGKILL' else 'stopped'} ({sig})")
        if component in self.procs:
            _signal_group(self.procs[component], getattr(signal, sig))
            self.procs[component].join()
        elif component == "ranker":
            self.ranker.kill() if sig == "SIGKILL" else self.ranker.terminate()
        elif component == "broker":
            self.broker.kill() if sig == "SIGKILL" else self.broker.terminate()

    def _start(self, component: str) -> None:
        if component == "ranker":
            self.record.ranker_logs.append(self.ranker.stderr)
            self.start_ranker()
        elif component == "broker":
            self.broker.start()
        elif component.startswith("joiner."):
            self.start_joiner(int(component.split(".")[1]))
        else:
            {"trainer": self.start_trainer, "driver": self.start_driver}[component]()

    def supervise(self) -> None:
        """Starts again, after its backoff, every component that died; raises once one has died more
        often than the policy allows."""
        now = time.time()
        for component in [*self.procs, "ranker", "broker"]:
            if component in self._restarting or (component == "broker" and self.broker is None):
                continue
            code = self._exit_status(component)
            if code is None:
                continue
            earlier = sum(r.component == component for r in self.record.restarts)
            if not self.s.restart.allows(earlier):
                raise RuntimeError(f"the {component} exited with status {code} after {earlier} restarts "
                                   f"(online.restart.limit); see its output above")
            killed_at, sig = self._killed_at.pop(component, (now, None))
            cause = f"{sig} (fault schedule)" if sig else f"exit status {code}"
            print(f"supervisor: the {component} ended ({cause}); starting it again in "
                  f"{self.s.restart.delay_s(earlier):.1f} s", flush=True)
            restart = Restart(component, cause, killed_at)
            self._restarting[component] = (restart, now + self.s.restart.delay_s(earlier))
        for component, (restart, due) in list(self._restarting.items()):
            if time.time() >= due:
                self._start(component)
                restart.restarted_unix_s = time.time()
                self.record.restarts.append(restart)
                self._recovering.append(restart)
                del self._restarting[component]

    def _recovered(self, row: ProgressSample) -> None:
        """Marks each restarted component recovered once it is at work again: the broker and the
        ranker when they answer (their start waits for it), the trainer at its first progress (a
        push), the joiner at its first emission, the driver once it has started publishing."""
        drivers = [r for r in self.record.restarts if r.component == "driver"]
        for restart in list(self._recovering):
            since = restart.restarted_unix_s
            at = {"broker": since, "ranker": since,
                  "trainer": row.trainer.unix_s if (row.trainer.unix_s or 0) > since else None,
                  **{f"joiner.{k}": j.unix_s if (j.unix_s or 0) > since else None for k, j in enumerate(row.joiners)},
                  # the n-th driver started again is the (n + 1)-th start
                  "driver": row.unix_s if restart in drivers and (row.driver.starts or 0) >= drivers.index(restart) + 2
                  else None}.get(restart.component)
            if at is not None:
                restart.recovered_unix_s = at
                self._recovering.remove(restart)

    # -- watching ---------------------------------------------------------------------------------
    def sample(self) -> ProgressSample | None:
        """The components' progress now (None when the broker cannot be reached)."""
        if self.broker is not None and not self.broker.alive:
            return None
        try:
            # Events the partitions hold: all of them (a ranker started again rebuilds its state from them).
            backlog = float(sum(self.redis.xlen(brk.events_stream(p)) for p in range(self.s.partitions)))
            row = ProgressSample.read(self.redis, backlog, self.joiners)
        except brk.RECONNECT:
            return None
        self.record.series.append(row)
        self._recovered(row)
        return row

    def _check_alive(self, roles: list[str]) -> None:
        """Before the loop runs (no restarts yet): a component that exits is a fault to report."""
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
        """Samples progress each second until `condition(sample)` holds, starting again what dies."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.supervise()
            row = self.sample()
            if row is not None and condition(row):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not reached after {timeout_s:.0f} s")
            time.sleep(1.0)

    def _done(self) -> bool:
        return not self._restarting and all(proc.exitcode == 0 for proc in self.procs.values())

    def finish(self, timeout_s: float = 3600) -> None:
        """Waits for the driver, the joiner and the trainer to end, sampling progress each second,
        starting again what dies, and running the fault drill or the chaos run when asked."""
        deadline = time.monotonic() + timeout_s
        while not self._done():
            self.supervise()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the live loop did not end within {timeout_s:.0f} s")
            row = self.sample()
            share = None if row is None else row.driver.played_share()
            if self.schedule and share is not None and share >= self.schedule[0].share:
                self._inject(share)
                continue  # at once to supervise(): the restart's clock runs from the kill
            for proc in self.procs.values():
                proc.join(timeout=1.0 / len(self.procs))
        self.record.faults_skipped += [f.component for f in self.schedule]  # the run ended before their moment
        while self.sample() is None:  # the last sample, through a broker restart
            self.supervise()
            time.sleep(0.5)

    def _inject(self, share: float) -> None:
        """The schedule's next fault, once its target runs (one being started again is waited for;
        a process that has finished its work cannot be killed, and is recorded as skipped)."""
        fault = self.schedule[0]
        target = fault.component
        if target == "joiner":  # the joiner processes in turn
            killed = sum(f.event.startswith("joiner.") for f in self.record.faults)
            target = f"joiner.{killed % self.joiners}"
        if target in self._restarting:
            return
        self.schedule.pop(0)
        if target in self.procs and not self.procs[target].is_alive():
            self.record.faults_skipped.append(target)
            return
        print(f"fault: {fault.signal} to the {target} at {share:.0%} of the span", flush=True)
        self.kill(target, fault.signal)

    def collect(self) -> None:
        """What the record needs from the components still running (the quarantine, the ranker's
        metrics and log), then the record itself."""
        self.record.quarantine = [{k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
                                  for _, fields in self.redis.xrange(brk.QUARANTINE)]
        rounds = np.array([[int(f[k]) for k in (b"unix_ms", b"first", b"end", b"mark")]
                           for _, f in self.redis.xrange(brk.ROUNDS)], np.int64).reshape(-1, 4)
        self.run.save_rounds(Rounds(*rounds.T))
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
