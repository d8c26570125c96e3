"""Starting (or joining) Ray for one job, with the engine's memory cap and Ray Data's settings."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from data_pipelines.engines import RayEngine

GIB = 1 << 30
OBJECT_STORE_SHARE = 0.4  # of engine.memory_gb; the rest is the workers' and the driver's heap


@contextmanager
def ray_session(engine: RayEngine, progress: bool = True) -> Iterator[float]:
    """Ray up for the duration of the block; yields the seconds start-up took. A Ray this job
    started is shut down after it; a cluster it joined is left running."""
    import ray
    import ray.data
    from ray.data.context import ShuffleStrategy

    start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if engine.address is None:
            ray.init(num_cpus=engine.workers or os.cpu_count(),
                     object_store_memory=int(engine.memory_gb * OBJECT_STORE_SHARE * GIB),
                     include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        else:
            ray.init(address=engine.address, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards are written in the sorted order
    # Groupby and sort as Ray tasks: the default hash shuffle starts aggregator actors, a fixed ~20 s
    # per shuffle on two cores even for the tiny world (measured: history 27 s vs 5-14 s).
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    context.execution_options.resource_limits = context.execution_options.resource_limits.copy(
        object_store_memory=int(engine.memory_gb * OBJECT_STORE_SHARE * GIB))
    try:
        yield time.perf_counter() - start
    finally:
        if started_here:
            ray.shutdown()


def shuffle_partitions(buckets: int) -> int:
    """Reduce tasks of a groupby over `buckets` keys: enough for every CPU of the cluster twice over,
    no more (each task costs ~0.1-0.5 s of fixed overhead; a partition holds whole buckets)."""
    import ray

    return max(1, min(buckets, 2 * int(ray.cluster_resources().get("CPU", 1))))
