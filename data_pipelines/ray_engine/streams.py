"""`make streams engine=ray`: the label streams, request-time features and GSU sequences as Ray Data
stages over buckets, then one global sort by report time per stream and the project's shards.

    impressions --tag--> groupby(room bucket): the room's state --> scratch, by user bucket
    actions --tag--> scratch, by user bucket
    one task per user bucket: its history store, the users' features, five GSUs, every stream's
      samples and their label-consistency counts --> scratch, one parquet file per bucket and stream
    per stream: the buckets' runs, each already in report order --merge--> micro-batches --> shards

Each stage writes to the scratch folder, which bounds what is held at once (a bucket; a block per
run in the merge, merge.py) and keeps Ray Data's laziness from computing a stage twice. The vocabulary and the
content embeddings are the only whole-data-set objects, and they are small (ids, one row per item)."""

from __future__ import annotations

import io
import logging
import posixpath
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from tqdm import tqdm

from data_pipelines.contract import ROOM_STATE_FEATURES
from data_pipelines.dataset import FINAL
from data_pipelines.engines import RayEngine
from data_pipelines.ray_engine.buckets import bucket_of
from data_pipelines.ray_engine.history import load_bucket_store, read_bucket_index
from data_pipelines.ray_engine.merge import merge_sorted_runs, rebatch
from data_pipelines.ray_engine.rows import to_micro_batch, to_table
from data_pipelines.ray_engine.session import ray_session, shuffle_partitions
from data_pipelines.ray_engine.storage import Storage
from data_pipelines.streams.build import (ShardLayout, align_embedding, gaps_of, manifest_schema, retrieve_sequences,
                                          write_reports)
from data_pipelines.streams.consistency import consistency_counts, merge_consistency_counts, summarize_consistency
from data_pipelines.streams.features import (FeatureSpec, Vocabularies, assemble_features, room_rows, room_state,
                                             user_activity)
from data_pipelines.streams.labels import LabelRules
from data_pipelines.streams.gsu import GsuRetriever
from data_pipelines.streams.shards import ImpressionFeatures, micro_batch, write_micro_batches

log = logging.getLogger(__name__)

STREAM_COLUMN = "stream"
# Samples per record batch of a bucket's sorted run: what the merge holds per run (~2-10 MB).
RUN_BLOCK_ROWS = 4096


@dataclass(frozen=True)
class StreamSpec:
    """What every task needs to know, the same for all of them (put in the object store once)."""

    storage: Storage
    scratch: str
    user_buckets: int
    room_buckets: int
    lives: pd.DataFrame
    vocab: Vocabularies
    photo_embedding: np.ndarray
    live_embedding: np.ndarray
    features: FeatureSpec
    rules: LabelRules

    def actions_dir(self) -> str:
        return posixpath.join(self.scratch, "actions")

    def impressions_dir(self) -> str:
        """Impressions with their room's state, one folder per user bucket."""
        return posixpath.join(self.scratch, "impressions")

    def samples_dir(self, stream: str) -> str:
        """One sorted run per user bucket (Arrow IPC files)."""
        return posixpath.join(self.scratch, "samples", stream)

    def run_path(self, stream: str, bucket: int) -> str:
        return posixpath.join(self.samples_dir(stream), f"{bucket:05d}.arrow")

    def counts_path(self, bucket: int) -> str:
        return posixpath.join(self.scratch, "consistency", f"{bucket:05d}.npz")


@dataclass
class RayStreamBuild:
    """What `describe_streams` reports of a build (StreamBuild's summary, without the arrays)."""

    impression_count: int
    sample_counts: dict[str, int]
    consistency: dict[str, dict]
    gaps: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- the stages' functions
# The Ray Data stages get only the room table and the bucket counts (the whole spec, with its
# embeddings, would be shipped with every task); the bucket tasks get the spec by reference.
def _tag_impressions(batch: pd.DataFrame, lives: pd.DataFrame, room_buckets: int, user_buckets: int) -> pd.DataFrame:
    room_row = room_rows(batch, lives)
    # Unknown rooms (-1) all land in one bucket, as they share one counter in the local engine.
    return batch.assign(room_row=room_row, room_bucket=bucket_of(room_row + 1, room_buckets),
                        user_bucket=bucket_of(batch["user_id"].to_numpy(), user_buckets))


