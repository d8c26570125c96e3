"""Shared fixtures: the real Hydra configs, composed and shrunk for tests.

`make test` runs the suite on two pytest-xdist workers, a test file each at a time. The expensive
session fixtures (the tiny world, its streams, its training run, the ranker's build) are then made
once for the whole run: the first worker to need one makes it under a file lock in the run's shared
directory, and the other finds it there. Each worker, and whatever it starts, computes with one
thread: two processes with two torch threads each on two cores run many times slower, not twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_pipelines.dataset import DataSet
from serving.binaries import RANKER_TOOL
from data_pipelines.jobs import data_set, run_build_history, run_ingest, run_simulation, run_streams

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")
WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under xdist; None in a plain run

if WORKER is not None:
    os.environ["OMP_NUM_THREADS"] = "1"  # this worker's subprocesses (jobs, servers, make bench) too
    import torch

    torch.set_num_threads(1)

# The longest test files first (seconds on this project's 2-core machine, 2026-12-06): the workers
# take files in collection order, so a long file collected last would run alone at the end. Longest
# first keeps the two workers busy to the end (the LPT rule); the rest keep their alphabetical order.
LONGEST_FIRST = ("test_push.py", "test_make_targets.py", "test_online_chaos.py", "test_training.py",
                 "test_ranker_service.py", "test_peers.py", "test_ray_engine.py", "test_export.py",
                 "test_replay.py", "test_online.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], dict]) -> dict:
    """A session fixture's value made once per run, whichever worker asks first: `make(directory)`
    builds it in `directory` and returns what the others need to use it (JSON: paths, text)."""
    root = factory.getbasetemp() if WORKER is None else factory.getbasetemp().parent
    done = root / f"{name}.json"
    with _locked(root / f"{name}.lock"):
        if not done.exists():
            done.write_text(json.dumps(make(root / name)))
    return json.loads(done.read_text())


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def small_bench_reference(batch_size: int, seq_len: int, item_rows: int, author_rows: int):
    """The training benchmark's reference configuration shrunk for a test: (config, its manifest,
    one synthetic batch as (TorchRec input, plain input))."""
    from bench.training import reference_manifest, synthetic_batches

    bc = compose_config("bench", [f"bench.training.batch_size={batch_size}", f"bench.training.model.seq_len={seq_len}",
                                  f"bench.training.author_rows={author_rows}"]).bench.training
    manifest = reference_manifest(bc, item_rows)
    [batch] = synthetic_batches(bc, manifest, 1)
    return bc, manifest, batch


def build_world(data_dir: Path, overrides: list[str]) -> DataSet:
    """`make simulate` into `data_dir`: the world, ingested, with its history store."""
    cfg = compose_config("simulate", [f"paths.data_dir={data_dir}", "progress=false", *overrides])
    run_simulation(cfg)
    run_ingest(cfg)
    run_build_history(cfg)
    return data_set(cfg)


def job_paths(data: DataSet) -> list[str]:
    """The overrides that point a job at a data set built by these fixtures."""
    return [f"paths.data_dir={data.root.parent}", f"world={data.name}"]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> DataSet:
    """The `tiny` world exactly as `make simulate ARGS="world=tiny"` builds it."""
    made = shared(tmp_path_factory, "tiny_world",
                  lambda out: {"root": str(build_world(out / "data", ["world=tiny"]).root)})
    return DataSet(made["root"])


@pytest.fixture(scope="session")
def tiny_streams(tiny_world, tmp_path_factory) -> DataSet:
    """The tiny world with its streams and shards, as `make streams ARGS="world=tiny"` writes them."""
    def make(out: Path) -> dict:
        run_streams(compose_config("streams", [*job_paths(tiny_world), f"paths.reports_dir={out / 'reports'}",
                                               "progress=false"]))
        return {"root": str(tiny_world.root)}

    return DataSet(shared(tmp_path_factory, "tiny_streams", make)["root"])


def train_args(data: DataSet, log_dir: Path, *overrides: str) -> list[str]:
    """The command line of `make train` on a data set."""
    return [sys.executable, "-m", "recsys.train.train", *job_paths(data), f"paths.log_dir={log_dir}", "logger=csv",
            "trainer.enable_progress_bar=false", *overrides]


TRAIN_ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def train_cli(data: DataSet, log_dir: Path, *overrides: str, succeed: bool = True) -> subprocess.CompletedProcess:
    """`make train` on a data set, as a subprocess (Hydra's entry point, real launch)."""
    result = subprocess.run(train_args(data, log_dir, *overrides), cwd=ROOT, env=TRAIN_ENV, capture_output=True,
                            text=True, timeout=600)
    assert (result.returncode == 0) == succeed, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def tiny_training(tiny_streams, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The README's tiny pipeline's training run: two processes, the tiny world's own settings (run
    name `e2e`, a checkpoint per epoch): (the finished process, its log directory)."""
    def make(out: Path) -> dict:
        result = train_cli(tiny_streams, out / "logs", "trainer.devices=2", "run_name=e2e")
        return {"log_dir": str(out / "logs"), "args": result.args, "stdout": result.stdout, "stderr": result.stderr}

    made = shared(tmp_path_factory, "tiny_training", make)
    return subprocess.CompletedProcess(made["args"], 0, made["stdout"], made["stderr"]), Path(made["log_dir"])


@pytest.fixture(scope="session")
def untrained(tiny_streams):
    """A freshly initialised model of the training config, its model.json and a batch of the
    evaluation stream as scorer inputs: what needs no training run."""
    import torch
    from omegaconf import OmegaConf

    from data_pipelines.dataset import FINAL, REALTIME
    from export.scorer import inputs_from_batch
    from export.artifact import metadata
    from recsys.data import ShardDataset, make_loader
    from recsys.model.factory import model_from_config

    torch.manual_seed(0)
    model = model_from_config(compose_config("train", job_paths(tiny_streams)), tiny_streams.manifest(REALTIME),
                              embedding_device="cpu").eval()
    layout = OmegaConf.to_container(compose_config("export", job_paths(tiny_streams)).request_layout)
    meta = metadata(model, layout, max_candidates=1000, training={"run_id": "untrained"})
    inputs = inputs_from_batch(next(iter(make_loader(ShardDataset(tiny_streams.stream(FINAL), 32)))), model)
    return model, meta, inputs


@pytest.fixture(scope="session")
def ranker_binary(tmp_path_factory) -> Path:
    """`make ranker` (incremental: quick when the build is current): the JSON tool's path; the gRPC
    server is built beside it. Built once per run: two builds in one build directory would collide."""
    def make(_: Path) -> dict:
        result = subprocess.run(["make", "--no-print-directory", "ranker"], cwd=ROOT, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return {"tool": str(RANKER_TOOL)}

    return Path(shared(tmp_path_factory, "ranker_binary", make)["tool"])


def export_cfg(data: DataSet, log_dir: Path, artifacts: Path, checkpoint: Path | None, *overrides: str):
    return compose_config("export", [*job_paths(data), f"paths.log_dir={log_dir}", f"paths.artifacts_dir={artifacts}",
                                     f"checkpoint={checkpoint}" if checkpoint else "checkpoint=null", *overrides])


def checkpoints(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "checkpoints" / "e2e").glob("epoch*"))
