"""The events the ranker's feature state is built from (serving/ranker/src/features), as a world's
canonical tables give them, in publication order.

| type       | at (ts)            | fields beyond type and ts                                  |
|------------|--------------------|------------------------------------------------------------|
| play       | the play's end     | user, photo, author, start_ts, watch_ms: a short video     |
| room_start | the room's start   | live, author, category, live_type (text)                   |
| room_end   | the room's end     | live                                                       |
| impression | the request        | user, live                                                 |
| click      | the entry          | user, live                                                 |
| exit       | the end of the stay| user, live, author, start_ts (the request), watch_ms, clicked (0/1) |

A play and a stay enter the user's history when they end (history_store.py: only then are their
watch time and long-view flag known); a click and an impression count in the room's counters at
their time. The fields are those of a broker entry (online/events.py for the live events the label
joiner reads too); serving/ranker/src/features/event_fields.cpp reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.streams.features import FeatureColumns
from data_pipelines.streams.catalog import room_text

KINDS = ("room_start", "play", "impression", "click", "exit", "room_end")  # the order of one instant
_COLUMNS = ("ts", "kind", "user", "live", "photo", "author", "start_ts", "watch_ms", "clicked", "room")


@dataclass(frozen=True)
class StateEvents:
    """Events in publication order (time, then KINDS order, then as the tables list them)."""

    columns: dict[str, np.ndarray]  # _COLUMNS -> [E]; `room`: the event's row of `categories`/`live_types`
    categories: np.ndarray  # [rooms] text
    live_types: np.ndarray  # [rooms] text

    def __len__(self) -> int:
        return len(self.columns["ts"])

    def until(self, ts: int) -> "StateEvents":
        """The events at or before `ts`, in the same order."""
        keep = self.columns["ts"] <= ts
        return StateEvents({name: v[keep] for name, v in self.columns.items()}, self.categories, self.live_types)

    def partition(self, partitions: int) -> np.ndarray:
        """[E] the events stream of each event: a user's events on the user's partition (as the label
        joiner's, online/events.py partition_of), a room's on its live id's."""
        is_room = np.isin(self.columns["kind"], [KINDS.index("room_start"), KINDS.index("room_end")])
        return np.where(is_room, self.columns["live"], self.columns["user"]) % partitions

    def broker_entries(self, partitions: int, rows: np.ndarray | None = None) -> list[tuple[str, str, dict]]:
        """Events `rows` (default: all) as broker entries (stream, id, fields): id `<ts>-<i + 1>` from
        the event's position i, so that sending them again appends nothing twice (broker.Producer.send_keyed)."""
        from online.broker import events_stream

        stream = self.partition(partitions)
        rows = np.arange(len(self)) if rows is None else rows
        return [(events_stream(int(stream[i])), f"{max(int(self.columns['ts'][i]), 0)}-{int(i) + 1}",
                 {k.encode(): str(v).encode() for k, v in self.fields(int(i)).items()}) for i in rows]

    def fields(self, i: int) -> dict[str, int | str]:
        """The broker entry of event i, as a mapping of field name to value."""
        c = {name: c[i] for name, c in self.columns.items()}
        kind = KINDS[int(c["kind"])]
        out: dict[str, int | str] = {"type": kind, "ts": int(c["ts"])}
        if kind == "play":
            out.update(user=int(c["user"]), photo=int(c["photo"]), author=int(c["author"]),
                       start_ts=int(c["start_ts"]), watch_ms=int(c["watch_ms"]))
        elif kind in ("impression", "click"):
            out.update(user=int(c["user"]), live=int(c["live"]))
        elif kind == "exit":
            out.update(user=int(c["user"]), live=int(c["live"]), author=int(c["author"]), start_ts=int(c["start_ts"]),
                       watch_ms=int(c["watch_ms"]), clicked=int(c["clicked"]))
        elif kind == "room_start":
            room = int(c["room"])
            out.update(live=int(c["live"]), author=int(c["author"]), category=str(self.categories[room]),
                       live_type=str(self.live_types[room]))
        else:
            out.update(live=int(c["live"]))
        return out


def world_state_events(lives: pd.DataFrame, impressions: pd.DataFrame, plays: pd.DataFrame | None,
                       columns: FeatureColumns) -> StateEvents:
    """Every state event of canonical tables: the rooms of `lives`, the short-video `plays`, the
    live `impressions` (requests, clicks and exits)."""
    n_rooms, n_imp = len(lives), len(impressions)
    clicked = impressions["clicked"].to_numpy()
    parts = []

    def part(kind: str, n: int, **values) -> None:
        base = {name: np.zeros(n, dtype=np.int64) for name in _COLUMNS}
        base["kind"] = np.full(n, KINDS.index(kind), dtype=np.int64)
        base.update({k: np.asarray(v, dtype=np.int64) for k, v in values.items()})
        parts.append(base)

    rooms = np.arange(n_rooms)
    part("room_start", n_rooms, ts=lives["start_ts"], live=lives["live_id"], author=lives["author_id"], room=rooms)
    part("room_end", n_rooms, ts=lives["end_ts"], live=lives["live_id"], room=rooms)
    if plays is not None and len(plays):
        part("play", len(plays), ts=plays["end_ts"], user=plays["user_id"], photo=plays["photo_id"],
             author=plays["author_id"], start_ts=plays["start_ts"], watch_ms=plays["watch_ms"])
    user, live = impressions["user_id"].to_numpy(), impressions["live_id"].to_numpy()
    request = impressions["request_ts"].to_numpy()
    part("impression", n_imp, ts=request, user=user, live=live)
    part("click", int(clicked.sum()), ts=request[clicked], user=user[clicked], live=live[clicked])
    part("exit", n_imp, ts=impressions["exit_ts"], user=user, live=live, author=impressions["author_id"],
         start_ts=request, watch_ms=impressions["watch_ms"], clicked=clicked.astype(np.int64))
    merged = {name: np.concatenate([p[name] for p in parts]) for name in _COLUMNS}
    order = np.lexsort((merged["kind"], merged["ts"]))  # stable: a kind's events keep the tables' order
    return StateEvents({name: v[order] for name, v in merged.items()}, room_text(lives, columns.category_column),
                       room_text(lives, columns.live_type_column))
