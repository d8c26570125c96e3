"""The live loop's events: what the traffic driver publishes and the label joiner consumes.

An event is one broker entry, a flat map of byte strings (Redis Streams fields; a Kafka record's
headers and value in a deployment):

| type       | at                  | fields beyond type, ts, user, impression                        |
|------------|---------------------|-----------------------------------------------------------------|
| impression | the request         | features: the request's arrays, as logged when it was served   |
| click      | the entry (= request time in the simulated worlds)  |                                 |
| exit       | the end of the stay | watch_ms (0 for an impression never clicked: exit = request)   |
| like, comment, gift | the action |                                                                 |
| clock      | -                   | only ts: every event of this partition up to ts is published   |
| end        | -                   | only ts: the partition is complete                              |
| play, room_start, room_end | their time | the ranker's feature state's (online/state_events.py): passed over here |

`features` is the request's micro-batch arrays in the shard layout (one row), encoded with the shard
codec: the features the ranker scored are the features the trainer learns (logged at serving,
joined with labels later), and decoding runs no code from the message.

`parse` turns an entry into an `Event` or raises `MalformedEvent` with the reason; the joiner
quarantines such entries with that reason and never learns from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.contract import ACTION_CODES, DENSE_FEATURES, GSU_NAMES, SEQUENCE_FIELDS, SPARSE_FEATURES, lengths_key, sequence_key, sparse_key
from data_pipelines.streams import codec
from data_pipelines.streams.shards import ImpressionFeatures, request_arrays

IMPRESSION, CLICK, EXIT, CLOCK, END = "impression", "click", "exit", "clock", "end"
ACTIONS = tuple(ACTION_CODES)  # like, comment, gift
FACT_TYPES = (IMPRESSION, CLICK, *ACTIONS, EXIT)  # the order of a user's events at one instant
MARKER_TYPES = (CLOCK, END)
# Events on the same streams for the ranker's feature state (short-video plays, rooms starting and
# ending: online/state_events.py), which the label joiner has no use for.
STATE_TYPES = ("play", "room_start", "room_end")


# The arrays every impression event carries: the shard layout's request arrays (shards.request_arrays).
REQUEST_KEYS = frozenset(["impression_id", "request_ts", "dense", *(sparse_key(f) for f in SPARSE_FEATURES),
                          *(lengths_key(g) for g in GSU_NAMES),
                          *(sequence_key(g, f) for g in GSU_NAMES for f in SEQUENCE_FIELDS)])


class MalformedEvent(ValueError):
    """An entry that cannot be an event; the message is the reason the quarantine records."""


@dataclass(frozen=True)
class Event:
    type: str
    ts: int  # ms, data time
    user: int = -1
    impression: int = -1
    watch_ms: int = 0  # exit only
    features: dict[str, np.ndarray] | None = None  # impression only, one row


def partition_of(user: np.ndarray | int, partitions: int) -> np.ndarray | int:
    """The partition holding a user's events: all of one user's events in one ordered log."""
    return np.asarray(user) % partitions if isinstance(user, np.ndarray) else int(user) % partitions


def encode(event: Event) -> dict[bytes, bytes]:
    fields = {b"type": event.type.encode(), b"ts": str(int(event.ts)).encode()}
    if event.type in MARKER_TYPES:
        return fields
    fields[b"user"] = str(int(event.user)).encode()
    fields[b"impression"] = str(int(event.impression)).encode()
    if event.type == EXIT:
        fields[b"watch_ms"] = str(int(event.watch_ms)).encode()
    if event.type == IMPRESSION:
        fields[b"features"] = codec.encode(event.features)
    return fields


_INTEGER = re.compile(rb"-?[0-9]{1,18}")


def _int(fields: dict[bytes, bytes], key: str) -> int:
    raw = fields.get(key.encode())
    if raw is None:
        raise MalformedEvent(f"missing field '{key}'")
    if not _INTEGER.fullmatch(raw):
        raise MalformedEvent(f"field '{key}' is not an integer: {raw[:40]!r}")
    return int(raw)


def parse(fields: dict[bytes, bytes], request_keys: frozenset[str] = REQUEST_KEYS) -> Event:
    """The event an entry holds, checked on its own (the joiner checks it against what it has seen).
    `request_keys`: the arrays an impression's features must hold."""
    kind = fields.get(b"type", b"").decode("utf-8", "replace")
    if kind not in FACT_TYPES and kind not in MARKER_TYPES and kind not in STATE_TYPES:
        raise MalformedEvent(f"unknown event type '{kind[:40]}'")
    ts = _int(fields, "ts")
    if kind in MARKER_TYPES or kind in STATE_TYPES:  # a state event's fields are the ranker's to check
        return Event(kind, ts)
    user, impression = _int(fields, "user"), _int(fields, "impression")
    if kind == EXIT:
        watch = _int(fields, "watch_ms")
        if watch < 0:
            raise MalformedEvent(f"exit with a negative watch_ms {watch}")
        return Event(kind, ts, user, impression, watch_ms=watch)
    if kind != IMPRESSION:
        return Event(kind, ts, user, impression)
    raw = fields.get(b"features")
    if raw is None:
        raise MalformedEvent("impression without features")
    try:
        arrays = codec.decode(raw)
    except codec.CodecError as exc:
        raise MalformedEvent(f"impression features: {exc}") from None
    missing = sorted(request_keys - set(arrays))
    if missing:
        raise MalformedEvent(f"impression features lack {missing[:3]}")
    one_row = ["impression_id", "request_ts", *(sparse_key(f) for f in SPARSE_FEATURES),
               *(lengths_key(g) for g in GSU_NAMES)]
    if any(arrays[k].shape != (1,) for k in one_row) or arrays["dense"].shape != (1, len(DENSE_FEATURES)):
        raise MalformedEvent("impression features must hold exactly one request's ids, lengths and dense features")
    for g in GSU_NAMES:
        n = int(arrays[lengths_key(g)][0])
        if any(arrays[sequence_key(g, f)].shape != (n,) for f in SEQUENCE_FIELDS):
            raise MalformedEvent(f"impression features: the {g} sequence's fields are not {n} long")
    if int(arrays["impression_id"][0]) != impression or int(arrays["request_ts"][0]) != ts:
        raise MalformedEvent("impression features belong to another impression or request time")
    return Event(kind, ts, user, impression, features={k: arrays[k] for k in request_keys})


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

    def event(self, i: int, features: ImpressionFeatures) -> Event:
        kind = FACT_TYPES[self.type[i]]
        arrays = request_arrays(features, self.row[i:i + 1]) if kind == IMPRESSION else None
        return Event(kind, int(self.ts[i]), int(self.user[i]), int(self.impression[i]), int(self.watch_ms[i]), arrays)


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
