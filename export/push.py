"""The push: what a running ranker takes from the trainer between full exports, without reloading
or recompiling. Writer here; the one reader is the ranker (serving/ranker/src/push.cpp).

A push is one file, `<export dir>/pushes/<export_id>/<sequence:010d>.push` (export/export_dir.py), in
the safetensors layout (an 8-byte little-endian header length, a JSON header naming every tensor's dtype, shape and
byte range, then the raw bytes; no pickles). It holds, for the export whose model.json carries
`export_id`:

    rows/<table>     int64   [n]        the rows of the table touched since the previous push
    values/<table>   float32 [n, dim]   their values now
    dense/<name>     float32 [shape]    every other trained tensor (`dense` pushes only)

and in the header's `__metadata__` (strings): `format` ("moment-cross-push"), `format_version`,
`export_id`, `fingerprint` (model.json `updatable.fingerprint`: the names and shapes a push may
touch), `sequence` (1, 2, ... per export), `dense` ("1" or "0"), `data_time_ms` (the data clock of
the newest sample learned), `learned_unix_ms` (wall clock when the newest learned batch was learned)
and `crc32` (zlib's CRC-32 of every byte after the header).

Pushes are cumulative: push k replaces the rows it lists and, when dense, every dense tensor, so the
export plus pushes 1..k holds the trainer's model at k. A table untouched in an interval has no
entry. The file is written under a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from export.export_dir import push_file

PUSH_FORMAT = "moment-cross-push"
PUSH_FORMAT_VERSION = 1
TABLE_PREFIX = "model.lookup."  # the embedding tables among the serving tensors


def updatable_spec(serving_tensors: Mapping[str, torch.Tensor]) -> dict:
    """model.json `updatable`: what a push may replace (tables by row, the rest whole) and the
    fingerprint a push must carry to be applied to this model's shape."""
    tables = {n: {"rows": int(t.shape[0]), "dim": int(t.shape[1])} for n, t in sorted(serving_tensors.items())
              if n.startswith(TABLE_PREFIX)}
    dense = {n: list(t.shape) for n, t in sorted(serving_tensors.items()) if n not in tables}
    shape = json.dumps({"tables": tables, "dense": dense}, sort_keys=True).encode()
    return {"fingerprint": hashlib.sha256(shape).hexdigest()[:16], "tables": tables, "dense": dense}


def encode_push(export_id: str, fingerprint: str, sequence: int, tables: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                dense: Mapping[str, torch.Tensor] | None, data_time_ms: int, learned_unix_ms: int) -> bytes:
    """The push's bytes. `tables`: name -> (rows [n] int64, values [n, dim] float32); `dense`: name ->
    tensor, or None for a push of rows only. Written as given: checking them is the reader's job."""
    tensors: dict[str, torch.Tensor] = {}
    for name, (rows, values) in tables.items():
        tensors[f"rows/{name}"] = rows.detach().to(torch.int64).contiguous()
        tensors[f"values/{name}"] = values.detach().contiguous()
    for name, value in (dense or {}).items():
        tensors[f"dense/{name}"] = value.detach().contiguous()
    metadata = {"format": PUSH_FORMAT, "format_version": str(PUSH_FORMAT_VERSION), "export_id": export_id,
                "fingerprint": fingerprint, "sequence": str(int(sequence)), "dense": "1" if dense is not None else "0",
                "data_time_ms": str(int(data_time_ms)), "learned_unix_ms": str(int(learned_unix_ms))}
    # The data section does not depend on the header: checksum it once written without the sum.
    unsummed = safetensors_bytes(tensors, metadata=metadata)
    header_length = struct.unpack("<Q", unsummed[:8])[0]
    crc = zlib.crc32(unsummed[8 + header_length:])
    return safetensors_bytes(tensors, metadata={**metadata, "crc32": str(crc)})


def write_push(directory: Path, data: bytes, sequence: int) -> Path:
    """Puts a push's bytes in place atomically; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = push_file(directory, sequence)
    tmp = directory / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
