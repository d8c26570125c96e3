"""The Ray Data engine (`engine=ray`) against the local engine: same history answers, same samples,
same shard bytes; and its parts (bucketing, the sorted-run merge, samples as Arrow rows) against
expectations computed here."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from data_pipelines import contract
from data_pipelines.history_store import HistoryStore, HistoryStoreConfig, play_events, stay_events
from data_pipelines.jobs import run_build_history, run_streams
from data_pipelines.ray_engine.buckets import bucket_of
from data_pipelines.ray_engine.merge import merge_sorted_runs, rebatch
from data_pipelines.ray_engine.rows import SORT_KEY, to_micro_batch, to_table
from data_pipelines.streams import codec
from tests.conftest import compose_config

MASK64 = (1 << 64) - 1


def _splitmix_finaliser(x: int) -> int:
    """splitmix64's output mix, in Python integers (the independent reference)."""
    x &= MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def test_bucket_of_is_the_splitmix_finaliser_modulo_the_bucket_count():
    ids = np.array([0, 1, 2, 7, 12345, 2**40 + 3, -1, -2**63], dtype=np.int64)
    expected = [_splitmix_finaliser(int(i) & MASK64) % 16 for i in ids]
    assert bucket_of(ids, 16).tolist() == expected
    spread = np.bincount(bucket_of(np.arange(64_000), 64), minlength=64)
    assert spread.min() > 800 and spread.max() < 1200  # every bucket used, none flooded


def test_a_store_of_one_bucket_of_users_answers_their_queries_as_the_store_of_everyone(tiny_world):
    impressions = pd.read_parquet(tiny_world.canonical.live_impressions)
    plays = pd.read_parquet(tiny_world.canonical.short_plays)
    cfg = HistoryStoreConfig(max_events=64, short_long_view_ms=10_000, live_long_view_ms=30_000)
    everyone = HistoryStore.build(plays, impressions, cfg)
    events = pd.concat([play_events(plays, cfg), stay_events(impressions, cfg)], ignore_index=True)  # other order
    bucket = bucket_of(events["user_id"].to_numpy(), 4)
    rng = np.random.default_rng(0)
    for b in range(4):
        store = HistoryStore.from_events(events[bucket == b].sample(frac=1.0, random_state=b), cfg.max_events)
        users = rng.choice(store.user_ids, 500)
        t = rng.integers(everyone.ts.min(), everyone.ts.max(), 500)
        got, want = store.query_batch(users, t), everyone.query_batch(users, t)
        assert np.array_equal(got[1] - got[0], want[1] - want[0])
        for field in ("item_id", "ts", "watch_ms", "domain"):
            assert np.array_equal(store.gather(*got, 50, field), everyone.gather(*want, 50, field)), field


def _random_runs(rng, n_runs: int, rows: int) -> list[pd.DataFrame]:
    runs = []
    for r in range(n_runs):
        n = int(rng.integers(0, rows))
        frame = pd.DataFrame({"report_ts": rng.integers(0, 50, n), "impression_id": rng.integers(0, 20, n),
                              "kind": rng.integers(0, 3, n).astype(np.int8), "run": r, "row": np.arange(n)})
        runs.append(frame.sort_values(SORT_KEY, kind="stable").reset_index(drop=True))
    return runs


def _blocks(frame: pd.DataFrame, size: int):
    for start in range(0, len(frame), size):
        yield pa.Table.from_pandas(frame.iloc[start:start + size], preserve_index=False)


@pytest.mark.parametrize("block", [1, 3, 64])
def test_merging_sorted_runs_gives_every_row_once_in_key_order(block):
    rng = np.random.default_rng(block)
    runs = _random_runs(rng, 7, 200)  # heavy ties within and across runs; some runs may be empty
    merged = pa.concat_tables(list(merge_sorted_runs([_blocks(r, block) for r in runs]))).to_pandas()
    everything = pd.concat(runs, ignore_index=True)
    assert len(merged) == len(everything)
    keys = merged[SORT_KEY].to_numpy()
    assert (np.diff(keys[:, 0]) >= 0).all()
    order = np.lexsort(keys.T[::-1])  # a sorted sequence is its own lexsort
    assert np.array_equal(order, np.arange(len(merged)))
    assert sorted(zip(merged["run"], merged["row"])) == sorted(zip(everything["run"], everything["row"]))


def test_rebatch_cuts_exactly_sized_tables_in_order():
    tables = [pa.table({"x": np.arange(a, b)}) for a, b in ((0, 5), (5, 6), (6, 6), (6, 30))]
    out = list(rebatch(tables, 8))
    assert [t.num_rows for t in out] == [8, 8, 8, 6]
    assert np.array_equal(np.concatenate([t.column("x").to_numpy() for t in out]), np.arange(30))


def _micro_batch(rng, n: int) -> dict[str, np.ndarray]:
    arrays = {"impression_id": np.arange(n, dtype=np.int64), "request_ts": rng.integers(0, 9, n),
              "report_ts": np.sort(rng.integers(0, 9, n)), "kind": rng.integers(0, 4, n).astype(np.int8),
              "state": rng.integers(0, 4, (n, len(contract.TASKS))).astype(np.int8),
              "dense": rng.normal(size=(n, len(contract.DENSE_FEATURES))).astype(np.float32)}
    for f in contract.SPARSE_FEATURES:
        arrays[contract.sparse_key(f)] = rng.integers(0, 99, n).astype(np.int32)
    for g in contract.GSU_NAMES:
        lengths = rng.integers(0, 6, n).astype(np.int32)
        arrays[contract.lengths_key(g)] = lengths
        for f in contract.SEQUENCE_FIELDS:
            dtype = np.int32 if f in contract.SEQUENCE_ID_FIELDS else np.int8
            arrays[contract.sequence_key(g, f)] = rng.integers(0, 17, int(lengths.sum())).astype(dtype)
    return {k: arrays[k] for k in contract.micro_batch_keys()}