def _with_room_state(group: pd.DataFrame, lives: pd.DataFrame) -> pd.DataFrame:
    """Every impression of the bucket's rooms, with the room's state at its request."""
    return group.assign(**room_state(group, lives, group["room_row"].to_numpy()))


def _tag_actions(batch: pd.DataFrame, user_buckets: int) -> pd.DataFrame:
    return batch.assign(user_bucket=bucket_of(batch["user_id"].to_numpy(), user_buckets))


def _bucket_partition(spec: StreamSpec, folder: str, bucket: int,
                      columns: list[str] | None = None) -> pd.DataFrame | None:
    """One user bucket's rows of a scratch folder written with partition_cols=["user_bucket"]
    (None when no row fell in that bucket)."""
    path = posixpath.join(folder, f"user_bucket={bucket}")
    if not spec.storage.exists(path):
        return None
    return pads.dataset(path, filesystem=spec.storage.fs, format="parquet").to_table(columns=columns).to_pandas()


def _bucket_actions(spec: StreamSpec, bucket: int) -> pd.DataFrame:
    columns = ["impression_id", "ts", "action"]
    actions = _bucket_partition(spec, spec.actions_dir(), bucket, columns)
    return pd.DataFrame({c: np.zeros(0, np.int64) for c in columns}) if actions is None else actions


def _bucket_impressions(spec: StreamSpec, bucket: int) -> pd.DataFrame | None:
    impressions = _bucket_partition(spec, spec.impressions_dir(), bucket)
    if impressions is None:
        return None
    return impressions.sort_values("impression_id", kind="stable").reset_index(drop=True)  # canonical order


def _bucket_samples(bucket: int, spec: StreamSpec) -> list[tuple[int, str, int]]:
    """Every stream's samples of one user bucket: features, GSUs and labels from the bucket's own
    history store, written as rows (rows.to_table) to the scratch folder with the bucket's
    label-consistency counts. Returns (bucket, stream, samples written) per stream."""
    impressions = _bucket_impressions(spec, bucket)
    if impressions is None:
        return []
    written = []
    for name, table in _samples_of(spec, bucket, impressions):  # one stream's table at a time
        with spec.storage.open_output(spec.run_path(name, bucket)) as sink, \
                pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
            writer.write_table(table, max_chunksize=RUN_BLOCK_ROWS)
        written.append((bucket, name, table.num_rows))
    return written


