"""WebDataset shards of one stream: samples in report_ts order, grouped into micro-batches (one
msgpack tar member each, keyed as data_pipelines/contract.py says), plus a manifest with counts,
time ranges and the feature schema."""

from __future__ import annotations

import hashlib
import json
import io
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
from tqdm import tqdm

from data_pipelines import contract
from data_pipelines.contract import SCHEMA_VERSION
from data_pipelines.manifest import MANIFEST
from data_pipelines.streams import codec
from data_pipelines.streams.gsu import Sequences
from data_pipelines.streams.labels import Samples

MEMBER_SUFFIX = "msgpack"


@dataclass(frozen=True)
class ImpressionFeatures:
    """Everything known at request time about N impressions; samples point into these rows."""

    impression_id: np.ndarray  # [N]
    request_ts: np.ndarray  # [N]
    sparse: dict[str, np.ndarray]  # name -> [N] table rows
    dense: np.ndarray  # [N, D] float32
    sequences: dict[str, Sequences]  # GSU name -> ragged sequences of the N requests


LABEL_KEYS = ("report_ts", "kind", "state")  # what a sample adds to its impression's request arrays


def micro_batch(samples: Samples, rows: slice, features: ImpressionFeatures) -> dict[str, np.ndarray]:
    """The arrays of samples[rows]: labels from the sample, features from its impression."""
    imp = samples.impression[rows]
    labels = {"report_ts": samples.report_ts[rows], "kind": samples.kind[rows], "state": samples.state[rows]}
    return with_labels(request_arrays(features, imp), labels)


def with_labels(request: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A micro-batch from its impressions' request arrays and its samples' LABEL_KEYS, in the shard
    layout's key order (the live loop's label joiner builds its samples through here too)."""
    head = {"impression_id": request["impression_id"], "request_ts": request["request_ts"]}
    return {**head, **{k: labels[k] for k in LABEL_KEYS}, **{k: v for k, v in request.items() if k not in head}}


def request_arrays(features: ImpressionFeatures, imp: np.ndarray) -> dict[str, np.ndarray]:
    """What is known at request time about impressions `imp` (rows of `features`), in the shard
    layout: the ids, the dense features, the five GSU sequences."""
    arrays = {
        "impression_id": features.impression_id[imp],
        "request_ts": features.request_ts[imp],
        "dense": features.dense[imp],
    }
    for name in contract.SPARSE_FEATURES:
        arrays[contract.sparse_key(name)] = features.sparse[name][imp].astype(np.int32)
    for name in contract.GSU_NAMES:
        taken = features.sequences[name].take(imp)
        arrays[contract.lengths_key(name)] = taken.lengths
        for field in contract.SEQUENCE_FIELDS:
            arrays[contract.sequence_key(name, field)] = taken.fields[field]
    return arrays


def write_shards(samples: Samples, features: ImpressionFeatures, out_dir: Path, schema: dict, *,
                 micro_batch_size: int, micro_batches_per_shard: int, progress: bool = True) -> dict:
    """Write `samples` (already in report_ts order) as shard-NNNNNN.tar files and manifest.json."""
    n = len(samples)
    batches = (micro_batch(samples, slice(start, min(start + micro_batch_size, n)), features)
               for start in range(0, n, micro_batch_size))
    return write_micro_batches(batches, str(out_dir), schema, micro_batches_per_shard=micro_batches_per_shard,
                               total=n, progress=progress)


def write_micro_batches(batches: Iterable[dict[str, np.ndarray]], out_dir: str, schema: dict, *,
                        micro_batches_per_shard: int, filesystem: pafs.FileSystem | None = None,
                        total: int | None = None, progress: bool = True) -> dict:
    """Write micro-batches (arrays as `micro_batch` makes them, samples in report_ts order across all
    of them) as shard-NNNNNN.tar files of `micro_batches_per_shard` each, then manifest.json, on
    `filesystem` (local when None). Every engine writes its shards through here, so their bytes,
    checksums and manifest are the same for the same samples."""
    fs = filesystem or pafs.LocalFileSystem()
    fs.create_dir(out_dir, recursive=True)
    for stale in fs.get_file_info(pafs.FileSelector(out_dir)):
        if stale.base_name.startswith("shard-") and stale.base_name.endswith(".tar"):
            fs.delete_file(stale.path)
    shards: list[dict] = []
    last_report_ts = None
    bar = tqdm(total=total, desc=f"shards {posixpath.basename(out_dir)}", unit="sample", disable=not progress)
    shard: list[dict[str, np.ndarray]] = []
    for arrays in batches:
        report_ts = arrays["report_ts"]
        if np.any(np.diff(report_ts) < 0) or (last_report_ts is not None and len(report_ts)
                                              and report_ts[0] < last_report_ts):
            raise ValueError("samples must be sorted by report_ts before they are sharded")
        if len(report_ts):
            last_report_ts = report_ts[-1]
        shard.append(arrays)
        if len(shard) == micro_batches_per_shard:
            shards.append(_write_shard(fs, out_dir, len(shards), shard, first_mb=len(shards) * micro_batches_per_shard))
            bar.update(shards[-1]["samples"])
            shard = []
    if shard:
        shards.append(_write_shard(fs, out_dir, len(shards), shard, first_mb=len(shards) * micro_batches_per_shard))
        bar.update(shards[-1]["samples"])
    bar.close()
    manifest = {"schema_version": SCHEMA_VERSION, "samples": sum(s["samples"] for s in shards),
                "shards": shards, **schema}
    with fs.open_output_stream(posixpath.join(out_dir, MANIFEST)) as f:
        f.write(json.dumps(manifest, indent=1).encode())
    return manifest


def _write_shard(fs: pafs.FileSystem, out_dir: str, index: int, batches: list[dict[str, np.ndarray]],
                 first_mb: int) -> dict:
    """One shard file (written aside, then renamed: it appears whole or not at all) and its manifest entry."""
    import webdataset as wds  # here, not above: it imports torch (~2 s), which this module's other users never need

    name = f"shard-{index:06d}.tar"
    buffer = io.BytesIO()
    writer = wds.TarWriter(buffer, encoder=False, mtime=0.0)  # fixed mtime: reproducible bytes
    for mb, arrays in enumerate(batches):
        writer.write({"__key__": f"mb{first_mb + mb:08d}", MEMBER_SUFFIX: codec.encode(arrays)})
    writer.close()
    data = buffer.getvalue()
    tmp = posixpath.join(out_dir, f".{name}.tmp")
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, posixpath.join(out_dir, name))
    request_ts = np.concatenate([b["request_ts"] for b in batches])
    return {
        "file": name,
        "samples": len(request_ts),
        "micro_batches": len(batches),
        "report_ts_min": int(batches[0]["report_ts"][0]),
        "report_ts_max": int(batches[-1]["report_ts"][-1]),
        "request_ts_min": int(request_ts.min()),
        "request_ts_max": int(request_ts.max()),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
