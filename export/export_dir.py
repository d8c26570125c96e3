"""Where each file of an export directory lives (artifacts/<name>/): every writer and reader of an
export reaches its files through `ExportDir`, as data sets are reached through `DataSet`. The C++
ranker cannot import this; it reads the model files model.json names and the pushes' layout
documented in docs/serving.md, and tests hold the two together.

    artifacts/<name>/
      model.json                  what a ranker needs (written last: the commit point a ranker watches)
      model.pt, model.pt2         the model files, TorchScript and AOTInductor (as model.json lists)
      requests.jsonl              sample requests for the ranker (`make export`)
      pushes/<export_id>/<sequence:010d>.push   the updates onto that export (export/push.py)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FILE_NAMES = {"torchscript": "model.pt", "aoti": "model.pt2"}  # model file of each format
FORMATS = tuple(FILE_NAMES)


@dataclass(frozen=True)
class ExportDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def meta_path(self) -> Path:
        return self.root / "model.json"

    def has_meta(self) -> bool:
        """Whether an export has been committed here (model.json comes last)."""
        return self.meta_path.exists()

    def meta(self) -> dict:
        """model.json, or an error that says there is no export here yet."""
        if not self.meta_path.exists():
            raise FileNotFoundError(f"{self.meta_path} not found: no export in {self.root} yet (make export, or a "
                                    f"continuous trainer's first full export)")
        return json.loads(self.meta_path.read_text())

    def model_file(self, fmt: str) -> Path:
        return self.root / FILE_NAMES[fmt]

    def staged_model_file(self, fmt: str, export_id: str) -> Path:
        """Where an export writes a model file before its commit (named by export, so that another
        export's commit cannot take it; AOTInductor wants the .pt2 suffix kept)."""
        return self.root / f".staged.{export_id}.{FILE_NAMES[fmt]}"

    @property
    def requests(self) -> Path:
        return self.root / "requests.jsonl"

    @property
    def pushes_root(self) -> Path:
        return self.root / "pushes"

    def pushes(self, export_id: str) -> Path:
        """The pushes onto one export."""
        return self.pushes_root / export_id

    def push_path(self, export_id: str, sequence: int) -> Path:
        return push_file(self.pushes(export_id), sequence)


def push_file(directory: Path, sequence: int) -> Path:
    """Push `sequence` in a pushes directory."""
    return Path(directory) / f"{sequence:010d}.push"
