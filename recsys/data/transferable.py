"""Moving a dataclass of tensors and KeyedJaggedTensors between devices, field by field."""

from __future__ import annotations

from dataclasses import fields, replace

import torch
from torchrec.streamable import Pipelineable


class TensorFields(Pipelineable):
    """Mixin for dataclasses whose every field has `.to`, `.record_stream` and `.pin_memory`
    (tensors, KeyedJaggedTensors): what TorchRec's pipelines and Lightning's transfer expect."""

    def to(self, device: torch.device, non_blocking: bool = False):
        return replace(self, **{f.name: getattr(self, f.name).to(device=device, non_blocking=non_blocking)
                                for f in fields(self)})

    def record_stream(self, stream: torch.Stream) -> None:
        for f in fields(self):
            getattr(self, f.name).record_stream(stream)

    def pin_memory(self):
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})
