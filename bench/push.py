"""Pushes into a serving ranker (docs/serving.md, "Pushes"), on the busy world:

1. the continuous trainer (online/trainer.py) learns `data_seconds` of the realtime stream as fast as
   it can, pushing every 30 s of data time: push sizes (rows, bytes) and build times;
2. for each format, a ranker serves the trainer's first export to one client sending 200-candidate
   requests, first with no push arriving, then while the trainer's pushes land one per second (30x
   the real rate): the client's p50/p99 both ways and each push's apply time (the ranker's log:
   opening the file until the new version serves). The pushes were written beforehand, so the
   trainer's own CPU does not weigh on the ranker (in a deployment it runs elsewhere);
3. live: the trainer at `live_pace` (wall seconds per data second) beside a ranker following its
   pushes, with a full export written mid-run while pushes go on: from a push's newest learned batch
   to that push serving, per push.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from hydra import compose
from omegaconf import DictConfig

from bench.data import ensure_shards
from bench.load import pin_to, percentile
from bench.service import load
from bench.serving import ensure_ranker
from data_pipelines.configured import build
from data_pipelines.dataset import FINAL
from export.export_dir import ExportDir, push_file
from export.push import write_push
from export.requests import RequestSchema, requests_from_inputs
from export.scorer import inputs_from_batch
from online.trainer import OnlineTrainer
from recsys.data import ShardDataset, make_loader
from serving.client import request_to_proto
from serving.server_process import RankerServer

_SERVING = re.compile(r"push (\d+) serving at (\d+) ms \((\d+) rows, (\d+) bytes, applied in ([0-9.e+-]+) ms; its newest "
                      r"batch learned at (\d+) ms\)")


def applied_pushes(stderr: str) -> list[dict]:
    """The ranker's log lines of applied pushes."""
    return [{"sequence": int(m[1]), "serving_unix_ms": int(m[2]), "rows": int(m[3]), "bytes": int(m[4]),
             "apply_ms": float(m[5]), "learned_unix_ms": int(m[6])} for m in _SERVING.finditer(stderr)]


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = np.sort(np.asarray(values, dtype=float))
    return {"p50": percentile(ordered, 0.5), "p99": percentile(ordered, 0.99), "max": float(ordered[-1])} \
        if len(ordered) else {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}


def _trainer_overrides(cfg: DictConfig, bc: DictConfig, root: Path, name: str, *overrides: str) -> list[str]:
    """`make online-train`'s overrides for a trainer writing under `root`, as artifacts/<name>."""
    return [f"world={bc.world}", f"paths.data_dir={cfg.paths.data_dir}", f"paths.log_dir={root / 'logs'}",
            f"paths.artifacts_dir={root / 'artifacts'}", f"paths.reports_dir={root / 'reports'}",
            f"online_train.name={name}", "online_train.progress=false", *overrides]


def _train(cfg: DictConfig, bc: DictConfig, root: Path) -> tuple[OnlineTrainer, dict]:
    tcfg = compose(config_name="online_train", overrides=_trainer_overrides(
        cfg, bc, root, "pushes", f"online_train.stop_after_s={int(bc.data_seconds)}",
        f"push.formats={'both' if len(bc.formats) > 1 else bc.formats[0]}"))
    trainer = OnlineTrainer(tcfg, build(tcfg.online_train), build(tcfg.push))
    return trainer, asdict(trainer.run())


