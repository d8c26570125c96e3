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

from recsys.machine import CPUINFO, NATIVE_BF16_FLAGS, describe

log = logging.getLogger(__name__)

PRECISIONS = ("32-true", "bf16-mixed")


def forward_context(precision: str, device_type: str = "cpu") -> AbstractContextManager:
    """The context Lightning's precision plugin enters around forward passes for `precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; known: {list(PRECISIONS)}")
    plugin = Precision() if precision == "32-true" else MixedPrecision(precision, device_type)
    return plugin.forward_context()


def warn_if_emulated(precision: str, accelerator: str, cpuinfo_path: Path = CPUINFO) -> bool:
    """Warns when bf16-mixed is asked of a CPU that would emulate bfloat16 products; True if it did.
    `make train`, the replay and the training benchmark call it at start-up. Says nothing where
    /proc/cpuinfo is missing (not Linux)."""
    if precision != "bf16-mixed" or accelerator != "cpu" or not cpuinfo_path.exists():
        return False
    machine = describe(cpuinfo_path)
    if machine.native_bf16:
        return False
    log.warning("trainer.precision=bf16-mixed on a CPU without bfloat16 products (%s; none of the flags %s): they "
                "are emulated here, and a training step measured 5x slower than with 32-true on such a CPU (an "
                "AVX2 EPYC, docs/benchmarks.md); use 32-true here", machine.cpu, ", ".join(NATIVE_BF16_FLAGS))
    return True
