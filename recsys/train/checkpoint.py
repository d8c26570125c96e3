"""Sharded (torch.distributed.checkpoint) training checkpoints: checked whole before anything reads
them, and read back as whole tensors in one process, without a process group, for export.

A checkpoint is a directory: `.metadata`, one `__<rank>_0.distcp` per rank, and `trainer_state.pt`,
which rank 0 writes after every rank's shards (so a kill between the two leaves a directory
without it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

TRAINER_STATE = "trainer_state.pt"  # written by TorchRecStrategy beside the shards
MODEL_PREFIX = "model."  # LightningModule.model (DMP) -> the keys of the MomentCrossModel inside


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint directory missing a file or holding a truncated one; the message names it."""


def require_complete(checkpoint_dir: str | Path, state_file: str = TRAINER_STATE) -> Path:
    """`checkpoint_dir`, once it has its index, its state file (written last: the training job's
    trainer state, or the online learner's position) and every shard file at least as long as the
    index says; else IncompleteCheckpointError naming what is missing or short."""
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / ".metadata").exists():
        raise IncompleteCheckpointError(f"{checkpoint_dir} is not a sharded checkpoint (no .metadata)")
    if not (checkpoint_dir / state_file).exists():
        raise IncompleteCheckpointError(f"{checkpoint_dir} is incomplete: {state_file} is missing (the run "
                                        f"stopped while saving it?); use an earlier checkpoint")
    try:
        metadata = FileSystemReader(str(checkpoint_dir)).read_metadata()
    except Exception as exc:  # a cut or garbled index: any unpickling error
        raise IncompleteCheckpointError(f"{checkpoint_dir / '.metadata'} cannot be read ({exc})") from exc
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        path = checkpoint_dir / name
        if not path.exists():
            raise IncompleteCheckpointError(f"{path} is missing from the checkpoint")
        if path.stat().st_size < size:
            raise IncompleteCheckpointError(f"{path} is truncated: {path.stat().st_size:,} bytes, the checkpoint's "
                                            f"index needs {size:,}")
    return checkpoint_dir


def read_unsharded(checkpoint_dir: str | Path) -> dict[str, object]:
    """Every entry of a complete sharded checkpoint with its shards gathered into full CPU tensors."""
    checkpoint_dir = require_complete(checkpoint_dir)
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "full.pt"
        dcp_to_torch_save(str(checkpoint_dir), str(flat))
        return torch.load(flat, weights_only=True)  # tensors and plain containers only


def model_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The unsharded state dict of the MomentCrossModel inside a training checkpoint."""
    state = read_unsharded(checkpoint_dir)
    model = state["model"]
    return {k[len(MODEL_PREFIX):]: v for k, v in model.items() if k.startswith(MODEL_PREFIX)}


def read_trainer_state(checkpoint_dir: str | Path) -> dict[str, object]:
    """What rank 0 saved beside the shards: loop counters, callback state and the run config."""
    return torch.load(require_complete(checkpoint_dir) / TRAINER_STATE, weights_only=True)  # plain data
