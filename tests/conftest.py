"""Shared fixtures: the real Hydra configs, composed and shrunk for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_pipelines.jobs import run_build_history, run_ingest, run_simulation

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


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
