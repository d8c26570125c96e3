"""Impressions per second through each label engine with GSU retrieval, and loader samples per second."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from bench.data import ensure_shards, ensure_world
from data_pipelines.configured import build
from data_pipelines.dataset import REALTIME
from data_pipelines.history_store import HistoryStore
from data_pipelines.streams.build import build_features, run_engines
from recsys.data import ShardDataset, make_loader


def _loader_rate(shard_dir: Path, batch_size: int, n_batches: int, shuffle: bool, num_workers: int) -> float:
    loader = make_loader(ShardDataset(shard_dir, batch_size=batch_size, shuffle=shuffle), num_workers=num_workers)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    start, samples = time.perf_counter(), 0
    for _, batch in zip(range(n_batches), it):
        samples += len(batch)
    return samples / (time.perf_counter() - start)


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.streams
    data = ensure_world(cfg)
    store = HistoryStore.load(data.history)

    impressions = pd.read_parquet(data.canonical.live_impressions)
    actions = pd.read_parquet(data.canonical.live_actions)
    start = time.perf_counter()
    spec, rules = build(cfg.features), build(cfg.stream)  # as make streams builds them
    features, _ = build_features(data.canonical, impressions, store, spec, progress=False)
    shared_s = time.perf_counter() - start
    n = len(features.impression_id)
    figures: dict = {"impressions": n, "features_and_gsu_per_s": n / shared_s}
    print(f"streams ({data.name}: {n:,} live impressions, GSU length {spec.gsu_length})")
    print(f"  request features + 5 GSUs                {n / shared_s:>12,.0f} impressions/s")
    for name, engine in rules.engines.items():
        start = time.perf_counter()
        _, samples, _ = run_engines(impressions, actions, dataclasses.replace(rules, engines={name: engine}),
                                    with_final=False)
        engine_s = time.perf_counter() - start
        rate = n / (shared_s + engine_s)
        figures[f"{name}_impressions_per_s"] = rate
        print(f"  {name:<10} engine with GSU retrieval    {rate:>12,.0f} impressions/s "
              f"({len(samples[name]):,} samples; labels alone {n / engine_s:,.0f}/s)")

    data = ensure_shards(cfg)
    for shuffle, workers in ((False, 0), (True, 0), (True, 2)):
        rate = _loader_rate(data.stream(REALTIME), bc.batch_size, bc.loader_batches, shuffle, workers)
        mode = "shuffled" if shuffle else "time-ordered"
        figures[f"loader_{mode}_{workers}w_samples_per_s"] = rate
        print(f"  loader, {mode:<12}, {workers} workers, batch {bc.batch_size}  {rate:>10,.0f} samples/s")
    return figures