def _serve_with_pushes(model_dir: Path, source: Path, fmt: str, requests: list, bc: DictConfig, flags: list[str]
                       ) -> dict:
    """One client's latency without pushes, then while pushes land at each rate of `bc.rates`."""
    meta = ExportDir(model_dir).meta()
    target = ExportDir(model_dir).pushes(meta["export_id"])
    shutil.rmtree(target, ignore_errors=True)
    available = sorted(int(p.stem) for p in source.glob("*.push"))
    out: dict = {"rates": []}
    with RankerServer(model_dir, "--format", fmt, *flags, cores=list(bc.server_cores) or None) as server:
        load(server, requests[:4], 1, 5.0, 10)  # warm the channel
        out["without_pushes"] = quiet = load(server, requests, 1, float(bc.seconds), 10 ** 9)
        landed = 0
        for rate in bc.rates:
            sequences = available[landed:landed + int(rate.pushes)]
            if len(sequences) < int(rate.pushes):
                raise SystemExit("bench.push.data_seconds gives too few pushes for bench.push.rates")
            landed += len(sequences)

            def land_pushes() -> None:
                for k in sequences:
                    time.sleep(float(rate.every_s))
                    write_push(target, push_file(source, k).read_bytes(), k)

            logged = len(applied_pushes(server.stderr))
            busy = load(server, requests, 1, 0.0, 10 ** 9, during=land_pushes)
            deadline = time.monotonic() + 30
            while server.metrics()["ranker_model_push"] < landed and time.monotonic() < deadline:
                time.sleep(0.05)
            applied = applied_pushes(server.stderr)[logged:]
            out["rates"].append({"every_s": float(rate.every_s), "with_pushes": busy, "pushes_applied": len(applied),
                                 "apply_ms": _quantiles([a["apply_ms"] for a in applied]),
                                 "p99_rise": busy["p99_ms"] / quiet["p99_ms"] - 1})
    return out