def test_samples_survive_arrow_rows_an_ipc_file_and_slicing_as_the_same_encoded_bytes():
    arrays = _micro_batch(np.random.default_rng(3), 40)
    sink = pa.BufferOutputStream()
    table = to_table(arrays)
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table, max_chunksize=7)
    back = pa.ipc.open_file(io.BytesIO(sink.getvalue().to_pybytes())).read_all()
    assert codec.encode(to_micro_batch(back)) == codec.encode(arrays)
    part = to_micro_batch(back.slice(10, 5))
    lengths = arrays[contract.lengths_key("short")]
    first = int(lengths[:10].sum())
    assert np.array_equal(part[contract.sequence_key("short", "item")],
                          arrays[contract.sequence_key("short", "item")][first:first + int(lengths[10:15].sum())])
    assert np.array_equal(part["state"], arrays["state"][10:15])


def test_streams_on_ray_refuse_a_history_that_was_not_bucketed_or_bucketed_otherwise(tiny_world, tmp_path):
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "canonical").symlink_to(tiny_world.canonical.dir)
    base = [f"data.output_dir={root}", "world=tiny", "engine=ray", f"paths.reports_dir={tmp_path}", "progress=false"]
    with pytest.raises(FileNotFoundError, match="buckets.json not found: build the bucketed history first"):
        run_streams(compose_config("streams", base))
    (root / "history" / "user_buckets").mkdir(parents=True)
    (root / "history" / "user_buckets" / "buckets.json").write_text(json.dumps({"user_buckets": 3}))
    with pytest.raises(ValueError, match="bucketed into 3 user buckets, this job wants 64"):
        run_streams(compose_config("streams", base))


def _micro_batches(shard_dir):
    """Every micro-batch of a stream's shards, in manifest order, read with tarfile and the codec."""
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    for shard in manifest["shards"]:
        with tarfile.open(shard_dir / shard["file"]) as tar:
            for member in tar.getmembers():
                yield codec.decode(tar.extractfile(member).read())


def _samples_by_key(shard_dir) -> dict[tuple, dict]:
    """Every sample of a stream's shards, keyed by (impression id, report time, kind), every field."""
    out = {}
    for arrays in _micro_batches(shard_dir):
        offsets = {g: np.concatenate([[0], np.cumsum(arrays[contract.lengths_key(g)])]) for g in contract.GSU_NAMES}
        for i in range(len(arrays["report_ts"])):
            sample = {k: arrays[k][i].tolist() for k in ("request_ts", "state", "dense")}
            sample.update({k: int(arrays[contract.sparse_key(k)][i]) for k in contract.SPARSE_FEATURES})
            for g in contract.GSU_NAMES:
                for f in contract.SEQUENCE_FIELDS:
                    sample[f"{g}.{f}"] = arrays[contract.sequence_key(g, f)][offsets[g][i]:offsets[g][i + 1]].tolist()
            key = (int(arrays["impression_id"][i]), int(arrays["report_ts"][i]), int(arrays["kind"][i]))
            assert key not in out
            out[key] = sample
    return out


@pytest.mark.slow
def test_history_and_streams_on_ray_write_the_same_samples_and_bytes_as_the_local_engine(tiny_streams, tmp_path):
    from data_pipelines.engines import RayEngine
    from data_pipelines.ray_engine.session import ray_session

    root = tmp_path / "tiny"
    root.mkdir()
    (root / "canonical").symlink_to(tiny_streams.canonical.dir)
    overrides = [f"data.output_dir=file://{root}", "world=tiny", "engine=ray", "engine.workers=2",
                 "engine.user_buckets=8", "engine.room_buckets=2", "engine.memory_gb=2",
                 f"paths.reports_dir={tmp_path / 'reports'}", "progress=false"]
    with ray_session(RayEngine(workers=2, memory_gb=2), progress=False):  # one Ray for both jobs
        index, _ = run_build_history(compose_config("simulate", overrides))
        build = run_streams(compose_config("streams", overrides))
    local = HistoryStore.load(tiny_streams.history)
    assert (index["interactions"], index["users"], index["user_buckets"]) == (len(local), len(local.user_ids), 8)
    assert not (root / ".ray-scratch").exists()

    for name in ("realtime", "fast_slow", "final"):
        mine, theirs = json.loads((root / "streams" / name / "manifest.json").read_text()), tiny_streams.manifest(name)
        assert build.sample_counts[name] == theirs["samples"]
        assert mine == theirs, name  # same shard boundaries, time ranges and sha256 of every shard
        ray_samples, local_samples = _samples_by_key(root / "streams" / name), _samples_by_key(tiny_streams.stream(name))
        assert ray_samples.keys() == local_samples.keys()
        assert all(ray_samples[k] == local_samples[k] for k in local_samples), name
    assert (json.loads((root / "streams" / "label_consistency.json").read_text())
            == json.loads(tiny_streams.label_consistency.with_suffix(".json").read_text()))
    with np.load(root / "streams" / "vocab.npz") as mine, np.load(tiny_streams.vocab) as theirs:
        assert all(np.array_equal(mine[k], theirs[k]) for k in theirs.files)
