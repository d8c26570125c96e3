"""A stream's manifest.json: what its shards hold (counts, time ranges, checksums), the tasks, the
table sizes, the feature spec the features were computed with, and the data contract they were
written under. Written last by the shard writer (data_pipelines/streams/shards.py): a shard folder
is complete once it exists. Every reader goes through `read_manifest`, which refuses a manifest of
another layout version or data contract."""

from __future__ import annotations

import json
from pathlib import Path

from data_pipelines import contract

MANIFEST = "manifest.json"


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
    if not isinstance(manifest, dict) or manifest.get("schema_version") != contract.SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(f"{path}: shard schema v{version}, this code reads v{contract.SCHEMA_VERSION}; "
                         f"rebuild with make streams")
    differs = [key for key, value in contract_schema().items() if manifest.get(key) != value]
    if differs:
        raise ValueError(f"{path}: {differs} differ from this code's data contract (data_pipelines/contract.py); "
                         f"rebuild with make streams")
    return manifest
