"""Reading sharded (torch.distributed.checkpoint) training checkpoints back as whole tensors, in one
process, without a process group: what export and inspection need."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

TRAINER_STATE = "trainer_state.pt"  # written by TorchRecStrategy beside the shards
MODEL_PREFIX = "model."  # LightningModule.model (DMP) -> the keys of the MomentCrossModel inside


def read_unsharded(checkpoint_dir: str | Path) -> dict[str, object]:
    """Every entry of a sharded checkpoint with its shards gathered into full CPU tensors."""
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / ".metadata").exists():
        raise FileNotFoundError(f"{checkpoint_dir} is not a sharded checkpoint (no .metadata)")
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
    path = Path(checkpoint_dir) / TRAINER_STATE
    return torch.load(path, weights_only=True) if path.exists() else {}
