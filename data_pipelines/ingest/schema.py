"""The canonical fields each source table must provide, their types, and their duplicate keys.

Source column names are not here: they are mapped onto these canonical names by config."""

from __future__ import annotations

from dataclasses import dataclass, field

INT64_MAX = 2**63 - 1
EXACT_FLOAT_INTEGER = 2**53  # beyond it a float cannot hold every integer: an id written as one may be another


@dataclass(frozen=True)
class FieldType:
    """What a canonical field holds: its kind (named in quarantine reasons), whether it is an integer
    (stored as int64) or a float, and the range its values must lie in; a value outside it is
    quarantined, never wrapped or clamped."""

    kind: str
    integer: bool
    low: float
    high: float


ID = FieldType("an id", True, 0, INT64_MAX)
TIMESTAMP = FieldType("an epoch-millisecond timestamp", True, 0, 253_402_300_799_999)  # up to 9999-12-31
DURATION = FieldType("a duration", True, -INT64_MAX - 1, INT64_MAX)  # a negative one: its own check, later
PRICE = FieldType("a price", False, float("-inf"), float("inf"))  # finite; a negative one: its own check, later


@dataclass(frozen=True)
class SourceSchema:
    fields: dict[str, FieldType]  # canonical field -> type; every one must be mapped to a source column
    key: tuple[str, ...]  # rows equal on these fields are duplicates (the first one is kept)
    required: bool = False  # must the table be configured at all?
    optional_fields: dict[str, FieldType] = field(default_factory=dict)  # typed when mapped, else absent


LIVE_EVENT = {"user_id": ID, "live_id": ID, "author_id": ID, "ts": TIMESTAMP}

SOURCES: dict[str, SourceSchema] = {
    "room": SourceSchema({"live_id": ID, "author_id": ID, "start_ts": TIMESTAMP, "end_ts": TIMESTAMP}, key=("live_id",),
                         required=True),
    "click": SourceSchema({**LIVE_EVENT, "watch_ms": DURATION}, key=("user_id", "live_id", "ts"), required=True),
    "negative": SourceSchema(dict(LIVE_EVENT), key=("user_id", "live_id", "ts"), required=True),
    "like": SourceSchema(dict(LIVE_EVENT), key=("user_id", "live_id", "ts")),
    "comment": SourceSchema(dict(LIVE_EVENT), key=("user_id", "live_id", "ts")),
    "gift": SourceSchema({**LIVE_EVENT, "gift_price": PRICE}, key=("user_id", "live_id", "ts", "gift_price")),
    "user": SourceSchema({"user_id": ID}, key=("user_id",)),
    "streamer": SourceSchema({"author_id": ID}, key=("author_id",)),
    "photo": SourceSchema({"photo_id": ID, "author_id": ID}, key=("photo_id",)),
    "photo_play": SourceSchema({"user_id": ID, "photo_id": ID, "start_ts": TIMESTAMP, "end_ts": TIMESTAMP},
                               key=("user_id", "photo_id", "start_ts"), optional_fields={"author_id": ID}),
    "photo_like": SourceSchema({"user_id": ID, "photo_id": ID, "ts": TIMESTAMP}, key=("user_id", "photo_id", "ts")),
}

TIME_FIELDS = ("ts", "start_ts", "end_ts")  # epoch milliseconds, in every table that has them

LIVE_EVENT_TABLES = ("click", "negative", "like", "comment", "gift")
ACTION_TABLES = ("like", "comment", "gift")
