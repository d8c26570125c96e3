"""Checkpoint's scorer -> an export directory: the model file of each format asked for and model.json,
each file validated against the eager model before anything is kept.

Model files are staged, loaded back and compared; only when every one reproduces the eager scores
are they renamed into place, and model.json is written last: a ranker that watches model.json for a
newer export (serving/ranker) sees a complete export whenever it changes.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import torch

from data_pipelines.contract import DENSE_FEATURES, SEQUENCE_ID_FIELDS, SIDE_FIELDS, SIDE_ROWS, TARGET_FEATURES
from export import aoti, torchscript
from export.export_dir import FILE_NAMES, FORMATS, ExportDir
from export.push import updatable_spec
from export.request_scorer import USER_INPUTS, RequestInputs, RequestLayout, RequestScorer
from export.scorer import CandidateInputs, CandidateScorer, model_id_features
from recsys.model.moment_cross import MomentCrossModel

# 2: gsus.id_fields / side_fields / rows; 3: "files" by format, written last; 4: the request-level
# forward (the user's part once, candidate_user); 5: export_id and updatable (pushes, export/push.py).
# serving/ranker/src/meta.cpp reads it.
FORMAT_VERSION = 5


def formats_of(choice: str) -> tuple[str, ...]:
    """`make export ARGS="format=..."`: torchscript, aoti or both."""
    if choice == "both":
        return FORMATS
    if choice not in FORMATS:
        raise ValueError(f"format={choice!r}: choose torchscript, aoti or both")
    return (choice,)


class ExportValidationError(RuntimeError):
    """An exported file does not reproduce the eager model's scores."""


@dataclass(frozen=True)
class ExportReport:
    out_dir: Path
    meta_path: Path
    files: dict[str, Path]  # format -> model file
    max_abs_diff: dict[str, tuple[float, float]]  # format -> (probabilities, score)
    validated_on: int  # samples


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
            "inputs": ["user_ids [U, F_u] int64", "user_dense [U, D_u] float32",
                       f"user_seq_ids [U, G_u, L_u, {len(SEQUENCE_ID_FIELDS)}] int64 ({', '.join(SEQUENCE_ID_FIELDS)})",
                       f"user_seq_side [U, G_u, L_u, {len(SIDE_FIELDS)}] int64 ({', '.join(SIDE_FIELDS)})",
                       "user_seq_lengths [U, G_u] int64", "candidate_user [B] int64 (rows of user_*)",
                       "ids [B, F_c] int64", "dense [B, D_c] float32",
                       f"seq_ids [E, {len(SEQUENCE_ID_FIELDS)}] int64 (the candidate GSUs' elements, jagged)",
                       f"seq_side [E, {len(SIDE_FIELDS)}] int64",
                       "seq_owner [E, 2] int64 (candidate row, GSU among the candidate GSUs)"],
            "outputs": ["probabilities [B, T] float32", "score [B] float32"],
            "order": "each side's features, GSUs and fields in the orders below, the user's as request_layout "
                     "lists them (export/request_scorer.py)",
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


def validation_cases(model: MomentCrossModel, layout: RequestLayout, inputs: CandidateInputs,
                     expected: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[RequestInputs, tuple]]:
    """Request inputs and the eager model's answers to them: the validation batch with every sample
    its own user, and the same candidates as two users' requests (the users with the longest
    sequences), each with the full sequence positions and as few as the ranker sends."""
    ids, gsus = model_id_features(model), list(model.gsu_names)
    each_own = layout.split(inputs, ids, gsus)
    busiest = torch.argsort(each_own.user_seq_lengths.sum(1), descending=True, stable=True)[:2]
    two_users = each_own._replace(**{name: getattr(each_own, name)[busiest] for name in USER_INPUTS},
                                  candidate_user=torch.arange(len(inputs)) % len(busiest))
    with torch.no_grad():
        two_expected = CandidateScorer(model, ids).eval()(*layout.join(two_users, ids, gsus))
    return [(case, answer) for case, answer in ((each_own, expected), (two_users, two_expected))
            for case in (case, case.trimmed())]


@dataclass(frozen=True)
class StagedExport:
    """An export written and validated under staging names, not yet visible: `commit_export` puts
    it in place. Its `meta` (with its export_id) is final."""

    out_dir: Path
    meta: dict[str, Any]
    staged: dict[str, Path]  # format -> staged file
    diffs: dict[str, tuple[float, float]]
    validated_on: int


