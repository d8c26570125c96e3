"""WebDataset shards of one stream: samples in report_ts order, grouped into micro-batches (one
msgpack tar member each, keyed as data_pipelines/contract.py says), plus a manifest with counts,
time ranges and the feature schema."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm

from data_pipelines import contract
from data_pipelines.streams import codec
from data_pipelines.streams.gsu import Sequences
from data_pipelines.streams.labels import Samples

MANIFEST = "manifest.json"
MEMBER_SUFFIX = "msgpack"


@dataclass(frozen=True)
class ImpressionFeatures:
    """Everything known at request time about N impressions; samples point into these rows."""

    impression_id: np.ndarray  # [N]
    request_ts: np.ndarray  # [N]
    sparse: dict[str, np.ndarray]  # name -> [N] table rows
    dense: np.ndarray  # [N, D] float32
    sequences: dict[str, Sequences]  # GSU name -> ragged sequences of the N requests


def micro_batch(samples: Samples, rows: slice, features: ImpressionFeatures) -> dict[str, np.ndarray]:
    """The arrays of samples[rows]: labels from the sample, features from its impression."""
    imp = samples.impression[rows]
    arrays = {
        "impression_id": features.impression_id[imp],
        "request_ts": features.request_ts[imp],
        "report_ts": samples.report_ts[rows],
        "kind": samples.kind[rows],
        "state": samples.state[rows],
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shards(samples: Samples, features: ImpressionFeatures, out_dir: Path, schema: dict, *,
                 micro_batch_size: int, micro_batches_per_shard: int, progress: bool = True) -> dict:
    """Write `samples` (already in report_ts order) as shard-NNNNNN.tar files and manifest.json."""
    if np.any(np.diff(samples.report_ts) < 0):
        raise ValueError("samples must be sorted by report_ts before they are sharded")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("shard-*.tar"):
        stale.unlink()
    n = len(samples)
    n_micro = -(-n // micro_batch_size)
    shards = []
    bar = tqdm(total=n, desc=f"shards {out_dir.name}", unit="sample", disable=not progress)
    for shard_index, first_mb in enumerate(range(0, n_micro, micro_batches_per_shard)):
        name = f"shard-{shard_index:06d}.tar"
        tmp = out_dir / f".{name}.tmp"
        first_row = first_mb * micro_batch_size
        last_row = min((first_mb + micro_batches_per_shard) * micro_batch_size, n)
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, encoder=False, mtime=0.0)  # fixed mtime: reproducible bytes
            for mb, start in enumerate(range(first_row, last_row, micro_batch_size)):
                rows = slice(start, min(start + micro_batch_size, last_row))
                writer.write({"__key__": f"mb{first_mb + mb:08d}",
                              MEMBER_SUFFIX: codec.encode(micro_batch(samples, rows, features))})
                bar.update(rows.stop - rows.start)
            writer.close()
        os.replace(tmp, out_dir / name)  # a shard appears whole or not at all
        shards.append({
            "file": name,
            "samples": last_row - first_row,
            "micro_batches": -(-(last_row - first_row) // micro_batch_size),
            "report_ts_min": int(samples.report_ts[first_row]),
            "report_ts_max": int(samples.report_ts[last_row - 1]),
            "request_ts_min": int(features.request_ts[samples.impression[first_row:last_row]].min()),
            "request_ts_max": int(features.request_ts[samples.impression[first_row:last_row]].max()),
            "sha256": _sha256(out_dir / name),
        })
    bar.close()
    manifest = {"schema_version": codec.SCHEMA_VERSION, "samples": n, "shards": shards, **schema}
    with open(out_dir / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def contract_schema() -> dict:
    """What every manifest says of the data contract; `read_manifest` holds it to this code's."""
    return {"sparse_features": list(contract.SPARSE_FEATURES), "dense_features": list(contract.DENSE_FEATURES),
            "gsu_names": list(contract.GSU_NAMES), "sequence_fields": list(contract.SEQUENCE_FIELDS),
            "side_rows": dict(contract.SIDE_ROWS)}


def read_manifest(shard_dir: str | Path) -> dict:
    """The manifest of one stream's shards; refuses one written under another data contract."""
    path = Path(shard_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: write the shards first (make streams)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); rebuild with make streams") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != codec.SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(f"{path}: shard schema v{version}, this code reads v{codec.SCHEMA_VERSION}; "
                         f"rebuild with make streams")
    differs = [key for key, value in contract_schema().items() if manifest.get(key) != value]
    if differs:
        raise ValueError(f"{path}: {differs} differ from this code's data contract (data_pipelines/contract.py); "
                         f"rebuild with make streams")
    return manifest
