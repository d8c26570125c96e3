"""The canonical fields each source table must provide, their types, and their duplicate keys.

Source column names are not here: they are mapped onto these canonical names by config."""

from __future__ import annotations

from dataclasses import dataclass, field

INT = "int64"
FLOAT = "float64"


@dataclass(frozen=True)
class SourceSchema:
    fields: dict[str, str]  # canonical field -> type; every one must be mapped to a source column
    key: tuple[str, ...]  # rows equal on these fields are duplicates (the first one is kept)
    required: bool = False  # must the table be configured at all?
    optional_fields: dict[str, str] = field(default_factory=dict)  # typed when mapped, else absent


LIVE_EVENT = {"user_id": INT, "live_id": INT, "author_id": INT, "ts": INT}

SOURCES: dict[str, SourceSchema] = {
    "room": SourceSchema({"live_id": INT, "author_id": INT, "start_ts": INT, "end_ts": INT}, key=("live_id",),
                         required=True),
    "click": SourceSchema({**LIVE_EVENT, "watch_ms": INT}, key=("user_id", "live_id", "ts"), required=True),
    "negative": SourceSchema(dict(LIVE_EVENT), key=("user_id", "live_id", "ts"), required=True),
    "like": SourceSchema(dict(LIVE_EVENT), key=("user_id", "live_id", "ts")),
    "comment": SourceSchema(dict(LIVE_EVENT), key=("user_id", "live_id", "ts")),
    "gift": SourceSchema({**LIVE_EVENT, "gift_price": FLOAT}, key=("user_id", "live_id", "ts", "gift_price")),
    "user": SourceSchema({"user_id": INT}, key=("user_id",)),
    "streamer": SourceSchema({"author_id": INT}, key=("author_id",)),
    "photo": SourceSchema({"photo_id": INT, "author_id": INT}, key=("photo_id",)),
    "photo_play": SourceSchema({"user_id": INT, "photo_id": INT, "start_ts": INT, "end_ts": INT},
                               key=("user_id", "photo_id", "start_ts"), optional_fields={"author_id": INT}),
    "photo_like": SourceSchema({"user_id": INT, "photo_id": INT, "ts": INT}, key=("user_id", "photo_id", "ts")),
}

TIME_FIELDS = ("ts", "start_ts", "end_ts")  # epoch milliseconds, in every table that has them

LIVE_EVENT_TABLES = ("click", "negative", "like", "comment", "gift")
ACTION_TABLES = ("like", "comment", "gift")
