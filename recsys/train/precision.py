"""Training precision, by Lightning's names (`trainer.precision`).

`bf16-mixed` keeps every parameter, optimizer state and embedding table in float32 and runs the
layers after the lookups under `torch.autocast` to bfloat16; the model hands back float32 logits
and computes the contrastive terms in float32 (recsys/model/moment_cross.py, cross.py). The
trainer applies it to `make train`; jobs outside a Trainer (the benchmark, tests) enter the same
context through `forward_context` here.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from lightning.pytorch.plugins.precision import MixedPrecision, Precision

PRECISIONS = ("32-true", "bf16-mixed")


def forward_context(precision: str, device_type: str = "cpu") -> AbstractContextManager:
    """The context Lightning's precision plugin enters around forward passes for `precision`."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; known: {list(PRECISIONS)}")
    plugin = Precision() if precision == "32-true" else MixedPrecision(precision, device_type)
    return plugin.forward_context()
