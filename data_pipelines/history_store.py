"""The interaction-log store: for a user and a time t, the most recent interactions strictly
before t, in both domains.

Interactions are held as CSR arrays: one block per user, sorted by the time the interaction
became known. A batch of as-of queries is one `np.searchsorted` over a composite (user, time)
key, so millions of lookups cost milliseconds and never loop over events in Python.

An interaction becomes known when it ends (a short-video play at leave, a live stay at exit),
because only then are its watch time and long-view flag logged. Keying by the end time means an
as-of query can never see a watch time that was still running at the request.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from data_pipelines.contract import LIVE, SHORT

_FIELDS = ("ts", "start_ts", "item_id", "author_id", "domain", "watch_ms", "long_view")
_FORMAT_VERSION = 2  # 2: domains are contract.SHORT / LIVE (1 and 2), no longer 0 and 1


@dataclass(frozen=True)
class HistoryStoreConfig:
    """conf/history/*.yaml."""

    max_events: int  # an as-of query returns at most this many most recent interactions
    short_long_view_ms: int  # a short-video play this long or longer is a long view
    live_long_view_ms: int  # a live stay this long or longer is a long view


EVENT_COLUMNS = ("user_id", *_FIELDS)  # an interaction row, as `from_events` takes it

# The canonical columns each kind of interaction is made from.
STAY_COLUMNS = ("user_id", "live_id", "author_id", "request_ts", "exit_ts", "clicked", "watch_ms")
PLAY_COLUMNS = ("user_id", "photo_id", "author_id", "start_ts", "end_ts", "watch_ms")


def stay_events(live_impressions: pd.DataFrame, cfg: HistoryStoreConfig) -> pd.DataFrame:
    """The interactions of canonical live impressions: one per stay (clicked impression), known at exit."""
    stays = live_impressions[live_impressions["clicked"]]
    return pd.DataFrame({
        "user_id": stays["user_id"].to_numpy(), "ts": stays["exit_ts"].to_numpy(),
        "start_ts": stays["request_ts"].to_numpy(), "item_id": stays["live_id"].to_numpy(),
        "author_id": stays["author_id"].to_numpy(), "domain": np.int8(LIVE),
        "watch_ms": stays["watch_ms"].to_numpy(),
        "long_view": stays["watch_ms"].to_numpy() >= cfg.live_long_view_ms,
    })


def play_events(short_plays: pd.DataFrame, cfg: HistoryStoreConfig) -> pd.DataFrame:
    """The interactions of canonical short-video plays, known at leave."""
    return pd.DataFrame({
        "user_id": short_plays["user_id"].to_numpy(), "ts": short_plays["end_ts"].to_numpy(),
        "start_ts": short_plays["start_ts"].to_numpy(), "item_id": short_plays["photo_id"].to_numpy(),
        "author_id": short_plays["author_id"].to_numpy(), "domain": np.int8(SHORT),
        "watch_ms": short_plays["watch_ms"].to_numpy(),
        "long_view": short_plays["watch_ms"].to_numpy() >= cfg.short_long_view_ms,
    })


@dataclass(frozen=True)
class HistoryStore:
    user_ids: np.ndarray  # [U] sorted ids of users with any interaction
    offsets: np.ndarray  # [U + 1] user u's interactions are rows offsets[u]:offsets[u+1]
    ts: np.ndarray  # [N] ms, when the interaction became known (its end); sorted within a user
    start_ts: np.ndarray  # [N] ms, when it began
    item_id: np.ndarray  # [N] photo_id (domain SHORT) or live_id (domain LIVE)
    author_id: np.ndarray  # [N]
    domain: np.ndarray  # [N] int8, contract.SHORT or contract.LIVE
    watch_ms: np.ndarray  # [N]
    long_view: np.ndarray  # [N] bool
    max_events: int

    def __len__(self) -> int:
        return len(self.ts)

    # ---------------------------------------------------------------- building, saving, loading
    @classmethod
    def build(cls, short_plays: pd.DataFrame | None, live_impressions: pd.DataFrame,
              cfg: HistoryStoreConfig) -> "HistoryStore":
        """From canonical tables: every short-video play and every live stay (clicked impression)."""
        parts = [stay_events(live_impressions, cfg)]
        if short_plays is not None and len(short_plays):
            parts.append(play_events(short_plays, cfg))
        return cls.from_events(pd.concat(parts, ignore_index=True), cfg.max_events)

    @classmethod
    def from_events(cls, events: pd.DataFrame, max_events: int) -> "HistoryStore":
        """From interaction rows (`user_id` and _FIELDS) in any order. A user's rows depend only on
        that user's events, so a store built from a subset of users answers their queries exactly
        as the store of everyone does."""
        # Every field is a key, last ones first: rows that tie on (user, ts, start) still take one
        # order whatever order the events came in (engines deliver them in different orders).
        order = np.lexsort([events[f].to_numpy() for f in reversed(("user_id", "ts", "start_ts", "domain",
                                                                      "item_id", "author_id", "watch_ms"))])
        events = events.iloc[order]
        user_ids, counts = np.unique(events["user_id"].to_numpy(), return_counts=True)
        return cls(
            user_ids=user_ids.astype(np.int64),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            **{f: events[f].to_numpy(dtype=np.int8 if f == "domain" else bool if f == "long_view" else np.int64)
               for f in _FIELDS},
            max_events=max_events,
        )

    def save(self, path: str | Path | BinaryIO) -> None:
        np.savez(path, format_version=_FORMAT_VERSION, user_ids=self.user_ids, offsets=self.offsets,
                 max_events=self.max_events, **{f: getattr(self, f) for f in _FIELDS})

    @classmethod
    def load(cls, path: str | Path, file: BinaryIO | None = None) -> "HistoryStore":
        """The store at `path`, read from `file` when given (a store on another filesystem)."""
        try:
            with np.load(path if file is None else file, allow_pickle=False) as data:  # never decode pickles from data files
                version = int(data["format_version"])
                if version != _FORMAT_VERSION:
                    raise ValueError(f"history store format {version}, this code reads {_FORMAT_VERSION}")
                return cls(user_ids=data["user_ids"], offsets=data["offsets"], max_events=int(data["max_events"]),
                           **{f: data[f] for f in _FIELDS})
        except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:  # a cut, garbled or old file
            raise ValueError(f"{path}: not a history store this code reads ({exc}); rebuild it with make history") \
                from None

    # ---------------------------------------------------------------- as-of queries
    def query(self, user_id: int, t: int, max_events: int | None = None) -> slice:
        """Rows of `user_id`'s most recent interactions known strictly before `t` (oldest first)."""
        max_events = self.max_events if max_events is None else max_events
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos == len(self.user_ids) or self.user_ids[pos] != user_id:
            return slice(0, 0)
        seg_begin, seg_end = int(self.offsets[pos]), int(self.offsets[pos + 1])
        end = seg_begin + int(np.searchsorted(self.ts[seg_begin:seg_end], t, side="left"))
        return slice(max(seg_begin, end - max_events), end)

    def query_batch(self, user_ids: np.ndarray, t: np.ndarray, max_events: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """For each (user, t): rows [begin, end) holding that user's at most `max_events` most
        recent interactions with ts < t. Unknown users get an empty range."""
        max_events = self.max_events if max_events is None else max_events
        user_ids, t = np.asarray(user_ids, dtype=np.int64), np.asarray(t, dtype=np.int64)
        if len(self.user_ids) == 0:
            zeros = np.zeros(len(user_ids), dtype=np.int64)
            return zeros, zeros.copy()
        pos = np.minimum(np.searchsorted(self.user_ids, user_ids), len(self.user_ids) - 1)
        known = self.user_ids[pos] == user_ids
        t_min, stride, keys = self._composite_keys()
        # Rows are sorted by (user, ts), so keys user_pos * stride + (ts - t_min) are sorted too and
        # one searchsorted finds, for every query, the first row of its user at or after t.
        query = pos * stride + np.clip(t - t_min, 0, stride - 1)
        end = np.searchsorted(keys, query, side="left")
        end = np.where(known, end, 0)
        begin = np.where(known, np.maximum(self.offsets[pos], end - max_events), 0)
        return begin, end

    def _composite_keys(self) -> tuple[int, int, np.ndarray]:
        """(t_min, stride, keys), derived once per store and cached (not part of its state)."""
        cached = self.__dict__.get("_composite_cache")
        if cached is None:
            t_min = int(self.ts.min()) if len(self.ts) else 0
            stride = (int(self.ts.max()) if len(self.ts) else 0) - t_min + 2
            if len(self.user_ids) * stride >= 2**62:
                raise OverflowError(f"history spans {stride} ms over {len(self.user_ids)} users: the composite "
                                    f"(user, time) key does not fit in int64")
            user_pos = np.repeat(np.arange(len(self.user_ids), dtype=np.int64), np.diff(self.offsets))
            cached = (t_min, stride, user_pos * stride + (self.ts - t_min))
            object.__setattr__(self, "_composite_cache", cached)
        return cached

    def gather(self, begin: np.ndarray, end: np.ndarray, length: int, field: str = "item_id",
               pad: int = -1) -> np.ndarray:
        """[B, length] values of `field` for the `length` most recent rows of each range, most
        recent first, padded with `pad`."""
        values = getattr(self, field)
        count = np.minimum(end - begin, length)
        idx = end[:, None] - 1 - np.arange(length)[None, :]
        valid = np.arange(length)[None, :] < count[:, None]
        out = np.full((len(begin), length), pad, dtype=values.dtype if field != "long_view" else np.int8)
        out[valid] = values[idx[valid]]
        return out