def _run_bucket_tasks(spec: StreamSpec, progress: bool) -> pd.DataFrame:
    """One Ray task per user bucket (no shuffle of the samples: each task reads its bucket's
    impressions and actions and writes its own runs, so nothing bigger than a bucket is held).
    Plain tasks rather than a Ray Data map: the spec (embeddings, vocabulary) is put in the object
    store once and each task gets it by reference, which Ray Data's fn_args does not do."""
    import ray

    task = ray.remote(num_cpus=1)(_bucket_samples)
    spec_ref = ray.put(spec)
    pending = [task.remote(bucket, spec_ref) for bucket in range(spec.user_buckets)]
    rows = []
    with tqdm(total=len(pending), desc="user buckets", unit="bucket", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rows += ray.get(done[0])  # a task's error is raised here, with its bucket in the message
            bar.update(1)
    return pd.DataFrame(rows, columns=["bucket", STREAM_COLUMN, "samples"])


def _samples_of(spec: StreamSpec, bucket: int, impressions: pd.DataFrame) -> Iterator[tuple[str, pa.Table]]:
    """(stream, table of its samples) of one user bucket's impressions (in canonical order), made
    one stream at a time."""
    store = load_bucket_store(spec.storage, bucket, spec.user_buckets)
    room = {name: impressions[name].to_numpy() for name in ROOM_STATE_FEATURES}
    sparse, dense = assemble_features(impressions, spec.lives, impressions["room_row"].to_numpy(), room,
                                      user_activity(impressions, store), spec.vocab, spec.features.columns)
    retriever = GsuRetriever.build(store, spec.vocab, spec.photo_embedding, spec.live_embedding,
                                   length=spec.features.gsu_length, max_pairs=spec.features.max_pairs)
    features = ImpressionFeatures(impressions["impression_id"].to_numpy(), impressions["request_ts"].to_numpy(),
                                  sparse, dense, retrieve_sequences(retriever, impressions))
    actions = _bucket_actions(spec, bucket)
    unknown = ~np.isin(actions["impression_id"].to_numpy(), features.impression_id)
    if unknown.any():  # ingestion attributes an action to its user's own stay; anything else is corrupt
        raise ValueError(f"live_actions: impression {int(actions['impression_id'].to_numpy()[unknown][0])} "
                         f"of an action by a user of bucket {bucket} is not among that user's impressions")
    imps, samples = spec.rules.emit(impressions, actions)
    _save_counts(spec, bucket, {name: consistency_counts(samples[name], imps, spec.rules.tasks)
                                for name in spec.rules.engines})
    for name, stream_samples in samples.items():
        yield name, to_table(micro_batch(stream_samples, slice(0, len(stream_samples)), features))


def _save_counts(spec: StreamSpec, bucket: int, counts: dict[str, dict]) -> None:
    arrays = {}
    for stream, per_task in counts.items():
        for task, c in per_task.items():
            for key, value in c.items():
                arrays[f"{stream}.{task}.{key}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    spec.storage.write_bytes(spec.counts_path(bucket), buffer.getvalue())


def _load_counts(spec: StreamSpec, bucket: int) -> dict[str, dict]:
    counts: dict[str, dict] = {}
    with np.load(io.BytesIO(spec.storage.read_bytes(spec.counts_path(bucket))), allow_pickle=False) as data:
        for key in data.files:
            stream, task, name = key.split(".")
            value = data[key]
            counts.setdefault(stream, {}).setdefault(task, {})[name] = value if name == "delays_s" else int(value)
    return counts


# ---------------------------------------------------------------- the driver
def _unique_ids(storage: Storage, path: str, columns: list[str]) -> dict[str, list[np.ndarray]]:
    """Each column's distinct values, read a batch at a time (never the whole table at once)."""
    out: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    if not storage.exists(path):
        return out
    for batch in pads.dataset(path, filesystem=storage.fs, format="parquet").to_batches(columns=columns,
                                                                                        batch_size=1 << 20):
        for c in columns:
            out[c].append(np.unique(batch.column(c).to_numpy()))
    return out


def _spec(storage: Storage, scratch: str, engine: RayEngine, rules: LabelRules, features: FeatureSpec) -> StreamSpec:
    canonical = storage.layout.canonical
    lives = storage.read_parquet(storage.path(canonical.lives))
    photos = storage.read_parquet_optional(storage.path(canonical.photos))
    users = _unique_ids(storage, storage.path(canonical.live_impressions), ["user_id"])["user_id"]
    plays = _unique_ids(storage, storage.path(canonical.short_plays), ["user_id", "photo_id"])
    vocab = Vocabularies.of_ids(lives, photos, users + plays["user_id"], plays["photo_id"], features.columns)

    def embedding(kind: str) -> np.ndarray | None:
        path = storage.path(canonical.embedding(kind))
        return storage.load_npy(path) if storage.exists(path) else None

    return StreamSpec(storage, scratch, engine.user_buckets, engine.room_buckets, lives, vocab,
                      align_embedding(embedding("photo"), photos, "photo_id", vocab.photo.ids),
                      align_embedding(embedding("live"), lives, "live_id", vocab.live.ids),
                      features, rules)


def _gaps(storage: Storage) -> list[str]:
    canonical = storage.layout.canonical
    plays = storage.path(canonical.short_plays)
    has_plays = storage.exists(plays) and pq.ParquetFile(plays, filesystem=storage.fs).metadata.num_rows > 0
    return gaps_of(has_plays, storage.exists(storage.path(canonical.embedding("photo"))),
                   storage.exists(storage.path(canonical.embedding("live"))))


def build_streams_ray(storage: Storage, reports_dir: Path, engine: RayEngine, rules: LabelRules, features: FeatureSpec,
                      layout: ShardLayout, progress: bool = True) -> RayStreamBuild:
    import ray.data

    layout_of = storage.layout
    canonical = layout_of.canonical
    for path in (canonical.lives, canonical.live_impressions, canonical.live_actions):
        if not storage.exists(storage.path(path)):
            raise FileNotFoundError(f"{storage.path(path)} not found: ingest the data first (make simulate / make ingest)")
    read_bucket_index(storage, engine.user_buckets)
    gaps = _gaps(storage)
    for gap in gaps:
        log.warning("%s: %s", storage.path(canonical.dir), gap)
    scratch = engine.scratch_dir or storage.under(".ray-scratch")
    seconds: dict[str, float] = {}
    with ray_session(engine, progress) as startup_s:
        seconds["engine_start"] = startup_s
        start = time.perf_counter()
        spec = _spec(storage, scratch, engine, rules, features)
        storage.remove_dir(scratch)
        seconds["vocabulary"] = time.perf_counter() - start

        start = time.perf_counter()
        fs = storage.fs
        (ray.data.read_parquet(storage.path(canonical.live_actions), filesystem=fs)
         .select_columns(["impression_id", "user_id", "ts", "action"])
         .map_batches(_tag_actions, batch_format="pandas", fn_args=(engine.user_buckets,))
         .write_parquet(spec.actions_dir(), filesystem=fs, partition_cols=["user_bucket"]))
        n_impressions = pq.ParquetFile(storage.path(canonical.live_impressions), filesystem=fs).metadata.num_rows
        (ray.data.read_parquet(storage.path(canonical.live_impressions), filesystem=fs)
         .map_batches(_tag_impressions, batch_format="pandas",
                      fn_args=(spec.lives, engine.room_buckets, engine.user_buckets))
         .groupby("room_bucket", num_partitions=shuffle_partitions(engine.room_buckets))
         .map_groups(_with_room_state, batch_format="pandas", fn_args=(spec.lives,))
         .write_parquet(spec.impressions_dir(), filesystem=fs, partition_cols=["user_bucket"]))
        written = _run_bucket_tasks(spec, progress)
        seconds["features_gsu_labels"] = time.perf_counter() - start

        start = time.perf_counter()
        schema = manifest_schema(spec.vocab, rules.tasks, features)
        sample_counts = {}
        for name in [*rules.engines, FINAL]:
            runs = written[written[STREAM_COLUMN] == name]
            sample_counts[name] = _write_stream(spec, name, layout, schema, sorted(runs["bucket"]), progress)["samples"]
            if sample_counts[name] != int(runs["samples"].sum()):  # a lost or doubled run must not pass as a stream
                raise RuntimeError(f"stream {name}: {sample_counts[name]:,} samples sharded, the buckets wrote "
                                   f"{int(runs['samples'].sum()):,}")
        seconds["merge_and_shards"] = time.perf_counter() - start

        buffer = io.BytesIO()
        spec.vocab.save(buffer)
        storage.write_bytes(storage.path(layout_of.vocab), buffer.getvalue())
        parts = [_load_counts(spec, b) for b in range(engine.user_buckets)
                 if storage.exists(spec.counts_path(b))]
        consistency = {name: summarize_consistency(merge_consistency_counts([p[name] for p in parts]))
                       for name in rules.engines}
    _write_report_files(storage, consistency, sample_counts, reports_dir)
    storage.remove_dir(scratch)
    return RayStreamBuild(n_impressions, sample_counts, consistency, gaps, seconds)


def _write_stream(spec: StreamSpec, name: str, layout: ShardLayout, schema: dict, buckets: list[int],
                  progress: bool) -> dict:
    """One stream's samples in report order (the buckets' sorted runs merged), cut into the project's shards."""
    runs = [_read_run(spec, spec.run_path(name, bucket)) for bucket in buckets]
    batches = (to_micro_batch(table) for table in rebatch(merge_sorted_runs(runs), layout.micro_batch_size))
    return write_micro_batches(batches, spec.storage.path(spec.storage.layout.stream(name)), schema,
                               micro_batches_per_shard=layout.micro_batches_per_shard,
                               filesystem=spec.storage.fs, progress=progress)


def _read_run(spec: StreamSpec, path: str):
    """A sorted run's record batches, one at a time."""
    with spec.storage.fs.open_input_file(path) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])


def _write_report_files(storage: Storage, consistency: dict, sample_counts: dict[str, int], reports_dir: Path) -> None:
    """The report in reports/ (local) and beside the shards (on the data set's filesystem)."""
    name = storage.layout.label_consistency.name
    write_reports(consistency, sample_counts, storage.layout.name, [reports_dir / name])
    for suffix in (".json", ".md"):
        local = reports_dir / (name + suffix)
        storage.write_bytes(storage.path(storage.layout.label_consistency) + suffix, local.read_bytes())
