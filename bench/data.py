"""The data every benchmark runs on, made first when it is missing or from an older code version."""

from __future__ import annotations

from omegaconf import DictConfig

from data_pipelines.dataset import FINAL, REALTIME, DataSet
from data_pipelines.history_store import HistoryStore
from data_pipelines.jobs import data_set, run_build_history, run_ingest, run_simulation, run_streams


def ensure_world(cfg: DictConfig) -> DataSet:
    """The data set, simulated, ingested and with its history store, (re)made if any is missing
    or unreadable."""
    data = data_set(cfg)
    try:
        data.ingested()
        HistoryStore.load(data.require(data.history, "make simulate"))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"[bench] {exc}\n[bench] simulating world '{cfg.world.name}' first")
        run_simulation(cfg)
        run_ingest(cfg)
        run_build_history(cfg)
    return data


def ensure_shards(cfg: DictConfig) -> DataSet:
    """The data set with its streams, (re)written if missing or of another data contract."""
    data = ensure_world(cfg)
    try:
        for stream in (REALTIME, FINAL):
            data.manifest(stream)
    except (FileNotFoundError, ValueError) as exc:
        print(f"[bench] {exc}\n[bench] running make streams first")
        run_streams(cfg)
    return data
