"""The data set the live loop plays, as one publication schedule: the label joiner's facts of the
played impressions (online/events.py) and the ranker's feature-state events (online/state_events.py:
short-video plays, rooms starting and ending), each published once on its partition. An impression,
click or exit is one entry for both readers: the joiner's fields and the ranker's side by side.

Nothing about a request's features is computed here: the ranker computes them from these events
when it is asked (docs/serving.md, "Live feature state")."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from data_pipelines.dataset import FINAL, DataSet
from data_pipelines.streams.features import FeatureSpec
from online import events as ev
from online.events import Timeline, world_timeline
from online.state_events import KINDS, StateEvents, world_state_events

# Publication order of one instant: rooms open first and close last, plays before live facts
# (the ranker's state orders its history itself; the joiner needs a user's facts in FACT_TYPES order).
_RANK = {"room_start": 0, "play": 1, **{t: 2 + k for k, t in enumerate(ev.FACT_TYPES)}, "room_end": 2 + len(ev.FACT_TYPES)}


@dataclass(frozen=True)
class PlayedWorld:
    timeline: Timeline  # the facts of the impressions played
    state: StateEvents  # the plays and the rooms' starts and ends up to the last fact
    impressions: pd.DataFrame  # the canonical table: user_id, live_id, author_id, request_ts, clicked
    rows: np.ndarray  # the rows played, in request order
    # The schedule: entry k is timeline[index[k]] (is_fact) or state[index[k]], in publication order.
    ts: np.ndarray
    is_fact: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def first_request_ms(self) -> int:
        return int(self.impressions["request_ts"].to_numpy()[self.rows[0]])

    def partition(self, partitions: int) -> np.ndarray:
        """[entries] the events stream of each entry: a user's on the user's partition, a room's on
        its live id's (as StateEvents.partition)."""
        out = np.empty(len(self), dtype=np.int64)
        facts = self.index[self.is_fact]
        out[self.is_fact] = ev.partition_of(self.timeline.user[facts], partitions)
        out[~self.is_fact] = self.state.partition(partitions)[self.index[~self.is_fact]]
        return out

    def fact(self, k: int) -> ev.Event:
        """Entry k, a fact (is_fact[k])."""
        return self.timeline.event(int(self.index[k]))

    def fields(self, k: int) -> dict[bytes, bytes]:
        """Entry k as the broker holds it: a fact with the ranker's fields beside the joiner's."""
        if not self.is_fact[k]:
            return {name.encode(): str(v).encode() for name, v in self.state.fields(int(self.index[k])).items()}
        event = self.fact(k)
        fields = ev.encode(event)
        if event.type in (ev.IMPRESSION, ev.CLICK, ev.EXIT):
            row, c = int(self.timeline.row[self.index[k]]), self._stays
            fields[b"live"] = str(int(c["live_id"][row])).encode()
            if event.type == ev.EXIT:
                fields[b"author"] = str(int(c["author_id"][row])).encode()
                fields[b"start_ts"] = str(int(c["request_ts"][row])).encode()
                fields[b"clicked"] = b"1" if c["clicked"][row] else b"0"
        return fields

    @cached_property
    def _stays(self) -> dict[str, np.ndarray]:
        """The impressions' columns an entry carries for the ranker, as arrays (a row lookup each)."""
        return {name: self.impressions[name].to_numpy() for name in ("live_id", "author_id", "request_ts", "clicked")}


def played_span(impressions: pd.DataFrame, span_s: float | None) -> np.ndarray:
    """Which impressions (rows of the canonical table) fall in the first `span_s` data seconds from
    the first one (all of them for None)."""
    ts = impressions["request_ts"].to_numpy()
    if span_s is None:
        return np.ones(len(ts), dtype=bool)
    return ts < int(ts.min()) + int(float(span_s) * 1000)


def played_world(data: DataSet, span_s: float | None) -> PlayedWorld:
    """`span_s` data seconds of the data set from its first impression (all of it for None)."""
    impressions = pd.read_parquet(data.require(data.canonical.live_impressions, "make simulate / make ingest"))
    actions = pd.read_parquet(data.canonical.live_actions)
    plays = pd.read_parquet(data.canonical.short_plays) if data.canonical.short_plays.exists() else None
    spec = FeatureSpec.of_manifest(data.manifest(FINAL))
    played = played_span(impressions, span_s)
    kept = impressions[played]
    timeline = world_timeline(kept, actions[actions["impression_id"].isin(kept["impression_id"])])
    rows = np.flatnonzero(played)
    # world_timeline numbers rows within `kept`: back to rows of the whole table.
    timeline = Timeline(timeline.ts, timeline.type, timeline.user, timeline.impression, rows[timeline.row],
                        timeline.watch_ms)
    order = np.argsort(impressions["request_ts"].to_numpy()[rows], kind="stable")
    every = world_state_events(pd.read_parquet(data.canonical.lives), impressions.iloc[:0], plays, spec.columns)
    keep = every.columns["ts"] <= int(timeline.ts[-1])  # no impressions given: plays and rooms only
    state = StateEvents({n: v[keep] for n, v in every.columns.items()}, every.categories, every.live_types)
    state_rank = np.vectorize(_RANK.__getitem__, otypes=[np.int64])(np.array(KINDS)[state.columns["kind"]]) \
        if len(state) else np.zeros(0, np.int64)
    fact_rank = np.vectorize(_RANK.__getitem__, otypes=[np.int64])(np.array(ev.FACT_TYPES)[timeline.type])
    ts = np.concatenate([timeline.ts, state.columns["ts"]])
    is_fact = np.concatenate([np.ones(len(timeline), bool), np.zeros(len(state), bool)])
    index = np.concatenate([np.arange(len(timeline)), np.arange(len(state))])
    schedule = np.lexsort((index, np.concatenate([fact_rank, state_rank]), ts))  # each source keeps its order
    return PlayedWorld(timeline, state, impressions, rows[order], ts[schedule], is_fact[schedule], index[schedule])
