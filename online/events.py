"""The live loop's events: what the traffic driver publishes and the label joiner consumes.

An event is one broker entry, a flat map of byte strings (Redis Streams fields; a Kafka record's
headers and value in a deployment):

| type       | at                  | fields beyond type, ts, user, impression                        |
|------------|---------------------|-----------------------------------------------------------------|
| impression | the request         | live (and the ranker's fields, online/state_events.py)          |
| click      | the entry (= request time in the simulated worlds) | live                             |
| exit       | the end of the stay | watch_ms (0 for an impression never clicked: exit = request); live, author, start_ts, clicked |
| like, comment, gift | the action |                                                                 |
| clock      | -                   | only ts, and `answered`: every event of this partition up to ts is published, and every request up to `answered` answered (its features on `served.<p>`) or given up |
| end        | -                   | only ts (and `answered`): the partition is complete                                        |
| play, room_start, room_end | their time | the ranker's feature state's (online/state_events.py): passed over here |

The features of an impression are not in its event: the ranker computes them when it answers and
logs them to `served.<p>` (online/served.py), and the joiner joins those with the labels, so the
trainer learns exactly what the ranker scored (feature logging). Every entry may carry `pub`, the
wall-clock ms it was published (the ranker measures publication-to-state with it).

`parse` turns an entry into an `Event` or raises `MalformedEvent` with the reason; the joiner
quarantines such entries with that reason and never learns from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.contract import ACTION_CODES

IMPRESSION, CLICK, EXIT, CLOCK, END = "impression", "click", "exit", "clock", "end"
ACTIONS = tuple(ACTION_CODES)  # like, comment, gift
FACT_TYPES = (IMPRESSION, CLICK, *ACTIONS, EXIT)  # the order of a user's events at one instant
MARKER_TYPES = (CLOCK, END)
# Events on the same streams for the ranker's feature state (short-video plays, rooms starting and
# ending: online/state_events.py), which the label joiner has no use for.
STATE_TYPES = ("play", "room_start", "room_end")


class MalformedEvent(ValueError):
    """An entry that cannot be an event; the message is the reason the quarantine records."""


@dataclass(frozen=True)
class Event:
    type: str
    ts: int  # ms, data time
    user: int = -1
    impression: int = -1
    watch_ms: int = 0  # exit only
    answered: int | None = None  # clock and end only: every request up to here answered (None: up to ts)


def partition_of(user: np.ndarray | int, partitions: int) -> np.ndarray | int:
    """The partition holding a user's events: all of one user's events in one ordered log."""
    return np.asarray(user) % partitions if isinstance(user, np.ndarray) else int(user) % partitions


def encode(event: Event) -> dict[bytes, bytes]:
    """The joiner's fields of an event (the driver adds the ranker's: online/world.py)."""
    fields = {b"type": event.type.encode(), b"ts": str(int(event.ts)).encode()}
    if event.type in MARKER_TYPES:
        if event.answered is not None:
            fields[b"answered"] = str(int(event.answered)).encode()
        return fields
    fields[b"user"] = str(int(event.user)).encode()
    fields[b"impression"] = str(int(event.impression)).encode()
    if event.type == EXIT:
        fields[b"watch_ms"] = str(int(event.watch_ms)).encode()
    return fields


_INTEGER = re.compile(rb"-?[0-9]{1,18}")


def _int(fields: dict[bytes, bytes], key: str) -> int:
    raw = fields.get(key.encode())
    if raw is None:
        raise MalformedEvent(f"missing field '{key}'")
    if not _INTEGER.fullmatch(raw):
        raise MalformedEvent(f"field '{key}' is not an integer: {raw[:40]!r}")
    return int(raw)


def parse(fields: dict[bytes, bytes]) -> Event:
    """The event an entry holds, checked on its own (the joiner checks it against what it has seen)."""
    kind = fields.get(b"type", b"").decode("utf-8", "replace")
    if kind not in FACT_TYPES and kind not in MARKER_TYPES and kind not in STATE_TYPES:
        raise MalformedEvent(f"unknown event type '{kind[:40]}'")
    ts = _int(fields, "ts")
    if kind in STATE_TYPES:  # a state event's fields are the ranker's to check
        return Event(kind, ts)
    if kind in MARKER_TYPES:
        return Event(kind, ts, answered=_int(fields, "answered") if b"answered" in fields else None)
    user, impression = _int(fields, "user"), _int(fields, "impression")
    if kind == EXIT:
        watch = _int(fields, "watch_ms")
        if watch < 0:
            raise MalformedEvent(f"exit with a negative watch_ms {watch}")
        return Event(kind, ts, user, impression, watch_ms=watch)
    if kind == IMPRESSION:
        _int(fields, "live")  # the ranker's, but an impression of no room is no impression
    return Event(kind, ts, user, impression)


@dataclass(frozen=True)
class Timeline:
    """A world's events in publishing order: by time, then FACT_TYPES order, then impression."""

    ts: np.ndarray  # [E] ms
    type: np.ndarray  # [E] index into FACT_TYPES
    user: np.ndarray  # [E]
    impression: np.ndarray  # [E] impression_id
    row: np.ndarray  # [E] the impression's row in the canonical table (features, answers)
    watch_ms: np.ndarray  # [E]

    def __len__(self) -> int:
        return len(self.ts)

    def event(self, i: int) -> Event:
        return Event(FACT_TYPES[self.type[i]], int(self.ts[i]), int(self.user[i]), int(self.impression[i]),
                     int(self.watch_ms[i]))


def world_timeline(impressions: pd.DataFrame, actions: pd.DataFrame) -> Timeline:
    """Every event of canonical `impressions` and their `actions` (a data set's live tables)."""
    n = len(impressions)
    rows = np.arange(n)
    clicked = impressions["clicked"].to_numpy()
    row_of = pd.Series(rows, index=impressions["impression_id"].to_numpy())
    action_rows = row_of.reindex(actions["impression_id"].to_numpy()).to_numpy()
    if np.isnan(action_rows.astype(float)).any():
        raise ValueError("live_actions names impressions live_impressions does not hold")
    action_rows = action_rows.astype(np.int64)
    code_to_type = {code: FACT_TYPES.index(name) for name, code in ACTION_CODES.items()}
    parts = [  # (ts, type, row, watch_ms)
        (impressions["request_ts"].to_numpy(), np.full(n, FACT_TYPES.index(IMPRESSION)), rows, np.zeros(n)),
        (impressions["request_ts"].to_numpy()[clicked], np.full(int(clicked.sum()), FACT_TYPES.index(CLICK)),
         rows[clicked], np.zeros(int(clicked.sum()))),
        (actions["ts"].to_numpy(), np.vectorize(code_to_type.__getitem__, otypes=[np.int64])(
            actions["action"].to_numpy()) if len(actions) else np.zeros(0, np.int64), action_rows,
         np.zeros(len(actions))),
        (impressions["exit_ts"].to_numpy(), np.full(n, FACT_TYPES.index(EXIT)), rows,
         impressions["watch_ms"].to_numpy()),
    ]
    ts = np.concatenate([p[0] for p in parts]).astype(np.int64)
    kind = np.concatenate([p[1] for p in parts]).astype(np.int64)
    row = np.concatenate([p[2] for p in parts]).astype(np.int64)
    watch = np.concatenate([p[3] for p in parts]).astype(np.int64)
    order = np.lexsort((row, kind, ts))
    return Timeline(ts[order], kind[order], impressions["user_id"].to_numpy()[row[order]],
                    impressions["impression_id"].to_numpy()[row[order]], row[order], watch[order])
