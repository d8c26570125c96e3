"""Online learning throughput: the replay's learner (recsys/learning/learner.py: the training task in
DistributedModelParallel, one process) stepping real realtime-stream batches of the sizes the
batch closer closes (full, and the smaller ones a 30-s wait closes), and scoring at the sizes
a push serves."""

from __future__ import annotations

import time

import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig

from bench.data import ensure_shards
from data_pipelines.configured import build
from data_pipelines.dataset import REALTIME
from data_pipelines.micro_batch import concat_arrays, take_rows
from recsys.data import ShardDataset
from recsys.data.batch import to_batch
from recsys.learning.learner import Learner


def _timed(step, batches: list, warmup: int) -> float:
    """Median seconds of `step` over the batches after the first `warmup`."""
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.online
    data = ensure_shards(cfg)
    replay_cfg = compose(config_name="replay", overrides=[f"world={cfg.world.name}",
                                                          f"paths.data_dir={cfg.paths.data_dir}"])
    sizes, score_sizes = [int(b) for b in bc.batch_sizes], [int(b) for b in bc.score_sizes]
    need = (bc.steps + bc.warmup_steps) * max(sizes + score_sizes)
    parts, held = [], 0
    for part in ShardDataset(data.stream(REALTIME), batch_size=1).micro_batches():
        parts.append(part)
        held += len(part["report_ts"])
        if held >= need:
            break
    samples = concat_arrays(parts)
    n = len(samples["report_ts"])
    spec = build(replay_cfg.learner)
    learner = Learner(replay_cfg, data.manifest(REALTIME), seed=0, batch_norm_min_batch=spec.batch_norm_min_batch)
    print(f"online learning ({data.name} realtime samples, the replay's learner, {torch.get_num_threads()} threads)")
    figures: dict = {"train": {}, "score": {}}
    for kind, step, batch_sizes, label, rate, unit in (
            ("train", learner.train, sizes, "learn, batches of", "samples/s", "ms/step"),
            ("score", learner.predict, score_sizes, "score, calls of  ", "impressions/s", "ms/call")):
        for size in batch_sizes:
            batches = [to_batch(take_rows(samples, np.arange(a, a + size) % n))
                       for a in range(0, size * (bc.steps + bc.warmup_steps), size)]
            step_s = _timed(step, batches, int(bc.warmup_steps))
            figures[kind][size] = {"samples_per_s": size / step_s, "step_ms": step_s * 1000}
            print(f"  {label} {size:>5}   {size / step_s:>9,.0f} {rate:<13}  {step_s * 1000:>7.1f} {unit}")
    return figures
