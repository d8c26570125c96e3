"""The scorer as TorchScript: TorchRec's fx tracer, then torch.jit.script; model.pt."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch
import torchrec.fx

from torch import nn

# TorchRec asks torch.fx "are we tracing?" in every eager forward, which makes torch log a one-time
# notice about torch.export meant for torch's own developers.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


def to_torchscript(scorer: nn.Module) -> torch.jit.ScriptModule:
    """TorchRec's fx tracer turns the KeyedJaggedTensor plumbing into a graph TorchScript compiles.

    TorchScript's deprecation and the tracer's notices are known (README: the torch.export path) and
    silenced here so that the export's own report stays readable."""
    scorer.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", message=r".*(TorchScript|instance-level annotations)", category=UserWarning)
        return torch.jit.script(torchrec.fx.symbolic_trace(scorer))


def tensor_names(module: torch.jit.ScriptModule) -> set[str]:
    """The names of the module's parameters and buffers, as a push addresses them."""
    return {name for name, _ in module.named_parameters()} | {name for name, _ in module.named_buffers()}


def fbgemm_operators(module: torch.jit.ScriptModule) -> list[str]:
    """The fbgemm operators the file calls: the C++ side must load their libraries first."""
    return sorted(set(re.findall(r"fbgemm::\w+", str(module.inlined_graph))))


EXPORT_ID_FILE = "export_id"  # an extra file in the archive: the export the file belongs to


def save_torchscript(scorer: nn.Module, path: Path, export_id: str = "") -> torch.jit.ScriptModule:
    """Writes the TorchScript file, naming the export it belongs to, and returns it as loaded back
    from disk (what a ranker will run)."""
    to_torchscript(scorer).save(str(path), _extra_files={EXPORT_ID_FILE: export_id})
    return torch.jit.load(str(path))
