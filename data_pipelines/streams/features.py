"""Request-time features: id vocabularies, the room's real-time state and the user's activity,
all computed from events strictly before the request. Nothing here may look past `request_ts`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from data_pipelines.contract import BUCKET_TABLE_ROWS, DENSE_FEATURES, LIVE, N_LOG_BUCKETS, SPARSE_FEATURES
from data_pipelines.history_store import HistoryStore


def log2_bucket(x: np.ndarray) -> np.ndarray:
    """0 for x < 1, then floor(log2(x)) + 1, capped at N_LOG_BUCKETS - 1."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.floor(np.log2(np.maximum(x, 1.0))) + (x >= 1), 0, N_LOG_BUCKETS - 1).astype(np.int64)


def log2_bucket_row(x: np.ndarray) -> np.ndarray:
    """The table row of x's log2 bucket: 1 .. N_LOG_BUCKETS (row 0 is padding)."""
    return log2_bucket(x) + 1


@dataclass(frozen=True)
class FeatureColumns:
    """How request-time features read a data set's canonical `lives` (conf/data/*.yaml `features`)."""

    category_column: str  # room columns carried through by ingestion with `keep`
    live_type_column: str
    tz_offset_hours: float  # hour-of-day feature = UTC hour + this


@dataclass(frozen=True)
class FeatureSpec:
    """How request features are computed (conf/features/*.yaml): the data set's room columns, the
    elements per GSU sequence, and how many (request, candidate) pairs a GSU scores at once (memory
    only). `make streams` records it whole in every stream's manifest; whatever computes features
    for the same data set afterwards (the live loop's driver, the replay's candidate sets) reads it
    back from there (`of_manifest`), never from its own config."""

    columns: FeatureColumns
    gsu_length: int
    max_pairs: int

    def __post_init__(self) -> None:
        if isinstance(self.columns, dict):  # read back from a manifest, or built from plain config
            object.__setattr__(self, "columns", FeatureColumns(**self.columns))
        if self.gsu_length < 1 or self.max_pairs < 1:
            raise ValueError(f"features: gsu_length and max_pairs must be at least 1, got {self.gsu_length} and "
                             f"{self.max_pairs}")

    def to_dict(self) -> dict:
        return {"columns": asdict(self.columns), "gsu_length": int(self.gsu_length), "max_pairs": int(self.max_pairs)}

    @classmethod
    def of_manifest(cls, manifest: dict) -> "FeatureSpec":
        """The spec a stream's shards were written with (data_pipelines/manifest.py: read_manifest)."""
        return cls(**manifest[MANIFEST_KEY])


MANIFEST_KEY = "features"  # where a manifest holds the FeatureSpec


