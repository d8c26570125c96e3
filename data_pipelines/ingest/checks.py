"""Row checks. Each check takes a frame and returns the failing rows' mask and messages; the
pipeline moves failing rows to quarantine and carries on with the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.ingest.quarantine import Quarantine
from data_pipelines.ingest.reader import ROW
from data_pipelines.ingest.schema import EXACT_FLOAT_INTEGER, FieldType


@dataclass(frozen=True)
class Failure:
    check: str  # short name, counted in the report
    mask: np.ndarray  # [len(frame)] True where the row fails
    reasons: pd.Series | str  # one message per failing row (in row order), or one for all
    records: pd.DataFrame | None = None  # the failing rows as read, when the frame's values were converted


def reject(frame: pd.DataFrame, failures: list[Failure], table: str, file: str, quarantine: Quarantine,
           record_columns: dict[str, str]) -> pd.DataFrame:
    """Quarantine rows that fail any of `failures` (under the first failing check) and return the
    rest. `record_columns` maps the frame's canonical names to the source names used in records."""
    bad = np.zeros(len(frame), dtype=bool)
    for failure in failures:
        newly = failure.mask & ~bad
        if newly.any():
            among_failing = np.flatnonzero(newly[failure.mask])
            reasons = failure.reasons
            if isinstance(reasons, pd.Series):
                reasons = reasons.iloc[among_failing]
            if failure.records is not None:
                records = failure.records.iloc[among_failing]
            else:
                records = frame.loc[newly]
            records = records[list(record_columns)].rename(columns=record_columns)
            quarantine.add(table, file, frame.loc[newly, ROW], failure.check, reasons, records)
        bad |= failure.mask
    return frame.loc[~bad].reset_index(drop=True)


_INTEGER_TEXT = r"[+-]?[0-9]+"
_INT64_DIGITS = 18  # integer text of at most this many digits always fits in int64


def _bound(value: float) -> str:
    return f"{int(value)}" if np.isfinite(value) else ("-inf" if value < 0 else "inf")


