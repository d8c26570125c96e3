"""`make history engine=ray`: one history store per user bucket, built by Ray tasks.

Every play and stay is tagged with its user's bucket; Ray groups the interactions by bucket (a
shuffle over `user_buckets` keys, not over raw user ids, which Ray groups slowly) and each group becomes a store with
`HistoryStore.from_events`, saved as history/user_buckets/<b>-of-<n>.npz. A user's rows depend
only on that user's interactions, so every bucket store answers its users' queries exactly as the
local engine's single store does."""

from __future__ import annotations

import io
import json
import posixpath

import numpy as np
import pandas as pd

from data_pipelines.engines import RayEngine
from data_pipelines.history_store import (EVENT_COLUMNS, PLAY_COLUMNS, STAY_COLUMNS, HistoryStore,
                                          HistoryStoreConfig, play_events, stay_events)
from data_pipelines.ray_engine.buckets import bucket_of
from data_pipelines.ray_engine.session import shuffle_partitions
from data_pipelines.ray_engine.storage import Storage

def bucket_store_path(storage: Storage, bucket: int, buckets: int) -> str:
    return storage.path(storage.layout.history_bucket(bucket, buckets))


def _tagged(events: pd.DataFrame, buckets: int) -> pd.DataFrame:
    return events.assign(bucket=bucket_of(events["user_id"].to_numpy(), buckets))


def _save_bucket(events: pd.DataFrame, storage: Storage, buckets: int, max_events: int) -> pd.DataFrame:
    bucket = int(events["bucket"].iloc[0])
    store = HistoryStore.from_events(events.drop(columns="bucket"), max_events)
    buffer = io.BytesIO()
    store.save(buffer)
    storage.write_bytes(bucket_store_path(storage, bucket, buckets), buffer.getvalue())
    return pd.DataFrame({"bucket": [bucket], "interactions": [len(store)], "users": [len(store.user_ids)]})


def build_bucket_stores(storage: Storage, cfg: HistoryStoreConfig, engine: RayEngine) -> dict:
    """Every bucket's store, then history/user_buckets/buckets.json (written last: the stores are
    complete once it exists). Returns that index."""
    import ray.data

    canonical = storage.layout.canonical
    n = engine.user_buckets
    stays = ray.data.read_parquet(storage.path(canonical.live_impressions),
                                  filesystem=storage.fs).select_columns(list(STAY_COLUMNS))
    events = stays.map_batches(lambda b: _tagged(stay_events(b, cfg), n), batch_format="pandas")
    plays_path = storage.path(canonical.short_plays)
    if storage.exists(plays_path):
        plays = ray.data.read_parquet(plays_path, filesystem=storage.fs).select_columns(list(PLAY_COLUMNS))
        events = events.union(plays.map_batches(lambda b: _tagged(play_events(b, cfg), n), batch_format="pandas"))
    index_path = storage.path(storage.layout.history_buckets_index)
    storage.remove_dir(posixpath.dirname(index_path))  # the index first: never stores of two bucketings
    written = (events.groupby("bucket", num_partitions=shuffle_partitions(n))
               .map_groups(_save_bucket, batch_format="pandas", fn_args=(storage, n, cfg.max_events))
               .to_pandas())
    empty = HistoryStore.from_events(pd.DataFrame({f: np.zeros(0, np.int64) for f in EVENT_COLUMNS}), cfg.max_events)
    for bucket in sorted(set(range(n)) - set(written["bucket"].tolist())):  # no user hashed there
        buffer = io.BytesIO()
        empty.save(buffer)
        storage.write_bytes(bucket_store_path(storage, bucket, n), buffer.getvalue())
    index = {"user_buckets": n, "max_events": cfg.max_events,
             "interactions": int(written["interactions"].sum()), "users": int(written["users"].sum())}
    storage.write_bytes(index_path, json.dumps(index, indent=1).encode())
    return index


def load_bucket_store(storage: Storage, bucket: int, buckets: int) -> HistoryStore:
    path = bucket_store_path(storage, bucket, buckets)
    return HistoryStore.load(path, io.BytesIO(storage.read_bytes(path)))


def read_bucket_index(storage: Storage, buckets: int) -> dict:
    """The bucket stores' index, or an error naming the command that writes them."""
    path = storage.path(storage.layout.history_buckets_index)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} not found: build the bucketed history first "
                                f"(make history ARGS=\"engine=ray engine.user_buckets={buckets} ...\")")
    index = json.loads(storage.read_bytes(path))
    if index.get("user_buckets") != buckets:
        raise ValueError(f"{path}: the history was bucketed into {index.get('user_buckets')} user buckets, "
                         f"this job wants {buckets}; rerun make history with engine.user_buckets={buckets}")
    return index
