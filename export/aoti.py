"""The scorer as an AOTInductor package: `torch.export` (non-strict, the candidate axis dynamic), then
Inductor's ahead-of-time compile into model.pt2, which the C++ ranker loads with
`torch::inductor::AOTIModelPackageLoader` and Python with `torch._inductor.aoti_load_package`.

TorchScript's successor. The exported graph calls no fbgemm operator (TorchRec's unsharded
EmbeddingBagCollection lowers to aten embedding bags), and the package is compiled C++ for this
CPU: compiling takes about a minute on two cores.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

import torch

from export.scorer import Scorer, ScorerInputs

FILE_NAME = "model.pt2"
INPUT_NAMES = ScorerInputs._fields


class _DropKjtExportNotice(logging.Filter):
    """TorchRec logs, on every KeyedJaggedTensor.to_dict it meets while exporting non-strict, that this
    is slow; the export is done once per model, and the notice buries the export's own report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "non-strict torch.export KJT to_dict" not in record.getMessage()


def export_program(scorer: Scorer, example: ScorerInputs, max_candidates: int) -> torch.export.ExportedProgram:
    """The scorer's graph for any number of candidates from 1 to `max_candidates` and any number of
    sequence positions from 1 to the model's length (the ranker sends only as many as the longest
    sequence of a batch fills)."""
    candidates = torch.export.Dim("candidates", min=1, max=max(max_candidates, len(example)))
    positions = torch.export.Dim("positions", min=1, max=scorer.seq_len)
    dynamic = {name: {0: candidates} for name in INPUT_NAMES}
    dynamic["seq_ids"][2] = dynamic["seq_side"][2] = positions
    quiet = _DropKjtExportNotice()
    logging.getLogger().addFilter(quiet)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            return torch.export.export(scorer.eval(), tuple(example), dynamic_shapes=dynamic, strict=False)
    finally:
        logging.getLogger().removeFilter(quiet)


def save_aoti(scorer: Scorer, path: Path, example: ScorerInputs, max_candidates: int) -> Callable:
    """Compiles the package to `path` and returns it as loaded back from disk (what a ranker will run)."""
    program = export_program(scorer, example, max_candidates)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return torch._inductor.aoti_load_package(str(path))
