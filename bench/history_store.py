"""As-of lookups per second on a world's interaction-log store."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from bench.data import ensure_world
from data_pipelines.dataset import DataSet
from data_pipelines.history_store import HistoryStore


def _request_sample(data: DataSet, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user, request time) pairs of real live impressions, as the stream engine will query them."""
    impressions = pd.read_parquet(data.canonical.live_impressions, columns=["user_id", "request_ts"])
    pick = rng.integers(0, len(impressions), size=n)
    return impressions["user_id"].to_numpy()[pick], impressions["request_ts"].to_numpy()[pick]


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.history_store
    data = ensure_world(cfg)
    store = HistoryStore.load(data.history)
    rng = np.random.default_rng(0)
    users, ts = _request_sample(data, bc.batch_queries, rng)

    store.query_batch(users[:10], ts[:10])  # builds the composite key once, as a long-lived store would
    start = time.perf_counter()
    for u, t in zip(users[: bc.single_queries], ts[: bc.single_queries]):
        store.query(int(u), int(t))
    single_qps = bc.single_queries / (time.perf_counter() - start)

    start = time.perf_counter()
    begin, end = store.query_batch(users, ts)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    store.gather(begin, end, bc.sequence_length, "item_id")
    gather_s = time.perf_counter() - start

    figures = {
        "interactions": len(store),
        "users": len(store.user_ids),
        "single_queries_per_s": single_qps,
        "batched_queries_per_s": bc.batch_queries / batch_s,
        "batched_with_gather_per_s": bc.batch_queries / (batch_s + gather_s),
        "mean_events_before_request": float((end - begin).mean()),
    }
    print(f"history store ({data.name}: {figures['interactions']:,} interactions, {figures['users']:,} users)")
    print(f"  as-of lookup, one at a time          {figures['single_queries_per_s']:>14,.0f} queries/s")
    print(f"  as-of lookup, batches of {bc.batch_queries:,}  {figures['batched_queries_per_s']:>14,.0f} queries/s")
    print(f"  ... plus gathering the latest {bc.sequence_length} ids {figures['batched_with_gather_per_s']:>10,.0f} queries/s")
    print(f"  mean interactions before a request   {figures['mean_events_before_request']:>14,.1f}")
    return figures
