"""Which engine runs `make history` and `make streams` (conf/engine/*.yaml, `engine=local|ray`).

Both run the same pure functions of the data contract (history_store, streams/features, gsu,
labels, shards); they differ only in how the work is cut and where it runs, and write the same
bytes for the same input (tests/test_ray_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalEngine:
    """One process holding every table at once: the default, fastest below a few million impressions."""


@dataclass(frozen=True)
class RayEngine:
    """Ray Data (data_pipelines/ray_engine/): users hashed into `user_buckets` (the history store, the
    user's features and the GSU retrieval of each bucket), rooms into `room_buckets` (the room's
    real-time state), the label engines per user bucket, a global sort by report time per stream."""

    address: str | None = None  # None: start Ray on this machine; "auto" or "ray://head:10001": a cluster's
    workers: int | None = None  # CPUs of the Ray started here (buckets processed at once); None: all
    memory_gb: float = 8.0  # what the job may hold in memory, object store included (see docs/data.md)
    user_buckets: int = 64
    room_buckets: int = 4
    scratch_dir: str | None = None  # intermediate files; None: <data set>/.ray-scratch (any pyarrow URI)

    def __post_init__(self) -> None:
        for name in ("user_buckets", "room_buckets"):
            if getattr(self, name) < 1:
                raise ValueError(f"engine.{name} must be at least 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"engine.workers must be at least 1 or null, got {self.workers}")
        if self.memory_gb <= 0:
            raise ValueError(f"engine.memory_gb must be positive, got {self.memory_gb}")
