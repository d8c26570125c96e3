"""Vectorised helpers for ragged arrays (groups of varying length laid end to end)."""

from __future__ import annotations

import numpy as np


def within_group(counts: np.ndarray) -> np.ndarray:
    """For groups of `counts` elements laid end to end: each element's position in its group,
    e.g. counts [2, 0, 3] -> [0, 1, 0, 1, 2]."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def gather_rows(lengths: np.ndarray, rows: np.ndarray, starts: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Values of ragged rows `rows` (in that order), for rows of `lengths` laid end to end.
    Returns (the selected rows' lengths, positions into the flat values). `starts` (each row's
    first position) may be given when many small selections are taken from one long array."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths if starts is None else starts
    taken = lengths[rows]
    return taken, np.repeat(offsets[rows], taken) + within_group(taken)
