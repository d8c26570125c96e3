"""Training end to end on the tiny world: `make train` learns, and a two-process (gloo) run's
sharded checkpoint resumes to exactly the parameters and optimizer state of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from data_pipelines.dataset import REALTIME
from recsys.model.factory import model_from_config
from recsys.train.checkpoint import model_state_dict, read_unsharded
from tests.conftest import compose_config, job_paths, train_cli

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
    result = train_cli(tiny_streams, tmp_path, "trainer.precision=bf16-mixed", "run_name=bf16")
    ctr = next(line.split() for line in result.stdout.splitlines() if line.startswith("ctr "))
    assert float(ctr[1]) > 0.55, ctr  # AUC; a constant predictor scores 0.5 (0.592 when written)
    header, *rows = next((tmp_path / "bf16").glob("version_*/metrics.csv")).read_text().splitlines()
    assert "train/contrastive/short" in header.split(",") and rows


@pytest.mark.slow
def test_two_process_sharded_checkpoint_resumes_exactly(tiny_streams, tmp_path):
    common = ["trainer.devices=2", "trainer.max_epochs=2", "seed=3"]
    train_cli(tiny_streams, tmp_path, *common, "run_name=straight")
    straight = tmp_path / "checkpoints" / "straight"
    first, second = sorted(straight.glob("epoch*"))
    assert sorted(p.name for p in first.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp",
                                                        "trainer_state.pt"]  # both ranks wrote shards
    snapshot = tmp_path / "snapshot"
    train_cli(tiny_streams, tmp_path, *common, "run_name=resumed", f"ckpt_path={first}",
              "+callbacks.snap._target_=recsys.train.callbacks.SnapshotAtEpochStart", "+callbacks.snap.epoch=1",
              f"+callbacks.snap.dirpath={snapshot}")
    resumed = next((tmp_path / "checkpoints" / "resumed").glob("epoch01-*"))

    # The resumed run starts from exactly the saved parameters and optimizer state ...
    saved, restarted = read_unsharded(first), read_unsharded(snapshot / "start-epoch01")
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

    # The gathered, unsharded state loads strictly into a plain single-process model (the export path).
    model = model_from_config(compose_config("train", job_paths(tiny_streams)), tiny_streams.manifest(REALTIME),
                              embedding_device="cpu")
    model.load_state_dict(model_state_dict(second), strict=True)