def export(model: MomentCrossModel, layout: RequestLayout, meta: dict[str, Any], out_dir: Path,
           inputs: CandidateInputs, expected: tuple[torch.Tensor, torch.Tensor], tolerance: float = 1e-5,
           formats: tuple[str, ...] = ("torchscript",), aoti_threads: int = 1) -> ExportReport:
    """Write the model's request scorer in each of `formats`, load every file back, and keep the
    export only if every file reproduces the eager model on `inputs` (the validation batch, with
    `expected` its probabilities and scores) within `tolerance`, as single-sample requests and as
    two users' requests (`validation_cases`). `aoti_threads`: the intra-op threads the AOTInductor
    package is compiled for (the ranker's --intra-op-threads)."""
    return commit_export(stage_export(model, layout, meta, out_dir, inputs, expected, tolerance, formats,
                                      aoti_threads))


def stage_export(model: MomentCrossModel, layout: RequestLayout, meta: dict[str, Any], out_dir: Path,
                 inputs: CandidateInputs, expected: tuple[torch.Tensor, torch.Tensor], tolerance: float = 1e-5,
                 formats: tuple[str, ...] = ("torchscript",), aoti_threads: int = 1) -> StagedExport:
    """`export` up to the commit: the files written under staging names and validated, model.json's
    content decided. Nothing a ranker reads has changed yet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scorer = RequestScorer(model, layout).eval()
    cases = validation_cases(model, layout, inputs, expected)
    example = cases[2][0]  # two users, full positions: no axis the export could take for a constant
    # Each model file names its export: a ranker checks it against model.json's, so that files renamed
    # into place are never served under an earlier export's model.json (and its pushes).
    export_id = uuid.uuid4().hex
    writers: dict[str, Callable[[Path], Callable]] = {
        "torchscript": lambda path: torchscript.save_torchscript(scorer, path, export_id),
        "aoti": lambda path: aoti.save_aoti(scorer, path, example, int(meta.get("max_candidates", len(inputs))),
                                            aoti_threads, export_id),
    }
    held: dict[str, Callable[[Callable], set[str]]] = {"torchscript": torchscript.tensor_names,
                                                       "aoti": aoti.constant_names}
    updatable = updatable_spec(scorer.serving_tensors())
    staged: dict[str, Path] = {}
    diffs: dict[str, tuple[float, float]] = {}
    loaded = {}
    try:
        for fmt in formats:
            # Named by export: a commit of another export meanwhile cannot take this one's files.
            staged[fmt] = ExportDir(out_dir).staged_model_file(fmt, export_id)
            loaded[fmt] = writers[fmt](staged[fmt])
            unreachable = sorted({*updatable["tables"], *updatable["dense"]} - held[fmt](loaded[fmt]))
            if unreachable:
                raise ExportValidationError(f"the {fmt} file does not hold {unreachable} under their names: a push "
                                            "could not replace them")
            with torch.no_grad():
                diffs[fmt] = tuple(max(d) for d in zip(*(compare(answer, loaded[fmt](*case)) for case, answer in cases)))
            if not all(d <= tolerance for d in diffs[fmt]):  # NaN fails too
                raise ExportValidationError(
                    f"exported {fmt} model differs from the eager model: max |dp| = {diffs[fmt][0]:.3g}, "
                    f"max |dscore| = {diffs[fmt][1]:.3g} (tolerance {tolerance:g})")
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    meta = {**meta, "export_id": export_id, "updatable": updatable,
            "files": {fmt: FILE_NAMES[fmt] for fmt in formats},
            **({"aoti": {"threads": aoti_threads}} if "aoti" in formats else {}),
            "fbgemm_operators": torchscript.fbgemm_operators(loaded["torchscript"]) if "torchscript" in loaded else [],
            "validation": {"samples": len(inputs), "tolerance": tolerance,
                           "max_abs_diff_probabilities": max(d[0] for d in diffs.values()),
                           "max_abs_diff_score": max(d[1] for d in diffs.values()),
                           "by_format": {fmt: {"max_abs_diff_probabilities": d[0], "max_abs_diff_score": d[1]}
                                         for fmt, d in diffs.items()}}}
    return StagedExport(out_dir, meta, staged, diffs, len(inputs))


def commit_export(staged: StagedExport) -> ExportReport:
    """Puts a staged export in place: its model files renamed over the previous ones, then model.json
    (the commit point a ranker watches)."""
    target = ExportDir(staged.out_dir)
    files = {fmt: target.model_file(fmt) for fmt in staged.staged}
    for fmt, path in staged.staged.items():
        os.replace(path, files[fmt])
    meta_path = target.meta_path
    _atomic_write(meta_path, lambda p: p.write_text(json.dumps(staged.meta, indent=2) + "\n"))
    for fmt in set(FORMATS) - set(staged.staged):  # a file of an earlier export that model.json no longer lists
        target.model_file(fmt).unlink(missing_ok=True)
    return ExportReport(staged.out_dir, meta_path, files, staged.diffs, staged.validated_on)
