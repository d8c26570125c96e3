"""`make online`: the live loop on an accelerated clock (docs/online.md).

    traffic driver --events--> broker (Redis Streams, events.<p>) --> label joiner
         |  ^                                                             |
     Rank|  |answers                                           samples.realtime
         v  |                                                             v
      ranker (gRPC) <---- pushes every 30 s, full exports ---- continuous trainer

`LiveLoop` starts every component as a process of its own — the broker (redis-server), the
trainer, the ranker, the joiner, the driver — watches them, samples their progress every second,
and stops them all at the end, whatever happened. The tests use its handles to kill and restart
components mid-stream.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from data_pipelines.dataset import DataSet
from export.server_process import SERVER_BINARY, RankerServer
from online import broker as brk

ROLES = ("trainer", "joiner", "driver")
# online.drill: each fault at this share of the played span (by the driver's clock).
DRILL = ((0.3, "trainer killed and restarted"), (0.5, "ranker restarted"), (0.7, "broker restarted"))


@dataclass(frozen=True)
class LiveSettings:
    name: str  # artifacts/<name>, logs/online/<name>, reports/<name>.{json,md}
    speed: float
    partitions: int
    span_s: float | None  # data seconds played from the first impression; None: the whole data set
    joiner_step_ms: int
    redis_url: str | None  # None: a broker of the job's own
    tick_s: float
    request_threads: int
    retries: int
    ranker_format: str
    ranker_threads: int
    trainer_threads: int
    replay: str  # auto | skip
    progress: bool
    drill: bool  # the fault drill: DRILL's faults in turn, and `malformed` bad events first
    malformed: int

    @classmethod
    def of(cls, oc: DictConfig) -> "LiveSettings":
        s = cls(name=str(oc.name), speed=float(oc.speed), partitions=int(oc.partitions),
                span_s=None if oc.span_s is None else float(oc.span_s), joiner_step_ms=int(oc.joiner_step_s * 1000),
                redis_url=None if oc.redis_url is None else str(oc.redis_url), tick_s=float(oc.tick_s),
                request_threads=int(oc.request_threads), retries=int(oc.retries), ranker_format=str(oc.ranker_format),
                ranker_threads=int(oc.ranker_threads), trainer_threads=int(oc.trainer_threads), replay=str(oc.replay),
                progress=bool(oc.progress), drill=bool(oc.drill), malformed=int(oc.malformed))
        if s.speed <= 0 or s.partitions < 1 or s.joiner_step_ms < 1 or s.tick_s <= 0:
            raise ValueError("online.speed, online.partitions, online.joiner_step_s and online.tick_s must be positive")
        if s.replay not in ("auto", "skip"):
            raise ValueError(f"online.replay must be auto or skip, got {s.replay!r}")
        return s


def _own_group() -> None:
    """A component runs in a process group of its own, so that stopping it stops what it started
    (the trainer's export process) and leaves nothing holding the job's output open."""
    os.setpgrp()


def _trainer_main(config_yaml: str, threads: int) -> None:
    _own_group()
    import torch

    from online.trainer import run_online_training

    torch.set_num_threads(threads)
    run_online_training(OmegaConf.create(config_yaml))


def _joiner_main(config_yaml: str, out_path: str) -> None:
    _own_group()
    from online.joiner import JoinerSettings, LabelJoiner, run_joiner

    cfg = OmegaConf.create(config_yaml)
    o = cfg.online
    engines = {name: instantiate(spec) for name, spec in cfg.stream.engines.items()}
    joiner = LabelJoiner(engines, tuple(cfg.stream.tasks), int(cfg.stream.long_view_ms))
    logs = Path(cfg.paths.log_dir) / "online" / str(o.name)
    settings = JoinerSettings(redis_url=str(o.redis_url), partitions=int(o.partitions),
                              step_ms=int(o.joiner_step_s * 1000),
                              sample_streams_maxlen={n: None if n == cfg.online_train.stream else 1000 for n in engines},
                              ledger_path=str(logs / "joiner_samples.npz"))
    Path(out_path).write_text(json.dumps(run_joiner(joiner, settings), indent=2))


def _driver_main(config_yaml: str, ranker_address: str, out_path: str) -> None:
    _own_group()
    from online.driver import DriverSettings, TrafficDriver
    from online.world import played_world
    from export.requests import RequestSchema

    cfg = OmegaConf.create(config_yaml)
    o = cfg.online
    world = played_world(cfg)
    meta = json.loads((Path(cfg.paths.artifacts_dir) / str(o.name) / "model.json").read_text())
    logs = Path(cfg.paths.log_dir) / "online" / str(o.name)
    settings = DriverSettings(redis_url=str(o.redis_url), ranker_address=ranker_address, partitions=int(o.partitions),
                              speed=float(o.speed), tick_s=float(o.tick_s), retries=int(o.retries),
                              request_threads=int(o.request_threads), answers_path=str(logs / "answers.npz"),
                              progress=bool(o.progress), malformed=int(o.malformed))
    driver = TrafficDriver(world.timeline, world.features, world.rows, settings, RequestSchema(meta), list(meta["tasks"]))
    summary = driver.run()
    Path(out_path).write_text(json.dumps(summary, indent=2))


class LiveLoop:
    """Every component of the loop, started in order and stopped at the end (`close`, always)."""

    def __init__(self, cfg: DictConfig, settings: LiveSettings):
        self.cfg, self.s = cfg, settings
        self.data = DataSet(cfg.data.output_dir)
        for stream in (str(cfg.online_train.stream), "final"):
            if not self.data.has_stream(stream):
                raise FileNotFoundError(f"{self.data.streams}: no '{stream}' shards; run make simulate and make streams "
                                        f"ARGS=\"world={self.data.name}\" first (the trainer reads the table sizes "
                                        f"and the report the evaluation stream from them)")
        if not SERVER_BINARY.exists():
            raise FileNotFoundError(f"{SERVER_BINARY} does not exist: run make ranker first")
        self.artifacts = Path(cfg.paths.artifacts_dir) / settings.name
        self.logs = Path(cfg.paths.log_dir) / "online" / settings.name
        self.ctx = multiprocessing.get_context("spawn")
        self.broker: brk.BrokerServer | None = None
        self.ranker: RankerServer | None = None
        self.ranker_port = brk.free_port()
        self.procs: dict[str, multiprocessing.Process] = {}
        self.series: list[dict] = []  # progress samples, one a second
        self.events: list[dict] = []  # faults and restarts, with their wall time
        self.redis = None
        self.config_yaml = ""
        self.ranker_logs: list[str] = []  # of every ranker started, the current one's last
        self.ranker_metrics: dict[str, float] = {}
        self.quarantined: list = []

    # -- components ---------------------------------------------------------------------------
    def start(self) -> "LiveLoop":
        for stale in (self.artifacts, self.logs):
            shutil.rmtree(stale, ignore_errors=True)
        self.logs.mkdir(parents=True)
        if self.s.redis_url is None:
            self.broker = brk.BrokerServer().start()
            url = self.broker.url
        else:
            url = self.s.redis_url
        self.redis = brk.connect(url)
        self._clear_streams()
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        cfg["online"]["redis_url"] = url
        cfg["online_train"].update({"source": "broker", "redis_url": url, "name": self.s.name,
                                    "progress": False})
        self.config_yaml = OmegaConf.to_yaml(OmegaConf.create(cfg))
        self.start_trainer()
        self._wait(lambda: (self.artifacts / "model.json").exists(), "the trainer's first full export", 900, ["trainer"])
        self.start_ranker()
        self._spawn("joiner", _joiner_main, (self.config_yaml, str(self.logs / "joiner_summary.json")))
        self._spawn("driver", _driver_main, (self.config_yaml, f"127.0.0.1:{self.ranker_port}",
                                             str(self.logs / "driver_summary.json")))
        return self

    def _clear_streams(self) -> None:
        keys = [brk.events_stream(p) for p in range(self.s.partitions)] + [
            brk.samples_stream(n) for n in self.cfg.stream.engines] + [brk.QUARANTINE, brk.PROGRESS]
        self.redis.delete(*keys)

    def _spawn(self, role: str, target, args: tuple) -> None:
        proc = self.ctx.Process(target=target, args=args, name=f"online-{role}", daemon=False)
        proc.start()
        self.procs[role] = proc

    def start_trainer(self) -> None:
        self._spawn("trainer", _trainer_main, (self.config_yaml, self.s.trainer_threads))

    @staticmethod
    def _signal_group(proc: multiprocessing.Process, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):  # gone already, or not yet its own group
            if proc.is_alive():
                os.kill(proc.pid, sig)

    def kill_trainer(self) -> None:
        self._signal_group(self.procs["trainer"], signal.SIGKILL)
        self.procs["trainer"].join()
        self.events.append({"event": "trainer killed", "unix_s": time.time()})

    def start_ranker(self) -> None:
        self.ranker = RankerServer(self.artifacts, "--format", self.s.ranker_format, "--intra-op-threads",
                                   str(self.s.ranker_threads), port=self.ranker_port)

    def restart_ranker(self) -> None:
        self.ranker.terminate()
        self.ranker_logs.append(self.ranker.stderr)
        self.events.append({"event": "ranker stopped", "unix_s": time.time()})
        self.start_ranker()
        self.events.append({"event": "ranker serving again", "unix_s": time.time()})

    def restart_broker(self, down_s: float = 1.0) -> None:
        if self.broker is None:
            raise RuntimeError("the broker is not this job's own (online.redis_url is set)")
        self.events.append({"event": "broker stopped", "unix_s": time.time()})
        self.broker.restart(down_s)
        self.events.append({"event": "broker up again", "unix_s": time.time()})

    # -- watching ---------------------------------------------------------------------------------
    def progress(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.redis.hgetall(brk.PROGRESS).items()}

    def sample(self) -> dict:
        row = {"unix_s": time.time(), **self.progress()}
        # Events published and not consumed yet: the joiner trims what it has read (approximately).
        row["events_in_broker"] = float(sum(self.redis.xlen(brk.events_stream(p)) for p in range(self.s.partitions)))
        self.series.append(row)
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
        """Samples progress each second until `condition(progress)` holds."""
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
            row = self.sample()
            if drill and "driver_last_ms" in row and "driver_clock_ms" in row:
                share = (row["driver_clock_ms"] - row["driver_data0_ms"]) / max(
                    row["driver_last_ms"] - row["driver_data0_ms"], 1)
                if share >= drill[0][0]:
                    self._fault(drill.pop(0)[1])
            for proc in self.procs.values():
                proc.join(timeout=1.0 / len(self.procs))
        self._check_alive(list(self.procs))
        self.sample()

    def _fault(self, fault: str) -> None:
        print(f"drill: {fault}")
        if fault.startswith("trainer"):
            self.kill_trainer()
            self.start_trainer()
            self.events.append({"event": "trainer started again", "unix_s": time.time()})
        elif fault.startswith("ranker"):
            self.restart_ranker()
        else:
            self.restart_broker()

    def collect(self) -> None:
        """What the report needs from the components still running: the quarantine, the ranker's
        metrics and log."""
        self.quarantined = self.redis.xrange(brk.QUARANTINE)
        self.ranker_metrics = self.ranker.metrics()
        self.ranker_logs.append(self.ranker.stderr)

    def close(self) -> None:
        """Stops whatever still runs: processes, ranker, broker."""
        for proc in self.procs.values():
            self._signal_group(proc, signal.SIGTERM)
            proc.join(10)
            self._signal_group(proc, signal.SIGKILL)  # and whatever it started
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


def run_live(cfg: DictConfig) -> dict:
    from online.report import write_report

    settings = LiveSettings.of(cfg.online)
    started = time.time()
    with LiveLoop(cfg, settings) as loop:
        loop.start()
        loop.finish()
        loop.collect()
    report = write_report(cfg, settings, loop, wall_s=time.time() - started)
    s = report["summary"]
    replay = "none" if s["replay_auc_ctr"] is None else f"{s['replay_auc_ctr']:.4f}"
    latency = s["click_to_served_s"]
    print(f"served CTR AUC {s['served_auc_ctr']:.4f} (replay {replay}); click to served p50 {latency['p50'] or 0:.1f} s, "
          f"p99 {latency['p99'] or 0:.1f} s of data time; {s['requests_answered']:,}/{s['requests_sent']:,} requests "
          f"answered; {s['samples_learned']:,}/{s['samples_emitted']:,} samples learned; {s['pushes_applied']:,} "
          f"pushes applied")
    print(f"wrote {Path(cfg.paths.reports_dir) / settings.name}.{{json,md,png}}")
    return report


@hydra.main(config_path="../conf", config_name="online", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    run_live(cfg)


if __name__ == "__main__":
    main()
