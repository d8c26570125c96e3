"""`make export`: the newest (or a given) training checkpoint -> artifacts/<name>/ with model.pt
(TorchScript) and/or model.pt2 (AOTInductor), model.json and sample requests for the ranker."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data_pipelines.dataset import DataSet
from export.requests import RequestSchema, requests_from_inputs
from export.request_scorer import RequestLayout
from export.scorer import CandidateInputs, inputs_from_batch
from export.artifact import ExportReport, export, formats_of, metadata
from export.export_dir import ExportDir
from recsys.data import ShardDataset, make_loader
from recsys.model.factory import model_from_config
from recsys.model.inputs import to_model_input
from recsys.model.moment_cross import MomentCrossModel
from recsys.train.checkpoint import MODEL_PREFIX, model_state_dict, read_trainer_state

log = logging.getLogger(__name__)


def newest_checkpoint(checkpoint_root: Path) -> Path:
    found = [p for p in checkpoint_root.glob("*/*") if (p / ".metadata").exists() or p.suffix == ".pt"]
    if not found:
        raise FileNotFoundError(f"no checkpoint under {checkpoint_root}: run `make train` first, "
                                f"or pass checkpoint=<dir or .pt file>")
    return max(found, key=lambda p: p.stat().st_mtime)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, trainer state) from a sharded DCP directory or a single torch.save file
    holding a model state dict (keys with or without the "model." prefix)."""
    if path.is_dir():
        return model_state_dict(path), read_trainer_state(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never arbitrary pickles
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a model state dict (name -> tensor)")
    return {k.removeprefix(MODEL_PREFIX): v for k, v in state.items()}, {}


def rebuild_model(checkpoint: Path, cfg: DictConfig) -> tuple[MomentCrossModel, DictConfig, dict[str, Any]]:
    """(the trained model in eval mode, the config it was trained with, the trainer state). A
    checkpoint that does not carry its run config is read with this command's config."""
    state, trainer_state = load_checkpoint(checkpoint)
    run = trainer_state.get("run_config")
    if run is None:
        log.warning("%s does not carry its run config; building the model from this command's config", checkpoint)
        run = OmegaConf.to_container(cfg, resolve=True)
    run_cfg = OmegaConf.create(run)
    data = DataSet(run_cfg.datamodule.data_dir)
    model = model_from_config(run_cfg, data.manifest(run_cfg.datamodule.train_stream), embedding_device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        source = "its own run config" if "run_config" in trainer_state else "this command's config"
        raise ValueError(f"{checkpoint} does not fit the model built from {source} (data set "
                         f"'{data.name}', model/cross groups); pass the overrides it was trained with, "
                         f"e.g. world=... model=... cross=...\n{e}") from None
    return model.eval(), run_cfg, trainer_state


def validation_inputs(model: MomentCrossModel, data: DataSet, eval_stream: str, batch_size: int
                      ) -> tuple[CandidateInputs, tuple[torch.Tensor, torch.Tensor]]:
    """The first batch of the evaluation stream as scorer inputs, and the eager model's
    (probabilities, score) of it on the training code path."""
    batch = next(iter(make_loader(ShardDataset(data.stream(eval_stream), batch_size))))
    with torch.no_grad():
        logits = model(to_model_input(batch, model.gsu_names, model.seq_len, model.pooled_features)).logits
        probabilities = torch.sigmoid(logits)
    return inputs_from_batch(batch, model), (probabilities, model.head.score(probabilities))


def run_export(cfg: DictConfig) -> tuple[ExportReport, dict[str, Any]]:
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else newest_checkpoint(Path(cfg.paths.log_dir) / "checkpoints")
    model, run_cfg, trainer_state = rebuild_model(checkpoint, cfg)
    data = DataSet(run_cfg.datamodule.data_dir)
    inputs, expected = validation_inputs(model, data, run_cfg.datamodule.eval_stream, int(cfg.validate.batch_size))
    training = {"run_id": run_cfg.get("run_id", "unknown"), "run_name": run_cfg.get("run_name"),
                "checkpoint": str(checkpoint), "global_step": trainer_state.get("global_step"),
                "epoch": trainer_state.get("epoch"), "data": data.name, "stream": run_cfg.datamodule.train_stream}
    layout = OmegaConf.to_container(cfg.request_layout, resolve=True)
    layout["sequences"] = [g for g in layout["sequences"] if g in model.gsu_names]  # ablations drop GSUs
    meta = metadata(model, layout, int(cfg.max_candidates), training)
    name = cfg.name or run_cfg.get("run_name") or checkpoint.parent.name
    out_dir = Path(cfg.paths.artifacts_dir) / name
    report = export(model, RequestLayout.of(model, layout), meta, out_dir, inputs, expected,
                    float(cfg.validate.tolerance), formats_of(str(cfg.format)), int(cfg.aoti_threads))

    written = ExportDir(out_dir)
    meta = written.meta()  # as written, with what validation added
    sample = requests_from_inputs(inputs, RequestSchema(meta), int(cfg.sample_requests.candidates), prefix=name)
    sample = sample[: int(cfg.sample_requests.count)]
    written.requests.write_text("".join(json.dumps(r) + "\n" for r in sample))
    return report, meta
