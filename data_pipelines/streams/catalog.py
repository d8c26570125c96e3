"""The feature catalog: what the ranker's feature stage (serving/ranker/src/features) needs beyond
the event stream to compute a request's features exactly as `make streams` does — the vocabularies
that turn raw ids into table rows, the quantized content embeddings the `long` and `livelong` GSUs
rank by, the history and feature settings, and the contract's constants.

Written next to the streams (`<data>/streams/feature_catalog/`) by `make streams`, and by anything
that computes features with other settings (`write_catalog`). Two files:

- `catalog.json`: settings, the category and live-type vocabularies (text), and an index of the
  arrays: name -> dtype, shape, byte offset;
- `catalog.bin`: the arrays, little-endian, each at an 8-byte-aligned offset; its CRC-32 is in the
  JSON, so a cut or altered file is refused by the ranker rather than read.

No pickles, nothing executable: the ranker reads both with simdjson and plain loads.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_pipelines.contract import LIVE, N_LOG_BUCKETS, SHORT
from data_pipelines.dataset import DataSet
from data_pipelines.history_store import HistoryStoreConfig
from data_pipelines.streams.build import _aligned_embedding, _read_optional
from data_pipelines.streams.features import FeatureSpec, Vocabularies, _as_text
from data_pipelines.streams.gsu import quantize_embeddings

FORMAT_VERSION = 1
JSON_NAME, BIN_NAME = "catalog.json", "catalog.bin"


@dataclass(frozen=True)
class CatalogInputs:
    """Everything a catalog holds, as computed by the streams' own code."""

    vocab: Vocabularies
    photo_embedding: np.ndarray  # [P, E] int16, rows follow vocab.photo
    live_embedding: np.ndarray  # [R, E] int16, rows follow vocab.live
    history: HistoryStoreConfig
    spec: FeatureSpec


def catalog_inputs(data: DataSet, history: HistoryStoreConfig, spec: FeatureSpec,
                   vocab: Vocabularies | None = None) -> CatalogInputs:
    """A data set's catalog: the vocabularies `make streams` saved (or `vocab`, as build_features
    returns them), its embeddings aligned to them."""
    canonical = data.canonical
    if vocab is None:
        vocab = Vocabularies.load(data.require(data.vocab, "make streams"))
    lives = pd.read_parquet(canonical.lives)
    photos = _read_optional(canonical.photos)
    photo_q, live_q = quantize_embeddings(
        _aligned_embedding(canonical.embedding("photo"), photos, "photo_id", vocab.photo.ids),
        _aligned_embedding(canonical.embedding("live"), lives, "live_id", vocab.live.ids))
    return CatalogInputs(vocab, photo_q, live_q, history, spec)


def write_catalog(inputs: CatalogInputs, out_dir: Path) -> Path:
    """The catalog's two files in `out_dir`, each renamed into place, the JSON last: a ranker that
    reads between the two renames finds the CRC-32 wrong and refuses the catalog, never a mix."""
    v = inputs.vocab
    arrays = {"user_ids": v.user.ids, "author_ids": v.author.ids, "photo_ids": v.photo.ids, "live_ids": v.live.ids,
              "photo_embedding": inputs.photo_embedding, "live_embedding": inputs.live_embedding}
    index, blob, offset = {}, bytearray(), 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array, dtype=np.int16 if "embedding" in name else np.int64)
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        index[name] = {"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset}
        blob += raw + b"\0" * (-len(raw) % 8)
        offset = len(blob)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "arrays": index,
        "bin_bytes": len(blob),
        "bin_crc32": zlib.crc32(blob),
        "categories": [str(t) for t in v.category.ids],
        "live_types": [str(t) for t in v.live_type.ids],
        "history": {"max_events": inputs.history.max_events,
                    "short_long_view_ms": inputs.history.short_long_view_ms,
                    "live_long_view_ms": inputs.history.live_long_view_ms},
        "gsu_length": inputs.spec.gsu_length,
        "tz_offset_hours": int(round(inputs.spec.columns.tz_offset_hours)),
        "contract": {"short": SHORT, "live": LIVE, "log_buckets": N_LOG_BUCKETS},
    }
    _atomic(out_dir / BIN_NAME, bytes(blob))
    _atomic(out_dir / JSON_NAME, json.dumps(meta, indent=1).encode())
    return out_dir


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def room_text(lives: pd.DataFrame, column: str | None) -> np.ndarray:
    """A room table column as the catalog's vocabularies hold it (text; '' where the data set has none)."""
    return _as_text(lives, column)