def gsu_length_of(manifest: dict) -> int:
    """The elements per GSU sequence a stream's shards hold (all a model needs of the spec)."""
    return int(manifest[MANIFEST_KEY]["gsu_length"])


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
              short_plays: pd.DataFrame | None, columns: FeatureColumns) -> "Vocabularies":
        users = [impressions["user_id"].to_numpy()]
        played = []
        if short_plays is not None:
            users.append(short_plays["user_id"].to_numpy())
            played.append(short_plays["photo_id"].to_numpy())
        return cls.of_ids(lives, photos, users, played, columns)

    @classmethod
    def of_ids(cls, lives: pd.DataFrame, photos: pd.DataFrame | None, user_ids: list[np.ndarray],
               played_photo_ids: list[np.ndarray], columns: FeatureColumns) -> "Vocabularies":
        """From the room and photo tables and the user / played-photo ids seen in impressions and
        plays (any repeats and order: a distributed reader passes each part's unique ids)."""
        photo_ids = ([photos["photo_id"].to_numpy()] if photos is not None else []) + list(played_photo_ids)
        photo = Vocab.of(*photo_ids) if photo_ids else Vocab(np.zeros(0, dtype=np.int64))
        authors = [lives["author_id"].to_numpy()]
        if photos is not None:
            authors.append(photos["author_id"].to_numpy())
        return cls(
            user=Vocab.of(*user_ids),
            author=Vocab.of(*authors),
            photo=photo,
            live=Vocab.of(lives["live_id"].to_numpy(), offset=photo.size - 1),
            category=Vocab.of(_as_text(lives, columns.category_column)),
            live_type=Vocab.of(_as_text(lives, columns.live_type_column)),
        )

    def item_index(self, raw_id: np.ndarray, domain: np.ndarray) -> np.ndarray:
        return np.where(domain == LIVE, self.live.index(raw_id), self.photo.index(raw_id))

    def table_sizes(self) -> dict[str, int]:
        return {"user": self.user.size, "author": self.author.size, "item": self.live.size,
                "category": self.category.size, "live_type": self.live_type.size, **BUCKET_TABLE_ROWS}

    def save(self, path: Path | BinaryIO) -> None:
        np.savez(path, **{f"{name}_ids": getattr(self, name).ids for name in _VOCAB_NAMES})

    @classmethod
    def load(cls, path: Path) -> "Vocabularies":
        """The vocabularies `save` wrote (lives' rows follow the photos' in the one item table)."""
        with np.load(path, allow_pickle=False) as saved:
            ids = {name: saved[f"{name}_ids"] for name in _VOCAB_NAMES}
        photo = Vocab(ids["photo"])
        return cls(user=Vocab(ids["user"]), author=Vocab(ids["author"]), photo=photo,
                   live=Vocab(ids["live"], offset=photo.size - 1), category=Vocab(ids["category"]),
                   live_type=Vocab(ids["live_type"]))


_VOCAB_NAMES = ("user", "author", "photo", "live", "category", "live_type")


