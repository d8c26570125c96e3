"""Training end to end on the tiny world: `make train` learns, and a two-process (gloo) run's
sharded checkpoint resumes to exactly the parameters and optimizer state of an uninterrupted run."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from data_pipelines.dataset import REALTIME
from recsys.model.factory import model_from_config
from recsys.train.checkpoint import TRAINER_STATE, model_state_dict, read_unsharded
from tests.conftest import ROOT, TRAIN_ENV, compose_config, job_paths, train_args, train_cli
from tests.corpus import damage

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.slow
def test_make_train_on_the_tiny_world_with_two_processes_beats_a_constant_predictor(tiny_training):
    result, log_dir = tiny_training
    metrics = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in ("ctr", "lvtr", "ltr", "cmtr", "gtr"):
            metrics[parts[0]] = [float(x) for x in parts[1:]]
    assert set(metrics) == {"ctr", "lvtr", "ltr", "cmtr", "gtr"}
    auc, gauc, logloss = metrics["ctr"]
    assert auc > 0.55, metrics  # a constant predictor scores 0.5 (0.601-0.605 over seeds 0-2 when written)
    csv = (log_dir / "e2e").glob("version_*/metrics.csv")
    header = next(csv).read_text().splitlines()[0]
    for name in ("train/loss", "train/loss/gtr", "train/contrastive/short", "val/auc/ctr", "val/gauc/ctr",
                 "val/logloss/ctr"):
        assert name in header


@pytest.mark.slow
def test_make_train_in_bf16_mixed_precision_learns(tiny_streams, tmp_path):
    result = train_cli(tiny_streams, tmp_path, "trainer.precision=bf16-mixed", "trainer.max_epochs=2", "run_name=bf16")
    ctr = next(line.split() for line in result.stdout.splitlines() if line.startswith("ctr "))
    assert float(ctr[1]) > 0.55, ctr  # AUC; a constant predictor scores 0.5 (0.592 when written)
    header, *rows = next((tmp_path / "bf16").glob("version_*/metrics.csv")).read_text().splitlines()
    assert "train/contrastive/short" in header.split(",") and rows


def _validation_rows(log_dir: Path, run_name: str) -> dict[int, dict[str, str]]:
    """epoch -> every validation metric as the CSV logger wrote it (its text: exact comparison)."""
    with open(next((log_dir / run_name).glob("version_*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    return {int(r["epoch"]): {k: v for k, v in r.items() if k.startswith(("val/", "val_light/")) and v}
            for r in rows if r.get("val/auc/ctr")}


def _train_until_first_checkpoint_then_kill(data, log_dir: Path, *overrides: str) -> Path:
    """A two-process run killed (SIGKILL, both processes) as soon as its first checkpoint is whole."""
    proc = subprocess.Popen(train_args(data, log_dir, *overrides, "run_name=killed"), cwd=ROOT, env=TRAIN_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = list((log_dir / "checkpoints" / "killed").glob(f"epoch00-*/{TRAINER_STATE}"))
            if done:
                return done[0].parent
            time.sleep(0.05)
        raise AssertionError(f"no first checkpoint (exit code {proc.poll()})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_two_process_run_killed_after_its_first_checkpoint_resumes_to_the_same_figures(tiny_streams, tmp_path):
    common = ["trainer.devices=2", "trainer.max_epochs=2", "seed=3"]
    train_cli(tiny_streams, tmp_path, *common, "run_name=straight")
    straight = tmp_path / "checkpoints" / "straight"
    first, second = sorted(straight.glob("epoch*"))
    assert sorted(p.name for p in first.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp",
                                                        TRAINER_STATE]  # both ranks wrote shards
    killed = _train_until_first_checkpoint_then_kill(tiny_streams, tmp_path, *common)
    snapshot = tmp_path / "snapshot"
    train_cli(tiny_streams, tmp_path, *common, "run_name=resumed", f"ckpt_path={killed}",
              "+callbacks.snap._target_=recsys.train.callbacks.SnapshotAtEpochStart", "+callbacks.snap.epoch=1",
              f"+callbacks.snap.dirpath={snapshot}")
    resumed = next((tmp_path / "checkpoints" / "resumed").glob("epoch01-*"))

    # The killed run's checkpoint is the uninterrupted run's, and the resumed run starts from exactly it ...
    saved, restarted = read_unsharded(first), read_unsharded(snapshot / "start-epoch01")
    torch.testing.assert_close(read_unsharded(killed), saved, rtol=0, atol=0)
    torch.testing.assert_close(restarted, saved, rtol=0, atol=0)

    # ... and ends where the uninterrupted run ended (dense gradients are synchronised across ranks:
    # were they not, the ranks' dense layers would drift apart and the rank-0 copy saved would differ).
    a, b = read_unsharded(second), read_unsharded(resumed)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    fused = [k for k in a["optimizers"][0]["state"] if "momentum1" in str(a["optimizers"][0]["state"][k])
             or "ebc" in k]
    assert fused  # the embedding tables' fused Adagrad state is in the checkpoint ...
    torch.testing.assert_close(b["optimizers"], a["optimizers"], rtol=0, atol=0)  # ... and restored exactly
    before = read_unsharded(first)["model"]
    item_table = "model.lookup.sequence_ebc.embedding_bags.item.weight"
    assert not torch.equal(before[item_table], a["model"][item_table])  # it did train

    # Validation figures to the last digit: the ranks' BatchNorm statistics agree, so the checkpoint
    # holds a state both ranks had (each replicated tensor is saved from one rank).
    straight_rows, resumed_rows = _validation_rows(tmp_path, "straight"), _validation_rows(tmp_path, "resumed")
    assert set(resumed_rows) == {1} and len(resumed_rows[1]) >= 15
    assert resumed_rows[1] == straight_rows[1]

    # The gathered, unsharded state loads strictly into a plain single-process model (the export path).
    model = model_from_config(compose_config("train", job_paths(tiny_streams)), tiny_streams.manifest(REALTIME),
                              embedding_device="cpu")
    model.load_state_dict(model_state_dict(second), strict=True)


@pytest.mark.slow
def test_an_incomplete_checkpoint_is_refused_before_training_starts(tiny_streams, tiny_training, tmp_path):
    _, log_dir = tiny_training
    first = sorted((log_dir / "checkpoints" / "e2e").glob("epoch*"))[0]
    broken = tmp_path / "broken"
    shutil.copytree(first, broken)
    damage.drop(broken / TRAINER_STATE)
    result = train_cli(tiny_streams, tmp_path, f"ckpt_path={broken}", succeed=False)
    last_error = [line for line in result.stderr.splitlines() if "Error" in line][-1]
    assert f"IncompleteCheckpointError: {broken} is incomplete: {TRAINER_STATE} is missing" in last_error


def test_a_data_set_that_cannot_be_split_fails_with_that_as_its_last_error(tiny_streams, tmp_path):
    result = train_cli(tiny_streams, tmp_path, "datamodule.val_fraction=0.99", succeed=False)
    last_error = [line for line in result.stderr.splitlines() if "Error" in line][-1]
    assert last_error.startswith("ValueError: ") and "shards cannot give 1 rank(s) a validation shard each" in last_error
