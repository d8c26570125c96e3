"""The label joiner's checkpoints: its state (open stays, the request arrays it holds, pending
samples, watermark) together with the offsets of the events it had consumed when it was taken, so
that a joiner started again resumes exactly there (docs/online.md, "A joiner that resumes").

    logs/online/<name>/joiner/
      latest                 names the newest checkpoint (replaced atomically, last)
      w-<watermark>/         state.npz (numbers only: loaded without pickle), position.json
      ledger/part-<k>.npz    the samples emitted between checkpoints k-1 and k (the run's ledger, in parts)
      ledger/served-<k>.npz  the served-features records read between them (the served ledger, in parts)

A checkpoint is written after the samples of its watermark are published. The ledger part first,
then the state into a staging directory renamed into place, then the pointer: a joiner killed at any
point finds either the previous checkpoint whole or this one whole, never a mix.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from online.record import (LATEST, ServedLedger, StreamLedger, commit_checkpoint, concat_ledgers, load_ledger,
                           save_ledger)


@dataclass
class JoinerPosition:
    """Where the joiner's consumption stood when its state was saved."""

    offsets: dict[str, str]  # events and served stream -> id of the last entry consumed
    clocks: dict[str, int | None]  # events stream -> its newest clock mark
    answered: dict[str, int | None] = field(default_factory=dict)  # events stream -> its marks' newest `answered`
    ended: list[str] = field(default_factory=list)  # events streams that said `end`
    events: int = 0  # applied
    quarantined: int = 0
    last_step: int | None = None  # the watermark of the last emission
    ledger_parts: int = 0  # ledger parts written, all of them before this checkpoint
    resumes: int = 0  # times a joiner started from a checkpoint of this run

    @classmethod
    def start(cls, streams: list[str], served: list[str] = ()) -> "JoinerPosition":
        return cls({s: "0-0" for s in [*streams, *served]}, {s: None for s in streams}, {s: None for s in streams})


class JoinerCheckpoints:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def _ledger_dir(self) -> Path:
        return self.root / "ledger"

    def save(self, state: tuple[dict[str, np.ndarray], dict], position: JoinerPosition,
             ledger_part: dict[str, StreamLedger], served_part: ServedLedger | None = None) -> Path:
        """The joiner's `state` (LabelJoiner.state()) at `position`, with the samples emitted and the
        served records read since the previous checkpoint; returns the checkpoint's directory."""
        arrays, meta = state
        self._ledger_dir.mkdir(parents=True, exist_ok=True)
        if served_part is not None:
            served_part.save(self._ledger_dir / f"served-{position.ledger_parts}.npz")
        save_ledger(ledger_part, self._ledger_dir / f"part-{position.ledger_parts}.npz")
        position.ledger_parts += 1
        directory = self.root / f"w-{meta['watermark']}"
        staging = self.root / f".{directory.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        np.savez(staging / "state.npz", **arrays)
        (staging / "position.json").write_text(json.dumps({"position": asdict(position), "joiner": meta}) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        commit_checkpoint(self.root, directory, "w-*")
        return directory

    def load(self) -> tuple[dict[str, np.ndarray], dict, JoinerPosition] | None:
        """(state arrays, state meta, position) of the newest checkpoint; None when there is none."""
        pointer = self.root / LATEST
        if not pointer.exists():
            return None
        directory = self.root / pointer.read_text().strip()
        record = json.loads((directory / "position.json").read_text())
        with np.load(directory / "state.npz", allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
        return arrays, record["joiner"], JoinerPosition(**record["position"])

    def ledger(self, parts: int, tail: dict[str, StreamLedger]) -> dict[str, StreamLedger]:
        """The run's ledger: the first `parts` parts (those a checkpoint vouches for) and `tail`."""
        return concat_ledgers([load_ledger(self._ledger_dir / f"part-{k}.npz") for k in range(parts)] + [tail])

    def served(self, parts: int, tail: ServedLedger) -> ServedLedger:
        """The run's served ledger: the first `parts` parts and `tail`."""
        files = [self._ledger_dir / f"served-{k}.npz" for k in range(parts)]
        return ServedLedger.concat([ServedLedger.load(f) for f in files if f.exists()] + [tail])

