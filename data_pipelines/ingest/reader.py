"""Read one source table (CSV or Parquet) into a frame with canonical column names."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_pipelines.ingest.quarantine import Quarantine

ROW = "_row"  # 1-based data row number in the source file, kept for quarantine records


class IngestError(RuntimeError):
    """Input that cannot be ingested; the message names the file and what is wrong."""


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as stream:
        first_line = stream.readline()
    if not first_line.strip():
        raise IngestError(f"{path}: empty file, expected a CSV header")
    return next(csv.reader([first_line]))


def _read_csv(path: Path, table: str, quarantine: Quarantine) -> pd.DataFrame:
    """Every column as text (types are checked row by row later); rows with the wrong number of
    fields are quarantined, not fatal."""
    header = _csv_header(path)
    malformed: list[tuple[int, str]] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        malformed.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text))
        return "skip"

    try:
        arrow_table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),  # row numbers are only known single-threaded
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                 strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{path}: cannot parse as CSV: {exc}") from exc
    frame = arrow_table.to_pandas()
    # Physical line n holds data row n - 1 (line 1 is the header); good rows fill the gaps.
    bad_rows = np.array([line - 1 for line, _, _ in malformed], dtype=np.int64)
    all_rows = np.arange(1, len(frame) + len(bad_rows) + 1)
    frame[ROW] = all_rows[~np.isin(all_rows, bad_rows)]
    if malformed:
        quarantine.add(table, str(path), pd.Series(bad_rows), "malformed_row",
                       pd.Series([reason for _, reason, _ in malformed]),
                       [json.dumps({"text": text}) for _, _, text in malformed])
    return frame


def read_source(path: Path, table: str, columns: dict[str, str], keep: list[str],
                quarantine: Quarantine) -> pd.DataFrame:
    """Read `path` and rename source columns to canonical ones (`columns`: canonical -> source).
    Columns listed in `keep` are carried through under their source names."""
    if not path.exists():
        raise IngestError(f"{table}: file not found: {path}")
    suffixes = "".join(path.suffixes).lower()
    if ".csv" in suffixes:
        frame = _read_csv(path, table, quarantine)
    elif suffixes.endswith(".parquet"):
        try:
            frame = pq.read_table(path).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise IngestError(f"{path}: cannot read as Parquet: {exc}") from exc
        frame[ROW] = np.arange(1, len(frame) + 1)
    else:
        raise IngestError(f"{path}: unknown format '{suffixes}' (expected .csv, .csv.gz or .parquet)")

    wanted = list(columns.values()) + list(keep)
    missing = [name for name in wanted if name not in frame.columns]
    if missing:
        mapped = {src: canon for canon, src in columns.items()}
        described = ", ".join(
            f"'{name}'" + (f" (canonical field '{mapped[name]}')" if name in mapped else " (listed in keep)")
            for name in missing)
        raise IngestError(f"{path}: missing column(s) {described}; the file has {list(frame.columns)[:-1]}. "
                          f"Fix the file or the column mapping under data.tables.{table} in conf/data/.")
    out = frame[[*columns.values(), *keep, ROW]].copy()
    out.columns = [*columns.keys(), *keep, ROW]
    return out
