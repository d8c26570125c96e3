"""Read one source table (CSV or Parquet) into a frame with canonical column names."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
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


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _text_encoding(path: Path) -> str:
    """How to decode a CSV file: UTF-8 (a byte-order mark is skipped), or UTF-16 when it starts with
    a UTF-16 byte-order mark (spreadsheets export "Unicode text" that way). Anything else is refused
    by the readers, naming the line."""
    with _open_binary(path) as stream:
        head = stream.read(4)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE 00 00 starts with FF FE
        raise IngestError(f"{path}: UTF-32 text; save the file as UTF-8")
    return "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"


def _not_utf8(path: Path) -> IngestError:
    """The error for a file that is not UTF-8, naming its first line that does not decode."""
    with _open_binary(path) as stream:
        for line_no, line in enumerate(stream, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return IngestError(
                    f"{path}: not UTF-8 text: line {line_no} has the byte 0x{line[exc.start]:02x} at byte "
                    f"{exc.start + 1} of the line; save the file as UTF-8 (UTF-16 with a byte-order mark is read too)")
    return IngestError(f"{path}: not UTF-8 text")


def _csv_header(path: Path, encoding: str) -> list[str]:
    codec = "utf-8-sig" if encoding == "utf-8" else encoding  # utf-8-sig skips a UTF-8 byte-order mark
    try:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, encoding=codec, newline="") as stream:
            first_line = stream.readline()
    except UnicodeDecodeError:
        if encoding == "utf-8":
            raise _not_utf8(path) from None
        raise IngestError(f"{path}: starts with a UTF-16 byte-order mark but is not UTF-16 text") from None
    if "\x00" in first_line:
        raise IngestError(f"{path}: the header holds NUL bytes: UTF-16 text without a byte-order mark, or not "
                          f"text at all; save the file as UTF-8")
    if not first_line.strip():
        raise IngestError(f"{path}: empty file, expected a CSV header")
    return next(csv.reader([first_line]))


def _read_csv(path: Path, table: str, quarantine: Quarantine) -> pd.DataFrame:
    """Every column as text (types are checked row by row later); rows with the wrong number of
    fields are quarantined, not fatal."""
    encoding = _text_encoding(path)
    header = _csv_header(path, encoding)
    malformed: list[tuple[int, str]] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        malformed.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text))
        return "skip"

    try:
        arrow_table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False,  # row numbers are only known single-threaded
                                           encoding="utf8" if encoding == "utf-8" else encoding),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                 strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        if "invalid UTF8" in str(exc):
            raise _not_utf8(path) from None
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
