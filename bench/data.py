"""The data every benchmark runs on, made first when it is missing."""

from __future__ import annotations

from omegaconf import DictConfig

from data_pipelines.dataset import FINAL, REALTIME, DataSet
from data_pipelines.jobs import data_set, run_build_history, run_ingest, run_simulation, run_streams


def ensure_world(cfg: DictConfig) -> DataSet:
    """The data set, simulating the world first if its history store is missing."""
    data = data_set(cfg)
    if not data.history.exists():
        print(f"[bench] {data.history} missing: simulating world '{cfg.world.name}' first")
        run_simulation(cfg)
        run_ingest(cfg)
        run_build_history(cfg)
    return data


def ensure_shards(cfg: DictConfig) -> DataSet:
    """The data set with its streams, running the streams job first if they are missing."""
    data = ensure_world(cfg)
    if not all(data.has_stream(s) for s in (REALTIME, FINAL)):
        print(f"[bench] {data.streams} incomplete: running make streams first")
        run_streams(cfg)
    return data