def _live(cfg: DictConfig, bc: DictConfig, root: Path) -> dict:
    """The trainer at `live_pace` in a process of its own, a ranker following its pushes."""
    fmt = str(bc.live_format)
    overrides = [f"online_train.pace={float(bc.live_pace)}", f"online_train.stop_after_s={int(bc.live_data_seconds)}",
                 f"push.formats={fmt}", f"push.full_every_s={int(bc.live_full_every_s)}"]
    model_dir = root / "artifacts" / "live"
    args = [sys.executable, "-m", "online", *_trainer_overrides(cfg, bc, root, "live", *overrides)]
    cores = list(bc.trainer_cores) if bc.trainer_cores else None
    trainer = subprocess.Popen(["taskset", "-c", ",".join(map(str, cores))] + args if cores else args,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(trainer.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 600
        while not ExportDir(model_dir).has_meta():
            if trainer.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the live trainer wrote no export:\n" + "".join(output)[-3000:])
            time.sleep(0.1)
        with RankerServer(model_dir, "--format", fmt, "--push-check-ms", str(int(bc.push_check_ms)),
                          cores=list(bc.server_cores) or None) as server:
            trainer.wait(timeout=1200)
            time.sleep(1.0)
            applied = applied_pushes(server.stderr)
            reloads = server.metrics()['ranker_reloads_total{result="success"}']
    finally:
        if trainer.poll() is None:
            trainer.kill()
    if trainer.returncode != 0:
        raise SystemExit("the live trainer failed:\n" + "".join(output)[-3000:])
    interval_wall_s = 30 * float(bc.live_pace)
    # Pushes whose newest batch is new: one that learned nothing since the previous push carries the
    # same batch, whose latency the previous push already measured.
    latencies = [a["serving_unix_ms"] - a["learned_unix_ms"] for k, a in enumerate(applied)
                 if a["learned_unix_ms"] > 0 and (k == 0 or a["learned_unix_ms"] != applied[k - 1]["learned_unix_ms"])]
    return {"pace": float(bc.live_pace), "push_interval_wall_s": interval_wall_s, "pushes_applied": len(applied),
            "full_exports_loaded": int(reloads),
            "pushes_with_a_new_batch": len(latencies),
            "learned_to_serving_ms": _quantiles(latencies),
            "within_interval_plus_1s": float(np.mean([lat <= interval_wall_s * 1000 + 1000 for lat in latencies]))
            if latencies else float("nan")}


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.push
    ensure_ranker()
    ensure_shards(compose(config_name="bench", overrides=[f"world={bc.world}", f"paths.data_dir={cfg.paths.data_dir}"]))
    figures: dict = {}
    flags = ["--push-check-ms", str(int(bc.push_check_ms)), "--reload-check-ms", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"[bench] push: the continuous trainer on the {bc.world} world, {bc.data_seconds} s of data time, "
              f"a push every 30 s (AOTInductor compiles for ~1 min)", flush=True)
        start = time.perf_counter()
        trainer, summary = _train(cfg, bc, root)
        figures["trainer"] = {k: summary[k] for k in ("samples_learned", "batches_learned", "pushes", "push_rows",
                                                     "push_bytes", "push_build_seconds")}
        figures["trainer"]["seconds"] = time.perf_counter() - start
        print(f"  trainer: {summary['samples_learned']:,} samples, {summary['pushes']} pushes in "
              f"{figures['trainer']['seconds']:.0f} s; rows per push p50 {summary['push_rows']['p50']:,.0f} (max "
              f"{summary['push_rows']['max']:,}), bytes p50 {summary['push_bytes']['p50'] / 1e6:.2f} MB (max "
              f"{summary['push_bytes']['max'] / 1e6:.2f}), build p50/p99 "
              f"{summary['push_build_seconds']['p50'] * 1e3:.0f}/{summary['push_build_seconds']['p99'] * 1e3:.0f} ms")
        # The served copy: the trainer's base export as it was first written, its pushes kept aside.
        base = root / "artifacts" / "pushes"
        meta = ExportDir(base).meta()
        if len(trainer.exports) != 1:
            raise SystemExit("bench.push.data_seconds spans more than one full export; shorten it")
        source = root / "pushes-written"
        shutil.move(str(ExportDir(base).pushes(meta["export_id"])), source)
        batch = next(iter(make_loader(ShardDataset(trainer.data.stream(FINAL), int(bc.candidates) * 8))))
        inputs = inputs_from_batch(batch, trainer.pusher.copy)
        requests = [request_to_proto(r) for r in requests_from_inputs(inputs, RequestSchema(meta), int(bc.candidates),
                                                                      prefix="push")]
        print(f"  {'format':<12} {'push every':>10} {'p50 ms':>7} {'p99 ms':>7} {'p99 rise':>8} {'apply p50':>9} "
              f"{'apply p99':>9}   (1 client, {bc.candidates} candidates; the first row without pushes)")
        cores_before = os.sched_getaffinity(0)
        pin_to(list(bc.client_cores) if bc.client_cores else None)
        try:
            for fmt in bc.formats:
                row = _serve_with_pushes(base, source, str(fmt), requests, bc, flags)
                figures[str(fmt)] = row
                q = row["without_pushes"]
                print(f"  {fmt:<12} {'never':>10} {q['p50_ms']:7.2f} {q['p99_ms']:7.2f}", flush=True)
                for r in row["rates"]:
                    b = r["with_pushes"]
                    print(f"  {fmt:<12} {r['every_s']:>8g} s {b['p50_ms']:7.2f} {b['p99_ms']:7.2f} {r['p99_rise']:+8.1%} "
                          f"{r['apply_ms']['p50']:7.2f}ms {r['apply_ms']['p99']:7.2f}ms   ({r['pushes_applied']} pushes, "
                          f"{b['errors']} errors, {b['requests']:,} requests)", flush=True)
        finally:
            os.sched_setaffinity(0, cores_before)
        live = _live(cfg, bc, root)
        figures["live"] = live
        lat = live["learned_to_serving_ms"]
        print(f"  live ({bc.live_format}, a push every {live['push_interval_wall_s']:.1f} s of wall time, "
              f"{live['full_exports_loaded']} full export(s) loaded mid-run): {live['pushes_applied']} pushes; newest learned batch -> serving p50 {lat['p50']:.0f} ms, p99 "
              f"{lat['p99']:.0f} ms; within the push interval + 1 s: {live['within_interval_plus_1s']:.0%}")
    errors = {f: figures[f]["without_pushes"]["errors"] + sum(r["with_pushes"]["errors"] for r in figures[f]["rates"])
              for f in bc.formats}
    if any(errors.values()):
        raise SystemExit(f"the ranker answered with errors while pushes landed: {errors}")
    return figures
