"""The data every benchmark runs on, made first when it is missing."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from data_pipelines.jobs import HISTORY_FILE, run_build_history, run_ingest, run_simulation, run_streams


def ensure_world(cfg: DictConfig) -> Path:
    """The data set's directory, simulating the world first if its history store is missing."""
    data_dir = Path(cfg.data.output_dir)
    if not (data_dir / HISTORY_FILE).exists():
        print(f"[bench] {data_dir / HISTORY_FILE} missing: simulating world '{cfg.world.name}' first")
        run_simulation(cfg)
        run_ingest(cfg)
        run_build_history(cfg)
    return data_dir


def ensure_shards(cfg: DictConfig) -> Path:
    """The shard root (one directory per stream), running the streams job first if it is missing."""
    ensure_world(cfg)
    shard_root = Path(cfg.shards.dir)
    if not (shard_root / "realtime" / "manifest.json").exists():
        print(f"[bench] {shard_root / 'realtime'} missing: running make streams first")
        run_streams(cfg)
    return shard_root