def _integers_of_text(text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows written as integers, their values as int64, rows whose integer does not fit int64);
    read exactly, whatever their size."""
    integer_text = text.str.fullmatch(_INTEGER_TEXT).fillna(False).to_numpy(dtype=bool)
    digits = text.str.lstrip("+-").str.len().fillna(0).to_numpy()
    short, long = integer_text & (digits <= _INT64_DIGITS), integer_text & (digits > _INT64_DIGITS)
    values = np.zeros(len(text), dtype=np.int64)
    values[short] = pd.to_numeric(text[short]).to_numpy(dtype=np.int64)
    overflow = np.zeros(len(text), dtype=bool)
    for i in np.flatnonzero(long):  # rare: beyond 18 digits, checked as Python integers
        value = int(text.iloc[i])
        if -(2**63) <= value < 2**63:
            values[i] = value
        else:
            overflow[i] = True
    return integer_text, values, overflow


def coerce_types(frame: pd.DataFrame, fields: dict[str, FieldType]) -> tuple[pd.DataFrame, list[Failure]]:
    """Convert the typed fields; values that are missing, not numbers, not integers (or floats too
    large to be exact ones) or outside their field's range fail, naming the value as read. Integers
    written as text are read exactly, whatever their size: a value beyond 64 bits is refused as out
    of range, never wrapped or clamped."""
    out = frame.copy()
    failures = []
    for name, kind in fields.items():
        raw = frame[name]
        n = len(raw)
        missing = raw.isna().to_numpy()
        integers = np.zeros(n, dtype=bool)  # rows read as integers (`ints`), exactly
        ints, overflow = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        if pd.api.types.is_integer_dtype(raw.dtype):  # Parquet integers, uint64 among them
            values = raw.to_numpy()
            integers = ~missing
            overflow = integers & (values > np.iinfo(np.int64).max)
            ints[integers & ~overflow] = values[integers & ~overflow].astype(np.int64)
            floats = np.full(n, np.nan)
        elif pd.api.types.is_float_dtype(raw.dtype):
            floats = raw.to_numpy(dtype=np.float64)
        else:
            text = raw.astype("string").str.strip()
            if kind.integer:
                integers, ints, overflow = _integers_of_text(text)
            floats = pd.to_numeric(text.where(~integers), errors="coerce").to_numpy(dtype=np.float64)
        is_float = ~integers & ~missing & ~np.isnan(floats)
        not_number = ~missing & ~integers & ~is_float
        failures.append(Failure(f"missing:{name}", missing, f"{name}: missing value", frame.loc[missing]))
        failures.append(Failure(f"type:{name}", not_number,
                                f"{name}: not a number (" + raw[not_number].astype(str) + ")", frame.loc[not_number]))
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(floats)
            if kind.integer:
                fractional = is_float & (~finite | (np.floor(np.where(finite, floats, 0)) != floats))
                inexact = is_float & ~fractional & (np.abs(floats) > EXACT_FLOAT_INTEGER)
                failures.append(Failure(f"type:{name}", fractional,
                                        f"{name}: not an integer (" + raw[fractional].astype(str) + ")",
                                        frame.loc[fractional]))
                failures.append(Failure(f"type:{name}", inexact, f"{name}: not an exact integer (" +
                                        raw[inexact].astype(str) + " is written as a float, which holds no integer "
                                        "exactly beyond 2^53)", frame.loc[inexact]))
                from_float = is_float & ~fractional & ~inexact
                ints[from_float] = floats[from_float].astype(np.int64)
                integers = integers | from_float
                outside = overflow | (integers & ~overflow & ((ints < kind.low) | (ints > kind.high)))
                ok = integers & ~outside
            else:
                infinite = is_float & ~finite
                failures.append(Failure(f"range:{name}", infinite, f"{name}: not a finite number (" +
                                        raw[infinite].astype(str) + ")", frame.loc[infinite]))
                outside = is_float & finite & ((floats < kind.low) | (floats > kind.high))
                ok = is_float & finite & ~outside
        failures.append(Failure(f"range:{name}", outside,
                                f"{name}: " + raw[outside].astype(str) + f" is out of range for {kind.kind} "
                                f"({_bound(kind.low)} .. {_bound(kind.high)})", frame.loc[outside]))
        out[name] = np.where(ok, ints, 0).astype(np.int64) if kind.integer else np.where(ok, floats, 0.0)
    return out, failures


def duplicates(frame: pd.DataFrame, key: tuple[str, ...]) -> Failure:
    dup = frame.duplicated(subset=list(key), keep="first").to_numpy()
    first_row = frame.groupby(list(key), sort=False)[ROW].transform("first")
    return Failure("duplicate", dup, "duplicate of row " + first_row[dup].astype(str) + " on " + ",".join(key))


def negative(frame: pd.DataFrame, name: str, what: str) -> Failure:
    mask = (frame[name] < 0).to_numpy()
    return Failure("negative_duration" if "duration" in what else f"negative:{name}", mask,
                   f"{what}: {name} = " + frame.loc[mask, name].astype(str))


def seconds_not_ms(frame: pd.DataFrame, field: str) -> str | None:
    """Why the time column `field` looks like epoch seconds, or None. Epoch seconds of this century
    are 1e9 .. 1e10; as milliseconds those would all fall in the first months of 1970."""
    values = frame[field].to_numpy()
    if len(values) == 0 or values.max() >= 1e11 or values.max() < 1e9:
        return None
    return (f"values up to {int(values.max())}, which as epoch milliseconds are in 1970: they look like epoch "
            f"seconds. Times must be epoch milliseconds: multiply the column by 1000")


def overlapping_rooms(rooms: pd.DataFrame) -> Failure:
    """A streamer is live in one room at a time: a room that starts before the same streamer's
    previous room ended is refused (the earlier one is kept)."""
    order = np.lexsort((rooms["start_ts"].to_numpy(), rooms["author_id"].to_numpy()))
    author, start = rooms["author_id"].to_numpy()[order], rooms["start_ts"].to_numpy()[order]
    end, live_id = rooms["end_ts"].to_numpy()[order], rooms["live_id"].to_numpy()[order]
    mask_sorted = np.zeros(len(order), dtype=bool)
    reasons_sorted = np.empty(len(order), dtype=object)
    latest_end, latest_room = {}, {}  # per streamer, over the rooms kept so far (one pass, by start)
    for i in range(len(order)):
        a = author[i]
        if a in latest_end and start[i] < latest_end[a]:
            mask_sorted[i] = True
            reasons_sorted[i] = (f"room {live_id[i]} [{start[i]}, {end[i]}] overlaps room {latest_room[a]} of the same "
                                 f"streamer {a}, which ends at {latest_end[a]}")
        elif a not in latest_end or end[i] > latest_end[a]:
            latest_end[a], latest_room[a] = end[i], live_id[i]
    mask = np.zeros(len(order), dtype=bool)
    mask[order] = mask_sorted
    reasons = np.empty(len(order), dtype=object)
    reasons[order] = reasons_sorted
    return Failure("overlapping_room", mask, pd.Series(reasons[mask], dtype=object))


def ends_before_start(frame: pd.DataFrame, start: str, end: str) -> Failure:
    mask = (frame[end] < frame[start]).to_numpy()
    return Failure("negative_duration", mask,
                   f"negative duration: {end} " + frame.loc[mask, end].astype(str)
                   + f" < {start} " + frame.loc[mask, start].astype(str))


def in_room(frame: pd.DataFrame, rooms: pd.DataFrame) -> list[Failure]:
    """Live events must name a known room, its author, and fall inside its lifetime."""
    room = rooms.set_index("live_id")
    known = frame["live_id"].isin(room.index).to_numpy()
    ids = frame["live_id"].where(known, rooms["live_id"].iloc[0] if len(rooms) else 0)
    start = room["start_ts"].reindex(ids).to_numpy()
    end = room["end_ts"].reindex(ids).to_numpy()
    author = room["author_id"].reindex(ids).to_numpy()
    ts = frame["ts"].to_numpy()
    outside = known & ((ts < start) | (ts > end))
    wrong_author = known & ~outside & (frame["author_id"].to_numpy() != author)
    return [
        Failure("unknown_live_id", ~known,
                "live_id " + frame.loc[~known, "live_id"].astype(str) + " has no (valid) room row"),
        Failure("outside_room_lifetime", outside,
                "ts " + frame.loc[outside, "ts"].astype(str) + " outside the room's lifetime ["
                + pd.Series(start[outside]).astype(str).to_numpy() + ", "
                + pd.Series(end[outside]).astype(str).to_numpy() + "]"),
        Failure("author_mismatch", wrong_author,
                "author_id " + frame.loc[wrong_author, "author_id"].astype(str) + " is not the room's author "
                + pd.Series(author[wrong_author]).astype(str).to_numpy()),
    ]


def room_time_left(events: pd.DataFrame, rooms: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(is the event's room known, ms from the event to its room's end, never below 0)."""
    room_end = rooms.set_index("live_id")["end_ts"]
    known = events["live_id"].isin(room_end.index).to_numpy()
    end = room_end.reindex(events["live_id"]).fillna(0).astype(np.int64).to_numpy()
    return known, np.where(known, np.maximum(end - events["ts"].to_numpy(), 0), 0)


