"""Request-time features: id vocabularies, the room's real-time state and the user's activity,
all computed from events strictly before the request. Nothing here may look past `request_ts`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_pipelines.history_store import LIVE, HistoryStore

SPARSE_FEATURES = ("user_id", "live_item", "author_id", "category", "live_type", "hour",
                   "user_history_bucket", "user_live_bucket")
DENSE_FEATURES = ("room_viewers_now", "room_clicks_30s", "room_clicks_5min", "room_impressions_5min",
                  "room_ctr_5min", "room_age_min", "user_history_len", "user_live_history_len")
N_LOG_BUCKETS = 16  # log2 buckets for counts and durations


def log2_bucket(x: np.ndarray, n_buckets: int = N_LOG_BUCKETS) -> np.ndarray:
    """0 for x < 1, then floor(log2(x)) + 1, capped at n_buckets - 1."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.floor(np.log2(np.maximum(x, 1.0))) + (x >= 1), 0, n_buckets - 1).astype(np.int64)


@dataclass(frozen=True)
class Vocab:
    """Raw ids -> table rows. Row 0 is padding / unknown; known ids take rows offset+1 ... offset+len."""

    ids: np.ndarray  # sorted unique raw ids
    offset: int = 0

    @classmethod
    def of(cls, *id_arrays: np.ndarray, offset: int = 0) -> "Vocab":
        return cls(np.unique(np.concatenate([np.asarray(a) for a in id_arrays])), offset)

    @property
    def size(self) -> int:
        """Rows a table needs for this vocabulary (padding included)."""
        return self.offset + len(self.ids) + 1

    def index(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw)
        if len(self.ids) == 0:
            return np.zeros(len(raw), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, raw), len(self.ids) - 1)
        return np.where(self.ids[pos] == raw, pos + 1 + self.offset, 0).astype(np.int64)


@dataclass(frozen=True)
class Vocabularies:
    user: Vocab
    author: Vocab
    photo: Vocab  # item rows 1 .. P
    live: Vocab  # item rows P+1 .. P+R: lives and short videos share one item table
    category: Vocab
    live_type: Vocab

    @classmethod
    def build(cls, lives: pd.DataFrame, impressions: pd.DataFrame, photos: pd.DataFrame | None,
              short_plays: pd.DataFrame | None, category_column: str, live_type_column: str) -> "Vocabularies":
        photo_ids = [photos["photo_id"].to_numpy()] if photos is not None else []
        if short_plays is not None:
            photo_ids.append(short_plays["photo_id"].to_numpy())
        photo = Vocab.of(*photo_ids) if photo_ids else Vocab(np.zeros(0, dtype=np.int64))
        authors = [lives["author_id"].to_numpy()]
        if photos is not None:
            authors.append(photos["author_id"].to_numpy())
        users = [impressions["user_id"].to_numpy()]
        if short_plays is not None:
            users.append(short_plays["user_id"].to_numpy())
        return cls(
            user=Vocab.of(*users),
            author=Vocab.of(*authors),
            photo=photo,
            live=Vocab.of(lives["live_id"].to_numpy(), offset=photo.size - 1),
            category=Vocab.of(_as_text(lives, category_column)),
            live_type=Vocab.of(_as_text(lives, live_type_column)),
        )

    def item_index(self, raw_id: np.ndarray, domain: np.ndarray) -> np.ndarray:
        return np.where(domain == LIVE, self.live.index(raw_id), self.photo.index(raw_id))

    def table_sizes(self) -> dict[str, int]:
        return {"user": self.user.size, "author": self.author.size, "item": self.live.size,
                "category": self.category.size, "live_type": self.live_type.size, "hour": 25,
                "activity_bucket": N_LOG_BUCKETS + 1}

    def save(self, path: Path) -> None:
        np.savez(path, **{f"{name}_ids": getattr(self, name).ids for name in
                          ("user", "author", "photo", "live", "category", "live_type")})


