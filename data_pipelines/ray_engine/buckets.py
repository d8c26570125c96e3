"""Which bucket an id falls in: a fixed 64-bit mix (splitmix64's finaliser) of the id, modulo the
bucket count. Not Python's `hash`, which differs between processes."""

from __future__ import annotations

import numpy as np


def bucket_of(ids: np.ndarray, buckets: int) -> np.ndarray:
    """[N] int32 bucket in [0, buckets) of each int64 id."""
    x = np.asarray(ids, dtype=np.int64).view(np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(buckets)).astype(np.int32)