def _as_text(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """Categorical columns may be numbers or strings; their vocabulary is over the text. A numpy
    string array, not pandas' object one, so that vocab.npz holds no pickled objects."""
    if column is None or column not in frame:
        return np.array([""] * len(frame))
    return np.asarray(frame[column].astype(str).to_numpy(), dtype=str)


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


def room_rows(impressions: pd.DataFrame, lives: pd.DataFrame) -> np.ndarray:
    """[N] row of each impression's room in `lives` (-1 for a room it does not hold)."""
    rows = pd.Series(np.arange(len(lives)), index=lives["live_id"].to_numpy()).reindex(impressions["live_id"])
    return np.nan_to_num(rows.to_numpy(), nan=-1).astype(np.int64)


class RoomStateIndex:
    """The rooms' real-time state from impressions requested and stays ended, queried at any
    (room, time) from what happened strictly before it: the logged requests' own features, and
    those of requests that were never made (replay's candidate sets)."""

    def __init__(self, impressions: pd.DataFrame, lives: pd.DataFrame, room_row: np.ndarray):
        t0, exit_ts = impressions["request_ts"].to_numpy(), impressions["exit_ts"].to_numpy()
        clicked = impressions["clicked"].to_numpy()
        t_lo = int(min(t0.min(), exit_ts.min())) - 3_600_000
        t_hi = int(max(t0.max(), exit_ts.max()))
        room = room_row + 1  # >= 0 for the counters
        self.entries = TimeCounter(room[clicked], t0[clicked], t_lo, t_hi)
        self.exits = TimeCounter(room[clicked], exit_ts[clicked], t_lo, t_hi)
        self.shown = TimeCounter(room, t0, t_lo, t_hi)
        self.start_ts = lives["start_ts"].to_numpy()

    def at(self, room_row: np.ndarray, t0: np.ndarray) -> dict[str, np.ndarray]:
        """Viewers now, clicks in the last 30 s and 5 min, impressions in the last 5 min and their
        click ratio, the room's age, at each (room row in `lives`, request time): dense features,
        transformed as the model reads them."""
        room = room_row + 1
        clicks_5min = self.entries.in_window(room, t0, 300_000)
        impressions_5min = self.shown.in_window(room, t0, 300_000)
        start = self.start_ts[np.maximum(room_row, 0)]
        return {
            "room_viewers_now": np.log1p(self.entries.before(room, t0) - self.exits.before(room, t0)),
            "room_clicks_30s": np.log1p(self.entries.in_window(room, t0, 30_000)),
            "room_clicks_5min": np.log1p(clicks_5min),
            "room_impressions_5min": np.log1p(impressions_5min),
            "room_ctr_5min": clicks_5min / np.maximum(impressions_5min, 1),
            "room_age_min": np.log1p(np.maximum(t0 - start, 0) / 60_000.0),
        }


def room_state(impressions: pd.DataFrame, lives: pd.DataFrame, room_row: np.ndarray) -> dict[str, np.ndarray]:
    """The room's real-time state at each of `impressions`' requests (RoomStateIndex.at)."""
    return RoomStateIndex(impressions, lives, room_row).at(room_row, impressions["request_ts"].to_numpy())


def user_activity(impressions: pd.DataFrame, history: HistoryStore) -> tuple[np.ndarray, np.ndarray]:
    """[N] interactions and live stays of the user known strictly before each request (at most
    the store's max_events most recent)."""
    begin, end = history.query_batch(impressions["user_id"].to_numpy(), impressions["request_ts"].to_numpy())
    is_live = np.concatenate([[0], np.cumsum(history.domain == LIVE)])
    return end - begin, is_live[end] - is_live[begin]


def request_features(impressions: pd.DataFrame, lives: pd.DataFrame, history: HistoryStore, vocab: Vocabularies,
                     columns: FeatureColumns, logged: pd.DataFrame | None = None
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sparse ids {SPARSE_FEATURES: [N] int64} and dense features [N, len(DENSE_FEATURES)] float32
    of canonical impressions, all from what was known strictly before each request. The rooms'
    state counts the `logged` impressions (default: these same ones; requests that were never
    made, such as replay's candidates, pass the data set's)."""
    room_row = room_rows(impressions, lives)
    if logged is None:
        room = room_state(impressions, lives, room_row)
    else:
        index = RoomStateIndex(logged, lives, room_rows(logged, lives))
        room = index.at(room_row, impressions["request_ts"].to_numpy())
    return assemble_features(impressions, lives, room_row, room, user_activity(impressions, history), vocab, columns)


def assemble_features(impressions: pd.DataFrame, lives: pd.DataFrame, room_row: np.ndarray,
                      room: dict[str, np.ndarray], activity: tuple[np.ndarray, np.ndarray], vocab: Vocabularies,
                      columns: FeatureColumns) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`request_features` from its parts: the room state (ROOM_STATE_FEATURES, from every impression of
    the room) and the user's activity (from the user's history) may be computed apart, by room and by user."""
    t0 = impressions["request_ts"].to_numpy()
    known_room = np.maximum(room_row, 0)
    history_len, live_len = activity
    hour = (t0 // 3_600_000 + int(round(columns.tz_offset_hours))) % 24
    sparse = {
        "user_id": vocab.user.index(impressions["user_id"].to_numpy()),
        "live_item": vocab.live.index(impressions["live_id"].to_numpy()),
        "author_id": vocab.author.index(impressions["author_id"].to_numpy()),
        "category": np.where(room_row >= 0, vocab.category.index(
            _as_text(lives, columns.category_column)[known_room]), 0),
        "live_type": np.where(room_row >= 0, vocab.live_type.index(
            _as_text(lives, columns.live_type_column)[known_room]), 0),
        "hour": hour.astype(np.int64) + 1,
        "user_history_bucket": log2_bucket_row(history_len),
        "user_live_bucket": log2_bucket_row(live_len),
    }
    dense = {**room, "user_history_len": np.log1p(history_len),
             "user_live_history_len": np.log1p(live_len)}
    return ({name: sparse[name] for name in SPARSE_FEATURES},
            np.stack([dense[name] for name in DENSE_FEATURES], axis=1).astype(np.float32))