def _as_text(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """Categorical columns may be numbers or strings; their vocabulary is over the text."""
    if column is None or column not in frame:
        return np.array([""] * len(frame))
    return frame[column].astype(str).to_numpy()


class TimeCounter:
    """Counts of events per group in time windows, by one searchsorted on a (group, time) key."""

    def __init__(self, group: np.ndarray, ts: np.ndarray, t_min: int, t_max: int):
        self.t_min, self.stride = t_min, t_max - t_min + 2
        self.keys = np.sort(group.astype(np.int64) * self.stride + (ts - t_min))

    def before(self, group: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Events of `group` with ts < t."""
        q = group.astype(np.int64) * self.stride + np.clip(t - self.t_min, 0, self.stride - 1)
        return np.searchsorted(self.keys, q, side="left") - np.searchsorted(
            self.keys, group.astype(np.int64) * self.stride, side="left")

    def in_window(self, group: np.ndarray, t: np.ndarray, window_ms: int) -> np.ndarray:
        """Events of `group` with t - window <= ts < t."""
        return self.before(group, t) - self.before(group, t - window_ms)


def request_features(impressions: pd.DataFrame, lives: pd.DataFrame, history: HistoryStore, vocab: Vocabularies,
                     category_column: str, live_type_column: str, tz_offset_hours: float = 0.0,
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sparse ids {name: [N] int64} and dense features [N, D] float32 for canonical impressions.

    Room state uses only impressions with request_ts < t0 and exits with exit_ts < t0; user
    activity uses the history store's strictly-before-t0 queries.
    """
    t0 = impressions["request_ts"].to_numpy()
    live_id = impressions["live_id"].to_numpy()
    room_row = pd.Series(np.arange(len(lives)), index=lives["live_id"].to_numpy()).reindex(live_id).to_numpy()
    room_row = np.nan_to_num(room_row, nan=-1).astype(np.int64)
    clicked = impressions["clicked"].to_numpy()
    exit_ts = impressions["exit_ts"].to_numpy()
    t_lo = int(min(t0.min(), exit_ts.min())) - 3_600_000
    t_hi = int(max(t0.max(), exit_ts.max()))

    room = room_row + 1  # >= 0 for the counters
    entries = TimeCounter(room[clicked], t0[clicked], t_lo, t_hi)
    exits = TimeCounter(room[clicked], exit_ts[clicked], t_lo, t_hi)
    shown = TimeCounter(room, t0, t_lo, t_hi)
    viewers_now = entries.before(room, t0) - exits.before(room, t0)
    clicks_30s = entries.in_window(room, t0, 30_000)
    clicks_5min = entries.in_window(room, t0, 300_000)
    impressions_5min = shown.in_window(room, t0, 300_000)
    start = lives["start_ts"].to_numpy()[np.maximum(room_row, 0)]
    room_age_min = np.maximum(t0 - start, 0) / 60_000.0

    users = impressions["user_id"].to_numpy()
    begin, end = history.query_batch(users, t0)
    history_len = end - begin
    is_live = np.concatenate([[0], np.cumsum(history.domain == LIVE)])
    live_len = is_live[end] - is_live[begin]

    hour = ((t0 // 3_600_000 + int(round(tz_offset_hours))) % 24).astype(np.int64)
    cat_text, type_text = _as_text(lives, category_column), _as_text(lives, live_type_column)
    sparse = {
        "user_id": vocab.user.index(users),
        "live_item": vocab.live.index(live_id),
        "author_id": vocab.author.index(impressions["author_id"].to_numpy()),
        "category": np.where(room_row >= 0, vocab.category.index(cat_text[np.maximum(room_row, 0)]), 0),
        "live_type": np.where(room_row >= 0, vocab.live_type.index(type_text[np.maximum(room_row, 0)]), 0),
        "hour": hour + 1,
        "user_history_bucket": log2_bucket(history_len) + 1,
        "user_live_bucket": log2_bucket(live_len) + 1,
    }
    dense = np.stack([
        np.log1p(viewers_now), np.log1p(clicks_30s), np.log1p(clicks_5min), np.log1p(impressions_5min),
        clicks_5min / np.maximum(impressions_5min, 1), np.log1p(room_age_min), np.log1p(history_len),
        np.log1p(live_len),
    ], axis=1).astype(np.float32)
    return sparse, dense
