"""`make export`: the newest (or a given) training checkpoint -> artifacts/<name>/ with model.pt,
model.json and sample requests for the ranker."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from export.requests import RequestSchema, requests_from_inputs
from export.scorer import Scorer, inputs_from_batch, model_id_features
from export.torchscript import ExportReport, export, metadata
from recsys.data import ShardDataset, make_loader
from recsys.model.inputs import to_model_input
from recsys.train.checkpoint import MODEL_PREFIX, model_state_dict, read_trainer_state
from recsys.train.train import build_model

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


def run_export(cfg: DictConfig) -> tuple[ExportReport, dict[str, Any]]:
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else newest_checkpoint(Path(cfg.paths.log_dir) / "checkpoints")
    state, trainer_state = load_checkpoint(checkpoint)
    run = trainer_state.get("run_config")
    if run is None:
        log.warning("%s does not carry its run config; building the model from this command's config", checkpoint)
        run = OmegaConf.to_container(cfg, resolve=True)
    run_cfg = OmegaConf.create(run)
    shard_root = Path(run_cfg.datamodule.shard_root)
    manifest_path = shard_root / run_cfg.datamodule.train_stream / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} (the training shards' manifest) is needed for table sizes "
                                f"and feature order; run `make streams` for that world first")
    manifest = json.loads(manifest_path.read_text())

    model = build_model(run_cfg, manifest, embedding_device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        source = "its own run config" if "run_config" in trainer_state else "this command's config"
        raise ValueError(f"{checkpoint} does not fit the model built from {source} (world "
                         f"'{run_cfg.world.name}', model/cross groups); pass the overrides it was trained with, "
                         f"e.g. world=... model=... cross=...\n{e}") from None
    model.eval()
    id_features = model_id_features(model, manifest["sparse_features"])

    # Validation data: the first batch of the evaluation stream, as the trainer's validation sees it.
    dataset = ShardDataset(shard_root / run_cfg.datamodule.eval_stream, int(cfg.validate.batch_size))
    batch = next(iter(make_loader(dataset)))
    with torch.no_grad():
        logits = model(to_model_input(batch, model.gsu_names, model.seq_len, model.pooled_features)).logits
        probabilities = torch.sigmoid(logits)
        expected = (probabilities, model.score(probabilities))
    inputs = inputs_from_batch(batch, model.gsu_names, model.seq_len, id_features)

    training = {"run_id": run.get("run_id", "unknown"), "run_name": run.get("run_name"),
                "checkpoint": str(checkpoint), "global_step": trainer_state.get("global_step"),
                "epoch": trainer_state.get("epoch"), "data": manifest.get("data"),
                "stream": manifest.get("stream")}
    layout = OmegaConf.to_container(cfg.request_layout, resolve=True)
    layout["sequences"] = [g for g in layout["sequences"] if g in model.gsu_names]  # ablations drop GSUs
    meta = metadata(model, id_features, manifest["dense_features"], manifest["table_sizes"],
                    dict(run_cfg.model.pooled_tables), layout, int(cfg.max_candidates), training)
    name = cfg.name or run.get("run_name") or checkpoint.parent.name
    out_dir = Path(cfg.paths.artifacts_dir) / name
    report = export(Scorer(model, id_features), meta, out_dir, inputs, expected, float(cfg.validate.tolerance))

    meta = json.loads(report.meta_path.read_text())  # as written, with what validation added
    schema = RequestSchema(meta)
    sample = requests_from_inputs(inputs, schema, int(cfg.sample_requests.candidates), prefix=name)
    sample = sample[: int(cfg.sample_requests.count)]
    (out_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sample))
    return report, meta