def stay_past_room_end(clicks: pd.DataFrame, rooms: pd.DataFrame, tolerance_ms: int) -> Failure:
    """A stay that ends more than `tolerance_ms` after its room ended: a watch time nobody can have
    watched. (Comparisons, not sums: a corrupt watch time may be near the int64 limit.)"""
    known, left = room_time_left(clicks, rooms)
    watch = clicks["watch_ms"].to_numpy()
    mask = known & (watch > left + tolerance_ms)
    overrun = pd.Series(watch[mask] - left[mask]).astype(str).to_numpy()
    return Failure("stay_past_room_end", mask,
                   "watch_ms " + clicks.loc[mask, "watch_ms"].astype(str) + " ends the stay " + overrun
                   + f" ms after the room's end (tolerance data.stay_overrun_tolerance_ms={tolerance_ms})")


def known_ids(frame: pd.DataFrame, name: str, valid: pd.Series, table: str) -> Failure:
    unknown = ~frame[name].isin(valid).to_numpy()
    return Failure(f"unknown_{name}", unknown,
                   f"{name} " + frame.loc[unknown, name].astype(str) + f" has no (valid) {table} row")


def attribute(events: pd.DataFrame, stays: pd.DataFrame, by: list[str], start: str, end: str,
              grace_ms: int, what: str) -> tuple[np.ndarray, Failure]:
    """For each event, the index into `stays` of the latest stay with the same `by` keys that
    started at or before the event, provided the event falls before that stay's end (+ grace).
    Returns (stay index or -1, the failure for events no stay encloses)."""
    left = events[[*by, "ts"]].assign(_event=np.arange(len(events))).sort_values("ts", kind="stable")
    right = stays[[*by, start, end]].assign(_stay=np.arange(len(stays))).sort_values(start, kind="stable")
    merged = pd.merge_asof(left, right, left_on="ts", right_on=start, by=by, direction="backward")
    merged = merged.sort_values("_event")
    stay = merged["_stay"].to_numpy()
    found = ~np.isnan(stay)
    inside = found & (merged["ts"].to_numpy() <= np.where(found, merged[end].to_numpy(), 0) + grace_ms)
    stay_index = np.where(inside, np.nan_to_num(stay, nan=-1), -1).astype(np.int64)
    return stay_index, Failure("no_enclosing_stay", ~inside, f"not inside any {what}")
