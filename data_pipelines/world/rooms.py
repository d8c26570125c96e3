"""Live rooms (one row per live session), their highlight segments, and time lookups on both."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.ragged import within_group
from data_pipelines.world.config import HOUR_MS, MINUTE_MS, WorldConfig
from data_pipelines.world.latent import Population, embed

DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class Rooms:
    """Live sessions, sorted by start time. Times are ms since simulated time zero."""

    author: np.ndarray  # [R]
    start: np.ndarray  # [R]
    end: np.ndarray  # [R], exclusive
    latent: np.ndarray  # [R, d]
    embedding: np.ndarray  # [R, E] float32
    log_popularity: np.ndarray  # [R]
    live_type: np.ndarray  # [R]
    category: np.ndarray  # [R]

    def __len__(self) -> int:
        return len(self.start)


@dataclass(frozen=True)
class Highlights:
    """Highlight segments sorted by (room, start); segments of one room never overlap."""

    room: np.ndarray  # [S]
    start: np.ndarray  # [S]
    end: np.ndarray  # [S], exclusive
    peak_ctr_boost: np.ndarray  # [S]
    peak_watch_boost: np.ndarray  # [S]
    peak_position: float

    def __len__(self) -> int:
        return len(self.start)

    def shape_at(self, room: np.ndarray, t: np.ndarray, span_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """For impressions (room, t): the segment index holding t (-1 if none) and the
        highlight intensity in [0, 1]: 0 outside, rising linearly to 1 at the peak, then
        falling linearly back to 0 at the segment's end."""
        stride = np.int64(span_ms + 1)
        keys = self.room.astype(np.int64) * stride + self.start
        pos = np.searchsorted(keys, room.astype(np.int64) * stride + t, side="right") - 1
        seg = np.clip(pos, 0, max(len(self) - 1, 0))
        inside = (pos >= 0) & (len(self) > 0)
        if len(self):
            inside &= (self.room[seg] == room) & (t < self.end[seg])
        segment = np.where(inside, seg, -1)
        if not len(self):
            return segment, np.zeros(len(t))
        x = (t - self.start[seg]) / np.maximum(self.end[seg] - self.start[seg], 1)
        peak = self.peak_position
        intensity = np.where(x < peak, x / peak, (1.0 - x) / (1.0 - peak))
        return segment, np.where(inside, np.clip(intensity, 0.0, 1.0), 0.0)


def build_rooms(cfg: WorldConfig, pop: Population, rng: np.random.Generator) -> Rooms:
    """Each live author streams on some days, starting around a habitual hour of the day.
    Sessions are shorter than a day, so one author's sessions never overlap."""
    rc = cfg.room
    start_hour_of_day = (cfg.start_ms % DAY_MS) / HOUR_MS
    first_day = -1  # a session that began the day before may still be running at time zero
    n_days = int(np.ceil((cfg.span_hours + start_hour_of_day) / 24.0)) + 1
    authors = np.arange(cfg.n_live_authors)
    author, day = np.meshgrid(authors, np.arange(first_day, first_day + n_days), indexing="ij")
    author, day = author.ravel(), day.ravel()
    streams = rng.random(len(author)) < rc.live_day_probability
    author, day = author[streams], day[streams]

    jitter = rng.normal(0.0, rc.start_jitter_min, size=len(author)) * MINUTE_MS
    start = (day * DAY_MS + pop.author_habit_hour[author] * HOUR_MS + jitter - start_hour_of_day * HOUR_MS)
    duration = np.clip(
        np.exp(np.log(rc.duration_median_min) + rc.duration_sigma * rng.standard_normal(len(author))),
        rc.duration_min_min, rc.duration_max_min,
    ) * MINUTE_MS
    start = start.astype(np.int64)
    end = start + duration.astype(np.int64)
    # Keep sessions that overlap the simulated span, clipped to it.
    keep = (end > 0) & (start < cfg.span_ms)
    author, start, end = author[keep], np.maximum(start[keep], 0), np.minimum(end[keep], cfg.span_ms)
    keep = end - start >= MINUTE_MS
    author, start, end = author[keep], start[keep], end[keep]
    order = np.lexsort((author, start))
    author, start, end = author[order], start[order], end[order]

    d = cfg.latent_dim
    latent = pop.author_latent[author] + 0.3 * rng.standard_normal((len(author), d)) / np.sqrt(d)
    return Rooms(
        author=author,
        start=start,
        end=end,
        latent=latent,
        embedding=embed(pop.projection, latent, cfg.content_emb_noise, rng),
        log_popularity=pop.author_log_popularity[author] + 0.3 * rng.standard_normal(len(author)),
        live_type=rng.integers(0, 4, size=len(author)),
        category=pop.author_category[author],
    )


