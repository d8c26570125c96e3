"""The data jobs behind `make simulate`, `make ingest` and `make history`, callable from tests.

Each takes the composed Hydra config and returns what it built; the `__main__` wrappers only
print. Layout of a data set directory `data/<name>/`:

    raw/        source tables (the simulator writes the KuaiLive schema here)
    truth/      the simulator's ground truth (highlight segments, true click probabilities)
    canonical/  validated tables, quarantine.parquet and ingest_report.json
    history/    the interaction-log store (store.npz)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from data_pipelines.history_store import HistoryStore, HistoryStoreConfig
from data_pipelines.ingest import IngestReport, ingest
from data_pipelines.ingest.pipeline import CANONICAL, EmbeddingSource, TableSource
from data_pipelines.world.config import WorldConfig
from data_pipelines.world.simulate import SimulationResult, simulate_world

HISTORY_FILE = Path("history") / "store.npz"


def run_simulation(cfg: DictConfig) -> SimulationResult:
    world: WorldConfig = instantiate(cfg.world, _convert_="all")
    return simulate_world(world, Path(cfg.paths.data_dir) / world.name, progress=cfg.get("progress", True))


def run_ingest(cfg: DictConfig) -> IngestReport:
    data = cfg.data
    if OmegaConf.is_missing(data, "source_dir"):
        raise ValueError("data.source_dir is not set: pass it, e.g. make ingest ARGS=\"data.source_dir=/path/to/logs\"")
    tables = {name: None if spec is None else TableSource(**OmegaConf.to_container(spec))
              for name, spec in data.tables.items()}
    embeddings = {name: None if spec is None else EmbeddingSource(**OmegaConf.to_container(spec))
                  for name, spec in (data.get("embeddings") or {}).items()}
    return ingest(data.source_dir, data.output_dir, tables, embeddings,
                  max_bad_share=data.max_bad_share, attribution_grace_ms=data.attribution_grace_ms,
                  progress=cfg.get("progress", True))


def run_build_history(cfg: DictConfig) -> tuple[HistoryStore, Path]:
    canonical = Path(cfg.data.output_dir) / CANONICAL
    impressions_path = canonical / "live_impressions.parquet"
    if not impressions_path.exists():
        raise FileNotFoundError(f"{impressions_path} not found: ingest the data first (make simulate / make ingest)")
    plays_path = canonical / "short_plays.parquet"
    short_plays = pd.read_parquet(plays_path) if plays_path.exists() else None
    history_cfg: HistoryStoreConfig = instantiate(cfg.history)
    store = HistoryStore.build(short_plays, pd.read_parquet(impressions_path), history_cfg)
    path = Path(cfg.data.output_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    store.save(path)
    return store, path
