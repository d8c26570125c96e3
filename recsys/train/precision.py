"""Training precision, by Lightning's names (`trainer.precision`).

`bf16-mixed` keeps every parameter, optimizer state and embedding table in float32 and runs the
layers after the lookups under `torch.autocast` to bfloat16; the model hands back float32 logits
and computes the contrastive terms in float32 (recsys/model/moment_cross.py, cross.py). The
trainer applies it to `make train`; jobs outside a Trainer (replay, the benchmark, tests) enter
the same context through `forward_context` here.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path

from lightning.pytorch.plugins.precision import MixedPrecision, Precision

log = logging.getLogger(__name__)

PRECISIONS = ("32-true", "bf16-mixed")
# /proc/cpuinfo flags of CPUs that multiply bfloat16 natively: x86 (`flags`), Arm (`Features`).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def forward_context(precision: str, device_type: str = "cpu") -> AbstractContextManager:
    """The context Lightning's precision plugin enters around forward passes for `precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; known: {list(PRECISIONS)}")
    plugin = Precision() if precision == "32-true" else MixedPrecision(precision, device_type)
    return plugin.forward_context()


def cpu_multiplies_bf16_natively(cpuinfo: str) -> bool:
    """Whether the flag lines of a /proc/cpuinfo text name an instruction set that multiplies
    bfloat16 natively (without one, oneDNN converts and bf16-mixed runs slower than 32-true)."""
    flags = {f for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))
             for f in line.split(":", 1)[-1].split()}
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def warn_if_emulated(precision: str, accelerator: str, cpuinfo_path: Path = Path("/proc/cpuinfo")) -> bool:
    """Logs a warning when bf16-mixed is asked of a CPU that would emulate it; True if it did.
    Says nothing where /proc/cpuinfo is missing (not Linux)."""
    if precision != "bf16-mixed" or accelerator != "cpu" or not cpuinfo_path.exists():
        return False
    if cpu_multiplies_bf16_natively(cpuinfo_path.read_text()):
        return False
    log.warning("trainer.precision=bf16-mixed on a CPU without native bfloat16 products (none of the flags %s): "
                "they are emulated here and training will likely be slower than with 32-true",
                ", ".join(NATIVE_BF16_FLAGS))
    return True
