"""The experiment grid: each experiment file changes exactly what it names, runs are tagged by what
they compare, and the comparison report is built correctly from given CSV metric files."""

from __future__ import annotations

import json

import pytest

from recsys.ablate.grid import metrics_file
from recsys.ablate.report import compare, final_metrics, markdown, write
from recsys.train.train import run_tags
from tests.conftest import compose_config

GSUS = ["short", "long", "aidhard", "livelong", "mixed"]


def test_experiment_files_change_only_what_they_name():
    ref = compose_config("train", ["+experiment=reference"])
    assert run_tags(ref) == ["model:ple", "stream:realtime", "gsus:short+long+aidhard+livelong+mixed",
                             "contrastive:on", "precision:32-true"]
    assert ref.experiment_name == "reference"
    expected = {"fast_slow": (2, "fast_slow", GSUS, True), "cgc": (1, "realtime", GSUS, True),
                "no_contrastive": (2, "realtime", GSUS, False),
                **{f"no_{g}": (2, "realtime", [x for x in GSUS if x != g], True) for g in GSUS}}
    for name, (levels, stream, gsus, contrastive) in expected.items():
        cfg = compose_config("train", [f"+experiment={name}"])
        assert cfg.experiment_name == name
        assert (cfg.model.multitask.n_levels, cfg.datamodule.train_stream, list(cfg.cross.gsu_names),
                cfg.cross.contrastive.enabled) == (levels, stream, gsus, contrastive), name
        assert cfg.task == ref.task and cfg.datamodule.batch_size == ref.datamodule.batch_size
    assert "contrastive:off" in run_tags(compose_config("train", ["+experiment=no_mixed"]))  # mixed anchors it
    assert "model:cgc" in run_tags(compose_config("train", ["+experiment=cgc"]))
    assert "precision:bf16-mixed" in run_tags(compose_config("train", ["trainer.precision=bf16-mixed"]))
    ablate = compose_config("ablate", [])
    assert set(ablate.ablate.experiments) == {"reference", *expected} and len(ablate.ablate.seeds) >= 3


def _write_csv(path, auc_ctr: float, gauc_ctr: float, light: float) -> None:
    """A Lightning CSVLogger file: training rows without validation values, then one validation row
    per epoch (the last one counts)."""
    path.parent.mkdir(parents=True)
    path.write_text("epoch,step,train/loss,val/auc/ctr,val/gauc/ctr,val_light/auc/ctr\n"
                    "0,19,0.9,,,\n"
                    "0,49,,0.5,0.5,0.5\n"
                    "1,69,0.8,,,\n"
                    f"1,99,,{auc_ctr},{gauc_ctr},{light}\n")


def test_the_comparison_is_built_from_the_metric_files(tmp_path):
    figures = {"reference": [(0.70, 0.66, 0.60), (0.72, 0.68, 0.62), (0.74, 0.70, 0.64)],
               "no_long": [(0.69, 0.66, 0.55), (0.70, 0.67, 0.56), (0.71, 0.68, 0.57)]}
    runs = {}
    for experiment, by_seed in figures.items():
        for seed, (auc, gauc, light) in enumerate(by_seed):
            path = tmp_path / f"{experiment}-seed{seed}" / "version_0" / "metrics.csv"
            _write_csv(path, auc, gauc, light)
            assert metrics_file(tmp_path, f"{experiment}-seed{seed}") == path
            runs.setdefault(experiment, {})[seed] = final_metrics(path)
    assert runs["reference"][1] == {"val/auc/ctr": 0.72, "val/gauc/ctr": 0.68, "val_light/auc/ctr": 0.62}

    doc = compare(runs, "reference")
    ref, ablated = doc["experiments"]["reference"], doc["experiments"]["no_long"]
    assert ref["mean"]["val/auc/ctr"] == pytest.approx(0.72) and ref["std"]["val/auc/ctr"] == pytest.approx(0.02)
    assert ablated["mean"]["val/auc/ctr"] == pytest.approx(0.70) and ablated["std"]["val/auc/ctr"] == pytest.approx(0.01)
    assert ablated["diff"]["val/auc/ctr"] == pytest.approx(-0.02)
    assert not ablated["beyond_spread"]["val/auc/ctr"]  # 0.02 < 0.02 + 0.01
    assert ablated["diff"]["val_light/auc/ctr"] == pytest.approx(-0.06)
    assert ablated["beyond_spread"]["val_light/auc/ctr"]  # 0.06 > 0.02 + 0.01
    assert ref["diff"]["val/auc/ctr"] == 0.0

    text = markdown(doc, ["ctr"])
    assert "| no_long | 0.7000 ± 0.0100 (-0.0200) | 0.5600 ± 0.0100 (-0.0600*) |" in text
    assert "| reference | 0.7200 ± 0.0200 | 0.6200 ± 0.0200 |" in text
    paths = write(doc, tmp_path / "reports", ["ctr"])
    assert json.loads(paths[0].read_text())["reference"] == "reference" and paths[2].stat().st_size > 0
    with pytest.raises(ValueError, match="no validation metrics"):
        bad = tmp_path / "unfinished.csv"
        bad.write_text("epoch,step,train/loss\n0,19,0.9\n")
        final_metrics(bad)


def test_the_fast_item_table_experiment_changes_only_the_item_tables_learning_rate():
    ref = compose_config("replay", [])
    cfg = compose_config("replay", ["+experiment=fast_item_table"])
    assert dict(cfg.task.sparse_lr_by_table) == {"item": 0.1}
    assert cfg.task.sparse_optimizer == ref.task.sparse_optimizer and cfg.replay == ref.replay
    assert cfg.model == ref.model and cfg.cross == ref.cross
