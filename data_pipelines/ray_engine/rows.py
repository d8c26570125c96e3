"""Samples as rows of an Arrow table, and back: what each Ray bucket task writes as its sorted run
and the driver merges. One row per sample; a micro-batch's [S, W] arrays become fixed-size lists
and each GSU field a list (its lengths are the lists' lengths), so a sequence travels with its
sample through the merge. `to_micro_batch` gives back exactly the arrays `shards.micro_batch` makes, dtypes
and key order included, so the encoded shards are the same bytes as the local engine's."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from data_pipelines import contract

SORT_KEY = ["report_ts", "impression_id", "kind"]  # the shards' order (labels.Samples), as columns
_MATRICES = ("state", "dense")  # [S, W] arrays


def to_table(arrays: dict[str, np.ndarray]) -> pa.Table:
    """A table of the samples in a micro-batch dict."""
    columns: dict[str, pa.Array] = {}
    for key in contract.micro_batch_keys():
        if key in _MATRICES:
            matrix = np.ascontiguousarray(arrays[key])
            columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
        elif contract.is_sequence_key(key):
            continue
        else:
            columns[key] = pa.array(arrays[key])
    for gsu in contract.GSU_NAMES:
        lengths = arrays[contract.lengths_key(gsu)]
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))  # 64-bit: no overflow
        for field in contract.SEQUENCE_FIELDS:
            key = contract.sequence_key(gsu, field)
            columns[key] = pa.LargeListArray.from_arrays(offsets, pa.array(arrays[key]))
    return pa.table(columns)


def to_micro_batch(table: pa.Table) -> dict[str, np.ndarray]:
    """The micro-batch dict of a table made by `to_table` (any slice of, or concatenation of, such)."""
    gsu_of_lengths = {contract.lengths_key(gsu): gsu for gsu in contract.GSU_NAMES}
    out: dict[str, np.ndarray] = {}
    for key in contract.micro_batch_keys():
        if key in _MATRICES:
            column = table.column(key).combine_chunks()
            values = column.flatten().to_numpy()  # a fixed-size list (or a list, after some round trips)
            out[key] = values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)
        elif key in gsu_of_lengths:
            first = table.column(contract.sequence_key(gsu_of_lengths[key], contract.SEQUENCE_FIELDS[0])).combine_chunks()
            out[key] = first.value_lengths().to_numpy(zero_copy_only=False).astype(np.int32)
        elif contract.is_sequence_key(key):
            out[key] = table.column(key).combine_chunks().flatten().to_numpy()
        else:
            out[key] = table.column(key).to_numpy()
    return out
