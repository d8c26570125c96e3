"""Shared fixtures: the real Hydra configs, composed and shrunk for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from data_pipelines.jobs import run_build_history, run_ingest, run_simulation, run_streams

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@dataclass(frozen=True)
class BuiltWorld:
    cfg: DictConfig
    root: Path  # data/<world>/

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def canonical(self) -> Path:
        return self.root / "canonical"


def small_bench_reference(batch_size: int, seq_len: int, item_rows: int, author_rows: int):
    """The training benchmark's reference configuration shrunk for a test: (config, pooled table ->
    features, table -> rows, one synthetic batch as (TorchRec input, plain input))."""
    from recsys.bench.training import reference_tables, synthetic_batches

    bc = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "bench" / "training.yaml"),
                         {"batch_size": batch_size, "seq_len": seq_len, "author_rows": author_rows})
    pooled_tables, rows = reference_tables(bc, item_rows)
    [batch] = synthetic_batches(bc, pooled_tables, rows, 1)
    return bc, pooled_tables, rows, batch


def build_world(data_dir: Path, overrides: list[str]) -> BuiltWorld:
    cfg = compose_config("simulate", [f"paths.data_dir={data_dir}", "progress=false", *overrides])
    run_simulation(cfg)
    run_ingest(cfg)
    run_build_history(cfg)
    return BuiltWorld(cfg=cfg, root=data_dir / cfg.world.name)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> BuiltWorld:
    """The `tiny` world exactly as `make simulate ARGS="world=tiny"` builds it."""
    return build_world(tmp_path_factory.mktemp("data"), ["world=tiny"])


@pytest.fixture(scope="session")
def tiny_streams(tiny_world, tmp_path_factory) -> Path:
    """The tiny world's streams and shards (small shards, so that two ranks each get several);
    returns the data directory."""
    reports = tmp_path_factory.mktemp("reports")
    cfg = compose_config("streams", [f"paths.data_dir={tiny_world.root.parent}", f"paths.reports_dir={reports}",
                                     "world=tiny", "progress=false", "shards.micro_batches_per_shard=10"])
    run_streams(cfg)
    return tiny_world.root.parent


def train_cli(data_dir: Path, log_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`make train` on the tiny world, as a subprocess (Hydra's entry point, real launch)."""
    args = [sys.executable, "-m", "recsys.train.train", "world=tiny", f"paths.data_dir={data_dir}",
            f"paths.log_dir={log_dir}", "logger=csv", "trainer.enable_progress_bar=false",
            "datamodule.batch_size=256", "datamodule.val_batch_size=256", *overrides]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def tiny_training(tiny_streams, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One 4-epoch training run on the tiny world (run name `e2e`, a checkpoint per epoch):
    (the finished process, its log directory)."""
    log_dir = tmp_path_factory.mktemp("logs")
    return train_cli(tiny_streams, log_dir, "trainer.max_epochs=4", "run_name=e2e"), log_dir
