"""Impressions per second through `make history` + `make streams` on the bench world, with the local
engine and with the Ray engine at each of `bench.pipeline.ray_workers` CPUs, and Ray's start-up time.

Each run writes a fresh copy of the data set's history and streams into a temporary folder (the
canonical tables are linked, not copied), so the bench never touches the data set itself. The
Ray figures exclude start-up, which is timed on its own: it is paid once per job, not per
impression."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow.parquet as pq
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from bench.data import ensure_world
from data_pipelines.engines import RayEngine
from data_pipelines.jobs import run_build_history, run_streams
from data_pipelines.ray_engine.session import ray_session


def _job_config(cfg: DictConfig, root: Path, engine: dict | None) -> DictConfig:
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(job):
        job.data.output_dir = str(root)
        job.paths.reports_dir = str(root / "reports")
        job.progress = False
        job.engine = engine if engine is not None else {"_target_": "data_pipelines.engines.LocalEngine"}
    return job


def _history_and_streams(job: DictConfig) -> tuple[float, float]:
    start = time.perf_counter()
    run_build_history(job)
    history_s = time.perf_counter() - start
    start = time.perf_counter()
    run_streams(job)
    return history_s, time.perf_counter() - start


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.pipeline
    data = ensure_world(cfg)
    n = pq.ParquetFile(data.canonical.live_impressions).metadata.num_rows
    print(f"history + streams ({data.name}: {n:,} live impressions)")
    figures: dict = {"impressions": n}
    ray_engine: RayEngine = instantiate(bc.ray_engine)
    runs = [("local", None)] + [(f"ray_{w}w", replace(ray_engine, workers=int(w))) for w in bc.ray_workers]
    for name, engine in runs:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            root = Path(tmp) / data.name
            root.mkdir()
            (root / "canonical").symlink_to(data.canonical.dir.resolve())
            if engine is None:
                history_s, streams_s = _history_and_streams(_job_config(cfg, root, None))
                startup = ""
            else:
                node = {"_target_": "data_pipelines.engines.RayEngine", **asdict(engine)}
                with ray_session(engine, progress=False) as startup_s:  # both jobs on one Ray
                    history_s, streams_s = _history_and_streams(_job_config(cfg, root, node))
                figures[f"{name}_startup_s"] = startup_s
                startup = f"  (+ {startup_s:.1f} s Ray start-up)"
        total = history_s + streams_s
        figures[f"{name}_impressions_per_s"] = n / total
        figures[f"{name}_seconds"] = {"history": history_s, "streams": streams_s}
        print(f"  {name:<8} history {history_s:6.1f} s  streams {streams_s:6.1f} s  "
              f"{n / total:>10,.0f} impressions/s{startup}")
    return figures
