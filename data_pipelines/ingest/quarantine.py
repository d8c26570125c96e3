"""Where bad rows go: one record per rejected source row, with the file, the row and the reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

QUARANTINE_SCHEMA = pa.schema([
    ("table", pa.string()),
    ("file", pa.string()),
    ("row", pa.int64()),  # 1-based data row in the file (the CSV header is not counted)
    ("check", pa.string()),  # short name of the failed check, for counting
    ("reason", pa.string()),  # the message, with the offending values
    ("record", pa.string()),  # the source row as JSON, values as read
])


class Quarantine:
    """Collects rejected rows of every table during one ingestion run."""

    def __init__(self) -> None:
        self._parts: list[pd.DataFrame] = []
        self.counts: dict[str, Counter] = {}

    def add(self, table: str, file: str, rows: pd.Series, check: str, reasons: pd.Series | str,
            records: pd.DataFrame | list[str]) -> None:
        """Record rejected rows. `rows` are 1-based data row numbers; `records` are the source
        rows (a frame whose rows become JSON objects) or ready-made JSON strings."""
        n = len(rows)
        if n == 0:
            return
        if isinstance(records, pd.DataFrame):
            records = [json.dumps(rec, default=str) for rec in records.to_dict(orient="records")]
        self._parts.append(pd.DataFrame({
            "table": table,
            "file": file,
            "row": pd.Series(rows, dtype="int64").to_numpy(),
            "check": check,
            "reason": reasons.to_numpy() if isinstance(reasons, pd.Series) else [reasons] * n,
            "record": list(records),
        }))
        self.counts.setdefault(table, Counter())[check] += n

    def total(self, table: str) -> int:
        return sum(self.counts.get(table, Counter()).values())

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return QUARANTINE_SCHEMA.empty_table().to_pandas()
        return pd.concat(self._parts, ignore_index=True).sort_values(["table", "row"], kind="stable")

    def write(self, path: Path) -> None:
        table = pa.Table.from_pandas(self.frame(), schema=QUARANTINE_SCHEMA, preserve_index=False)
        pq.write_table(table, path)
