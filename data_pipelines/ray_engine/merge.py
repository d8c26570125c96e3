"""The reduce side of the global sort: sorted runs (one per user bucket, each already in the shards'
order) merged into one stream in that order, a block at a time.

Every bucket task emits its samples sorted by SORT_KEY (labels.Samples are sorted by report time,
impression and kind, and a bucket's impressions are in canonical order), so the global order
needs no shuffle: the writer takes, at each step, every buffered row at or below the smallest
"last key" among the runs still being read (no later row of any run can precede it), sorts just
those and emits them. Memory: one block per run."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from data_pipelines.ray_engine.rows import SORT_KEY


def _keys(table: pa.Table) -> list[np.ndarray]:
    return [table.column(k).to_numpy() for k in SORT_KEY]


def _rows_at_or_below(keys: list[np.ndarray], bound: tuple) -> int:
    """How many leading rows of a sorted run have key <= bound (lexicographically)."""
    below = np.zeros(len(keys[0]), dtype=bool)
    equal = np.ones(len(keys[0]), dtype=bool)
    for column, value in zip(keys, bound):
        below |= equal & (column < value)
        equal &= column == value
    return int((below | equal).sum())


def merge_sorted_runs(runs: Iterable[Iterator[pa.Table]]) -> Iterator[pa.Table]:
    """Tables whose rows, concatenated, are all runs' rows in SORT_KEY order."""
    iterators = [iter(run) for run in runs]
    buffers: dict[int, pa.Table] = {}
    live: set[int] = set()  # runs that may still yield rows
    for i, it in enumerate(iterators):
        if _refill(i, it, buffers):
            live.add(i)
    while buffers:
        bounds = [(tuple(k[-1] for k in _keys(buffers[i].slice(buffers[i].num_rows - 1))), i)
                  for i in live if i in buffers]
        bound = min(bounds)[0] if bounds else None
        taken = []
        for i in list(buffers):
            table = buffers[i]
            n = table.num_rows if bound is None else _rows_at_or_below(_keys(table), bound)
            if n:
                taken.append(table.slice(0, n))
            if n == table.num_rows:
                del buffers[i]
                if i in live and not _refill(i, iterators[i], buffers):
                    live.discard(i)
            else:
                buffers[i] = table.slice(n)
        if taken:
            merged = pa.concat_tables(taken)
            keys = _keys(merged)
            yield merged.take(pa.array(np.lexsort(keys[::-1])))


def _refill(i: int, it: Iterator[pa.Table], buffers: dict[int, pa.Table]) -> bool:
    """Buffer run i's next non-empty block; False once the run is exhausted."""
    for table in it:
        if table.num_rows:
            buffers[i] = table
            return True
    return False


def rebatch(tables: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """The same rows in tables of exactly `rows` each (the last one possibly shorter)."""
    pending: list[pa.Table] = []
    held = 0
    for table in tables:
        pending.append(table)
        held += table.num_rows
        while held >= rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, rows).combine_chunks()
            rest = joined.slice(rows)
            pending, held = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if held:
        yield pa.concat_tables(pending).combine_chunks()
