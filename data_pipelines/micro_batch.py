"""Micro-batches: a set of samples (or requests) as one dict of arrays in the shard layout — the
per-sample arrays of data_pipelines/contract.py plus each GSU's ragged sequences, whose fields run
end to end and follow their lengths. Every reader and writer of such dicts (shards, the live loop's
joiner and broker readers, the learners) joins, selects and cuts them with these helpers."""

from __future__ import annotations

import numpy as np

from data_pipelines import contract
from data_pipelines.ragged import gather_rows

MicroBatch = dict[str, np.ndarray]  # one row per sample; sequence fields ragged by their lengths


def concat_arrays(parts: list[MicroBatch]) -> MicroBatch:
    """Micro-batches joined sample-wise (ragged fields stay aligned with their lengths)."""
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def take_rows(arrays: MicroBatch, rows: np.ndarray) -> MicroBatch:
    """Samples `rows` of a micro-batch; ragged sequence fields follow their lengths (for the GSUs
    it holds: every stream holds all of them, a caller's own arrays may hold none)."""
    out = {key: values[rows] for key, values in arrays.items() if not contract.is_sequence_key(key)}
    for gsu in contract.GSU_NAMES:
        if contract.lengths_key(gsu) not in arrays:
            continue
        lengths = arrays[contract.lengths_key(gsu)]
        taken, positions = gather_rows(lengths, rows)
        out[contract.lengths_key(gsu)] = taken.astype(lengths.dtype)
        for field in contract.SEQUENCE_FIELDS:
            out[contract.sequence_key(gsu, field)] = arrays[contract.sequence_key(gsu, field)][positions]
    return out


def head_and_tail(arrays: MicroBatch, n: int) -> tuple[MicroBatch | None, MicroBatch | None]:
    """(the first `n` samples, the rest), None for an empty part; the arrays themselves when one
    part takes everything."""
    total = len(arrays["report_ts"]) if "report_ts" in arrays else len(arrays["impression_id"])
    if n <= 0:
        return None, arrays if total else None
    if n >= total:
        return arrays, None
    return take_rows(arrays, np.arange(n)), take_rows(arrays, np.arange(n, total))


def split_reported_before(arrays: MicroBatch, t_ms: int) -> tuple[MicroBatch | None, MicroBatch | None]:
    """(samples reported before `t_ms`, the rest) of a micro-batch in report_ts order."""
    return head_and_tail(arrays, int(np.searchsorted(arrays["report_ts"], t_ms, side="left")))
