"""Moving a dataclass of tensors and KeyedJaggedTensors between devices, field by field."""

from __future__ import annotations

from dataclasses import fields, replace

import torch


class TensorFields:
    """Mixin for dataclasses whose every field has `.to` (tensors, KeyedJaggedTensors): what
    Lightning's batch transfer calls."""

    def to(self, device: torch.device, non_blocking: bool = False):
        return replace(self, **{f.name: getattr(self, f.name).to(device=device, non_blocking=non_blocking)
                                for f in fields(self)})
