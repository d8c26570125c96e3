"""The steps replay walks through."""

from __future__ import annotations

import numpy as np


def step_edges(first_ms: int, last_ms: int, step_ms: int) -> np.ndarray:
    """Boundaries t_0 < t_1 < ... covering [first_ms, last_ms], on multiples of the step in epoch
    time (so that every push interval that is a multiple of the step pushes on an edge): step k is
    [t_k, t_k+1)."""
    if step_ms <= 0:
        raise ValueError(f"step must be positive, got {step_ms} ms")
    start = (first_ms // step_ms) * step_ms
    n = int(np.ceil((last_ms + 1 - start) / step_ms))
    return start + step_ms * np.arange(max(n, 1) + 1, dtype=np.int64)