def build_highlights(cfg: WorldConfig, rooms: Rooms, rng: np.random.Generator) -> Highlights:
    hc = cfg.highlight
    slot_ms = int(hc.slot_min * MINUTE_MS)
    n_slots = np.ceil((rooms.end - rooms.start) / slot_ms).astype(np.int64)
    room = np.repeat(np.arange(len(rooms)), n_slots)
    slot_index = within_group(n_slots)
    slot_start = rooms.start[room] + slot_index * slot_ms
    has_highlight = rng.random(len(room)) < hc.probability_per_slot
    room, slot_start = room[has_highlight], slot_start[has_highlight]
    duration = (rng.uniform(hc.duration_min_min, hc.duration_max_min, size=len(room)) * MINUTE_MS).astype(np.int64)
    offset = (rng.random(len(room)) * np.maximum(slot_ms - duration, 0)).astype(np.int64)
    start = slot_start + offset
    end = np.minimum(start + duration, rooms.end[room])
    keep = end - start >= MINUTE_MS
    room, start, end = room[keep], start[keep], end[keep]
    # Peaks vary from room to room around the configured strength.
    strength = np.exp(0.2 * rng.standard_normal(len(room)))
    return Highlights(
        room=room,
        start=start,
        end=end,
        peak_ctr_boost=1.0 + (hc.peak_ctr_boost - 1.0) * strength,
        peak_watch_boost=1.0 + (hc.peak_watch_boost - 1.0) * strength,
        peak_position=hc.peak_position,
    )


def impressions_per_minute(rooms: Rooms, room: np.ndarray, t: np.ndarray, window: tuple[int, int] | None = None
                           ) -> np.ndarray:
    """Each room's live impressions per minute it is live (within `window` [from, to) ms if given):
    one figure per room that is live for at least a minute of the window."""
    lo, hi = window if window is not None else (0, np.iinfo(np.int64).max)
    live_ms = np.minimum(rooms.end, hi) - np.maximum(rooms.start, lo)
    inside = (t >= lo) & (t < hi)
    counts = np.bincount(room[inside], minlength=len(rooms))
    keep = live_ms >= MINUTE_MS
    return counts[keep] / (live_ms[keep] / MINUTE_MS)


def busiest_hour(t: np.ndarray, span_ms: int) -> tuple[int, int]:
    """[from, to) ms of the whole hour of the span holding the most live impressions."""
    per_hour = np.bincount(t // HOUR_MS, minlength=max(int(np.ceil(span_ms / HOUR_MS)), 1))
    hour = int(np.argmax(per_hour))
    return hour * HOUR_MS, (hour + 1) * HOUR_MS


@dataclass(frozen=True)
class LiveNowIndex:
    """Which rooms are live in each minute of the span, as CSR arrays, so that candidate
    rooms for millions of exposures are drawn with array indexing alone."""

    offsets: np.ndarray  # [M + 1]
    rooms: np.ndarray  # [sum of minutes rooms are live]

    @classmethod
    def build(cls, rooms: Rooms, span_ms: int) -> "LiveNowIndex":
        n_minutes = int(np.ceil(span_ms / MINUTE_MS))
        first = rooms.start // MINUTE_MS
        last = (rooms.end - 1) // MINUTE_MS
        counts = (last - first + 1).astype(np.int64)
        room_ids = np.repeat(np.arange(len(rooms)), counts)
        minute = np.repeat(first, counts) + within_group(counts)
        order = np.argsort(minute, kind="stable")
        per_minute = np.bincount(minute, minlength=n_minutes)
        offsets = np.concatenate([[0], np.cumsum(per_minute)])
        return cls(offsets=offsets, rooms=room_ids[order])

    def sample(self, t: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """[N, k] rooms live during the minute of each t (with replacement); -1 where none is."""
        if len(self.rooms) == 0:
            return np.full((len(t), k), -1, dtype=np.int64)
        minute = t // MINUTE_MS
        begin, count = self.offsets[minute], self.offsets[minute + 1] - self.offsets[minute]
        pick = begin[:, None] + (rng.random((len(t), k)) * count[:, None]).astype(np.int64)
        return np.where(count[:, None] > 0, self.rooms[np.minimum(pick, len(self.rooms) - 1)], -1)
