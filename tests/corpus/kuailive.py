"""KuaiLive-schema source folders, one valid and the rest each with one defect, and what ingesting
each must give: the exact error, or success with the exact quarantine entries.

Messages name paths as `{src}` (the source folder) and `{data}` (the data set folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

T = 1_746_446_400_000  # 2025-05-05 12:00 UTC, epoch ms
MIN, HOUR = 60_000, 3_600_000

HEADERS = {
    "room.csv": "live_id,streamer_id,start_timestamp,end_timestamp,live_type,live_content_category,live_name_id",
    "click.csv": "user_id,live_id,streamer_id,timestamp,watch_live_time",
    "negative.csv": "user_id,live_id,streamer_id,timestamp",
    "like.csv": "user_id,live_id,streamer_id,timestamp",
    "comment.csv": "user_id,live_id,streamer_id,timestamp",
    "gift.csv": "user_id,live_id,streamer_id,timestamp,gift_price",
    "user.csv": "user_id,age",
    "streamer.csv": "streamer_id,fans",
}
TIME_COLUMNS = {"start_timestamp", "end_timestamp", "timestamp"}
EMBEDDINGS = "title_embeddings_pca128.npy"


def base_rows() -> dict[str, list[list]]:
    """A small valid data set: three rooms (streamer 10 twice, one after the other), four clicks,
    three negatives, and likes, a comment and a gift inside the stays."""
    return {
        "room.csv": [[1, 10, T, T + HOUR, 1, "music", 0], [2, 20, T + 10 * MIN, T + 40 * MIN, 2, "game", 1],
                     [3, 10, T + 70 * MIN, T + 120 * MIN, 1, "music", 2]],
        "click.csv": [[100, 1, 10, T + MIN, 2 * MIN], [101, 2, 20, T + 12 * MIN, 90_000],
                      [102, 3, 10, T + 72 * MIN, 5 * MIN], [103, 1, 10, T + 3 * MIN, 30_000]],
        "negative.csv": [[104, 1, 10, T + 70_000], [105, 2, 20, T + 13 * MIN], [106, 3, 10, T + 73 * MIN]],
        "like.csv": [[100, 1, 10, T + 100_000], [102, 3, 10, T + 73 * MIN]],
        "comment.csv": [[101, 2, 20, T + 12 * MIN + 30_000]],
        "gift.csv": [[102, 3, 10, T + 74 * MIN, 52]],
        "user.csv": [[u, 20 + u % 7] for u in range(100, 108)],
        "streamer.csv": [[10, 500], [20, 70]],
    }


def _text(header: str, rows: list[list]) -> str:
    return header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


def _files(rows: dict[str, list[list]]) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {name: _text(HEADERS[name], table) for name, table in rows.items()}
    files[EMBEDDINGS] = _npy(np.arange(12, dtype=np.float32).reshape(3, 4))
    return files


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@dataclass(frozen=True)
class IngestCase:
    name: str
    files: dict[str, str | bytes]  # file name -> content, written into the source folder
    error: str | None = None  # the exact IngestError message ({src}, {data}); None: the ingest succeeds
    error_is_prefix: bool = False  # the rest of the message is another library's words
    quarantine: dict[tuple[str, int, str], str] = field(default_factory=dict)  # (table, row, check) -> reason
    corrected: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, correction) -> rows
    overrides: tuple[str, ...] = ()

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            path = directory / name
            path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return directory


def _with(rows: dict[str, list[list]], **changes) -> dict[str, list[list]]:
    return {**rows, **changes}


def ingest_cases() -> list[IngestCase]:
    rows = base_rows()
    seconds = {name: [[v // 1000 if isinstance(v, int) and v >= T else v for v in row] for row in table]
               for name, table in rows.items()}
    unicode_rows = _with(rows, **{"click.csv": [*rows["click.csv"], ["用户108", 1, 10, T + 5 * MIN, 1000]],
                                  "room.csv": [*rows["room.csv"], [4, "主播", T, T + HOUR, 1, "chat", 2]]})
    overlapping = _with(rows, **{"room.csv": [*rows["room.csv"], [4, 10, T + 50 * MIN, T + 80 * MIN, 1, "chat", 2]]})
    files = _files(rows)
    # Click 1 (user 100, room 1 until T + HOUR, entered at T + MIN): a corrupt watch time, then one
    # that overruns the room's end by 90 s. Click 3 (room 3 until T + 120 min, entered at T + 72 min)
    # overruns by 30 s, within the tolerance (60 s).
    years_long = _with(rows, **{"click.csv": [[100, 1, 10, T + MIN, 10**15], *rows["click.csv"][1:]]})
    overruns = _with(rows, **{"click.csv": [[100, 1, 10, T + MIN, HOUR - MIN + 90_000], *rows["click.csv"][1:2],
                                            [102, 3, 10, T + 72 * MIN, 48 * MIN + 30_000], *rows["click.csv"][3:]]})
    latin1_rooms = _text(HEADERS["room.csv"], [["1", 10, T, T + HOUR, 1, "música", 0], *rows["room.csv"][1:]])
    utf16_clicks = _text(HEADERS["click.csv"], unicode_rows["click.csv"]).replace("\n", "\r\n")
    malformed_clicks = {**files, "click.csv": HEADERS["click.csv"] + "\n" + "100,1\n" * 4}
    renamed = {**files, "click.csv": files["click.csv"].replace("watch_live_time", "stay_ms", 1)}
    extra_gift = {**files, "gift.csv": _text(HEADERS["gift.csv"] + ",currency,channel",
                                             [[*row, "coin", "app"] for row in rows["gift.csv"]])}
    # Values past their column's range: a user id past 64 bits (two such users would both wrap to
    # -2^63 and become one), a comment 10^20 ms after 1970, a watch time of 2^64 ms, a price too
    # large for a float. Each is quarantined, never wrapped or clamped.
    huge_users = _with(rows, **{"click.csv": [*rows["click.csv"], [2**70, 1, 10, T + 5 * MIN, 1000]],
                                "negative.csv": [*rows["negative.csv"], [2**70 + 1, 2, 20, T + 14 * MIN]]})
    far_future = _with(rows, **{"comment.csv": [*rows["comment.csv"], [101, 2, 20, 10**20]]})
    endless = _with(rows, **{"click.csv": [*rows["click.csv"], [107, 2, 20, T + 20 * MIN, 2**64]]})
    priceless = {**files, "gift.csv": files["gift.csv"] + f"102,3,10,{T + 75 * MIN},1e400\n"}
    id_range = f"is out of range for an id (0 .. {2**63 - 1})"
    return [
        IngestCase("clean", files),
        IngestCase("ids_beyond_64_bits", _files(huge_users), overrides=("data.max_bad_share=1.0",),
                   quarantine={("click", 5, "range:user_id"): f"user_id: {2**70} {id_range}",
                               ("negative", 4, "range:user_id"): f"user_id: {2**70 + 1} {id_range}"}),
        IngestCase("timestamp_past_year_9999", _files(far_future), overrides=("data.max_bad_share=1.0",),
                   quarantine={("comment", 2, "range:ts"): f"ts: {10**20} is out of range for an epoch-millisecond "
                                                            f"timestamp (0 .. 253402300799999)"}),
        IngestCase("watch_time_beyond_64_bits", _files(endless), overrides=("data.max_bad_share=1.0",),
                   quarantine={("click", 5, "range:watch_ms"): f"watch_ms: {2**64} is out of range for a duration "
                                                               f"({-2**63} .. {2**63 - 1})"}),
        IngestCase("price_beyond_a_float", priceless, overrides=("data.max_bad_share=1.0",),
                   quarantine={("gift", 2, "range:gift_price"): "gift_price: not a finite number (1e400)"}),
        IngestCase("bom_and_crlf", {**files, "click.csv": "\ufeff" + files["click.csv"].replace("\n", "\r\n")}),
        IngestCase("gift_table_with_extra_columns", extra_gift),
        IngestCase(
            "almost_all_clicks_malformed", malformed_clicks,
            error="too many bad rows (limit data.max_bad_share=1.0%): "
                  "click ({src}/click.csv): 4 of 4 rows bad (100.0%), malformed_row=4; "
                  "like ({src}/like.csv): 2 of 2 rows bad (100.0%), no_enclosing_stay=2; "
                  "comment ({src}/comment.csv): 1 of 1 rows bad (100.0%), no_enclosing_stay=1; "
                  "gift ({src}/gift.csv): 1 of 1 rows bad (100.0%), no_enclosing_stay=1. "
                  "Rows and reasons: {data}/canonical.failed/quarantine.parquet"),
        IngestCase(
            "timestamps_in_seconds", _files(seconds),
            error=f"{{src}}/room.csv: column 'start_timestamp' (start_ts) has values up to {(T + 70 * MIN) // 1000}, "
                  f"which as epoch milliseconds are in 1970: they look like epoch seconds. Times must be epoch "
                  f"milliseconds: multiply the column by 1000"),
        IngestCase(
            "no_title_embeddings", {k: v for k, v in files.items() if k != EMBEDDINGS},
            error=f"room embeddings: file not found: {{src}}/{EMBEDDINGS} (data.embeddings.live.file); to ingest "
                  f"without them, pass data.embeddings.live=null: the GSUs that search by content similarity then "
                  f"rank by recency alone"),
        IngestCase("no_title_embeddings_and_told_so", {k: v for k, v in files.items() if k != EMBEDDINGS},
                   overrides=("data.embeddings.live=null",)),
        IngestCase(
            "pickled_embeddings", {**files, EMBEDDINGS: _npy(np.array([{"x": 1}], dtype=object), allow_pickle=True)},
            error=f"{{src}}/{EMBEDDINGS}: not a plain numeric .npy array", error_is_prefix=True),
        IngestCase(
            "column_renamed", renamed,
            error="{src}/click.csv: missing column(s) 'watch_live_time' (canonical field 'watch_ms'); the file has "
                  "['user_id', 'live_id', 'streamer_id', 'timestamp', 'stay_ms']. Fix the file or the column mapping "
                  "under data.tables.click in conf/data/."),
        IngestCase("gift_table_missing", {k: v for k, v in files.items() if k != "gift.csv"},
                   error="gift: file not found: {src}/gift.csv"),
        IngestCase("click_file_empty", {**files, "click.csv": ""},
                   error="{src}/click.csv: empty file, expected a CSV header"),
        IngestCase(
            "unicode_ids", _files(unicode_rows), overrides=("data.max_bad_share=1.0",),
            quarantine={("click", 5, "type:user_id"): "user_id: not a number (用户108)",
                        ("room", 4, "type:author_id"): "author_id: not a number (主播)"}),
        IngestCase(
            "stay_ends_years_after_its_room", _files(years_long), overrides=("data.max_bad_share=1.0",),
            quarantine={("click", 1, "stay_past_room_end"):
                        f"watch_ms {10**15} ends the stay {10**15 - (HOUR - MIN)} ms after the room's end "
                        f"(tolerance data.stay_overrun_tolerance_ms=60000)",
                        # the like that fell inside that stay has no stay left to belong to
                        ("like", 1, "no_enclosing_stay"): "not inside any click's stay by this user in this room"}),
        IngestCase(
            "stays_overrun_their_rooms", _files(overruns), overrides=("data.max_bad_share=1.0",),
            quarantine={("click", 1, "stay_past_room_end"):
                        "watch_ms 3630000 ends the stay 90000 ms after the room's end "
                        "(tolerance data.stay_overrun_tolerance_ms=60000)",
                        ("like", 1, "no_enclosing_stay"): "not inside any click's stay by this user in this room"},
            corrected={("click", "stay_cut_at_room_end"): 1}),
        IngestCase(
            "room_table_in_latin1", {**files, "room.csv": latin1_rooms.encode("latin-1")},
            error=f"{{src}}/room.csv: not UTF-8 text: line 2 has the byte 0xfa at byte "
                  f"{latin1_rooms.splitlines()[1].index('ú') + 1} of the line; save the file as UTF-8 "
                  f"(UTF-16 with a byte-order mark is read too)"),
        IngestCase(
            "click_table_in_utf16_with_bom", {**files, "click.csv": utf16_clicks.encode("utf-16")},
            overrides=("data.max_bad_share=1.0",),
            quarantine={("click", 5, "type:user_id"): "user_id: not a number (用户108)"}),
        IngestCase(
            "click_table_in_utf16_without_bom", {**files, "click.csv": files["click.csv"].encode("utf-16-le")},
            error="{src}/click.csv: the header holds NUL bytes: UTF-16 text without a byte-order mark, or not text "
                  "at all; save the file as UTF-8"),
        IngestCase(
            "overlapping_rooms_of_one_streamer", _files(overlapping), overrides=("data.max_bad_share=1.0",),
            quarantine={("room", 4, "overlapping_room"):
                        f"room 4 [{T + 50 * MIN}, {T + 80 * MIN}] overlaps room 1 of the same streamer 10, which "
                        f"ends at {T + HOUR}"}),
    ]
