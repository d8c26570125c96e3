"""Checkpoint -> TorchScript file + model.json, validated against the eager model before it is kept.

The file is written atomically and model.pt last: a ranker that watches model.pt for a newer export
(export/ranker) never sees a half-written file or a model.pt without its metadata.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import torchrec.fx

from data_pipelines.contract import DENSE_FEATURES, SEQUENCE_ID_FIELDS, SIDE_FIELDS, SIDE_ROWS, TARGET_FEATURES
from export.scorer import Scorer, ScorerInputs, model_id_features
from recsys.model.moment_cross import MomentCrossModel

# TorchRec asks torch.fx "are we tracing?" in every eager forward, which makes torch log a one-time
# notice about torch.export meant for torch's own developers.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
FORMAT_VERSION = 2  # 2: gsus.id_fields / side_fields / rows (the ranker reads export/ranker/src/meta.cpp)


class ExportValidationError(RuntimeError):
    """The exported file does not reproduce the eager model's scores."""


@dataclass(frozen=True)
class ExportReport:
    model_path: Path
    meta_path: Path
    max_abs_diff_probabilities: float
    max_abs_diff_score: float
    validated_on: int  # samples


def to_torchscript(scorer: Scorer) -> torch.jit.ScriptModule:
    """TorchRec's fx tracer turns the KeyedJaggedTensor plumbing into a graph TorchScript compiles.

    TorchScript's deprecation and the tracer's notices are known (README: the torch.export path) and
    silenced here so that the export's own report stays readable."""
    scorer.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message=r".*(TorchScript|instance-level annotations)", category=UserWarning)
        return torch.jit.script(torchrec.fx.symbolic_trace(scorer))


def fbgemm_operators(module: torch.jit.ScriptModule) -> list[str]:
    """The fbgemm operators the file calls: the C++ side must load their libraries first."""
    return sorted(set(re.findall(r"fbgemm::\w+", str(module.inlined_graph))))


def metadata(model: MomentCrossModel, request_layout: dict[str, list[str]], max_candidates: int,
             training: dict[str, Any]) -> dict[str, Any]:
    """model.json: everything a ranker needs to validate a request and lay it out as the scorer's
    inputs, all read off the model and the data contract."""
    tables = [*model.lookup.pooled_ebc.embedding_bag_configs(), *model.lookup.sequence_ebc.embedding_bag_configs()]
    table_sizes = {t.name: t.num_embeddings for t in tables}
    table_of = {f: t.name for t in model.lookup.pooled_ebc.embedding_bag_configs() for f in t.feature_names}
    table_of |= dict(zip(TARGET_FEATURES, SEQUENCE_ID_FIELDS))
    esu = model.head.esu
    side_rows = dict(zip(SIDE_FIELDS, esu.side_rows)) if esu is not None else dict(SIDE_ROWS)
    id_features = model_id_features(model)
    unknown = {s: sorted(set(names) - set({"ids": id_features, "dense": DENSE_FEATURES,
                                           "sequences": model.gsu_names}[s]))
               for s, names in request_layout.items()}
    if any(unknown.values()):
        raise ValueError(f"request_layout names features the model does not have: {unknown}")
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "forward": {
            "inputs": ["ids [B, F] int64", "dense [B, D] float32",
                       f"seq_ids [B, G, L, {len(SEQUENCE_ID_FIELDS)}] int64 ({', '.join(SEQUENCE_ID_FIELDS)})",
                       f"seq_side [B, G, L, {len(SIDE_FIELDS)}] int64 ({', '.join(SIDE_FIELDS)})",
                       "seq_lengths [B, G] int64"],
            "outputs": ["probabilities [B, T] float32", "score [B] float32"],
        },
        "id_features": [{"name": f, "table": table_of[f], "rows": table_sizes[table_of[f]]} for f in id_features],
        "dense_features": list(DENSE_FEATURES),
        # A request's sequence element holds id_fields then side_fields (seq_ids, then seq_side);
        # `rows` bounds each field's values, [0, rows).
        "gsus": {"names": list(model.gsu_names), "length": model.seq_len, "id_fields": list(SEQUENCE_ID_FIELDS),
                 "side_fields": list(SIDE_FIELDS),
                 "rows": {**{f: table_sizes[f] for f in SEQUENCE_ID_FIELDS}, **side_rows}},
        "tasks": list(model.tasks),
        "score_weights": dict(zip(model.tasks, model.head.score_weights.tolist())),
        "table_sizes": table_sizes,
        "request_layout": {"user": {s: list(v) for s, v in request_layout.items()}},
        "max_candidates": max_candidates,
        "versions": {"torch": version("torch"), "torchrec": version("torchrec"), "fbgemm_gpu": _fbgemm_version()},
        "training": training,
    }


def _fbgemm_version() -> str:
    """The CPU and CUDA builds are different distributions of the same `fbgemm_gpu` package."""
    for distribution in ("fbgemm-gpu-cpu", "fbgemm-gpu"):
        try:
            return f"{distribution}=={version(distribution)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def compare(expected: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    return tuple(float((a - b).abs().max()) for a, b in zip(expected, got))


def export(scorer: Scorer, meta: dict[str, Any], out_dir: Path, inputs: ScorerInputs,
           expected: tuple[torch.Tensor, torch.Tensor], tolerance: float = 1e-5) -> ExportReport:
    """Script `scorer`, load the file back, score `inputs`, and keep it only if it reproduces
    `expected` (probabilities, score from the eager model) within `tolerance`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scripted = to_torchscript(scorer)
    staged = out_dir / ".model.pt.staged"
    scripted.save(str(staged))
    loaded = torch.jit.load(str(staged))
    with torch.no_grad():
        got = loaded(*inputs)
    diff_p, diff_s = compare(expected, got)
    if not (diff_p <= tolerance and diff_s <= tolerance):  # NaN fails too
        staged.unlink()
        raise ExportValidationError(f"exported model differs from the eager model: max |dp| = {diff_p:.3g}, "
                                    f"max |dscore| = {diff_s:.3g} (tolerance {tolerance:g})")
    meta = {**meta, "fbgemm_operators": fbgemm_operators(loaded),
            "validation": {"samples": len(inputs), "max_abs_diff_probabilities": diff_p,
                           "max_abs_diff_score": diff_s, "tolerance": tolerance}}
    meta_path, model_path = out_dir / "model.json", out_dir / "model.pt"
    _atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    os.replace(staged, model_path)
    return ExportReport(model_path, meta_path, diff_p, diff_s, len(inputs))
