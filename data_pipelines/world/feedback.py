"""What users do once shown something: live clicks, stays and in-room actions with their
delays; short-video watch time and likes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.world.config import MINUTE_MS, WorldConfig
from data_pipelines.world.exposures import affinity
from data_pipelines.world.latent import Population
from data_pipelines.world.rooms import Highlights, Rooms

LIKE, COMMENT, GIFT = 0, 1, 2


@dataclass(frozen=True)
class LiveOutcomes:
    """Per live impression [N]; `exit_t` equals `t` for impressions without a click."""

    true_ctr: np.ndarray
    highlight_segment: np.ndarray  # -1 outside highlights
    highlight_intensity: np.ndarray  # 0 outside, 1 at a segment's peak
    clicked: np.ndarray
    exit_t: np.ndarray


@dataclass(frozen=True)
class LiveActions:
    """In-room actions [M], each inside its impression's stay (t, exit_t]."""

    impression: np.ndarray  # index into the chunk's live impressions
    kind: np.ndarray  # LIKE, COMMENT or GIFT
    t: np.ndarray
    gift_price: np.ndarray  # 0 for likes and comments


@dataclass(frozen=True)
class ShortOutcomes:
    leave_t: np.ndarray  # [N]
    liked: np.ndarray  # [N]
    like_t: np.ndarray  # [N], meaningful where liked


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _click_model(cfg: WorldConfig, pop: Population, rooms: Rooms, highlights: Highlights, user: np.ndarray,
                 room: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(affinity, highlight segment, highlight intensity, click probability) of live impressions."""
    fc = cfg.live_feedback
    aff = affinity(pop.user_latent[user], rooms.latent[room], cfg.affinity_scale)
    segment, intensity = highlights.shape_at(room, t, cfg.span_ms)
    seg = np.maximum(segment, 0)
    ctr_boost = np.where(segment >= 0, 1.0 + (highlights.peak_ctr_boost[seg] - 1.0) * intensity, 1.0)
    base = _sigmoid(fc.base_ctr_logit + fc.affinity_weight * aff + fc.popularity_weight * rooms.log_popularity[room])
    return aff, segment, intensity, np.minimum(base * ctr_boost, fc.max_click_probability)


def true_click_probability(cfg: WorldConfig, pop: Population, rooms: Rooms, highlights: Highlights,
                           user: np.ndarray, room: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the probability that `user` clicks `room` shown at simulated time `t`, the room's highlight
    segment then or -1) — `t` in ms from the world's start, the room live then: the very function
    the simulator draws every live click from, so any (user, room, time) — logged or not — can be
    scored against the truth."""
    _, segment, _, probability = _click_model(cfg, pop, rooms, highlights, user, room, t)
    return probability, segment


def live_outcomes(
    cfg: WorldConfig,
    pop: Population,
    rooms: Rooms,
    highlights: Highlights,
    user: np.ndarray,
    room: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
) -> tuple[LiveOutcomes, LiveActions]:
    fc = cfg.live_feedback
    aff, segment, intensity, true_ctr = _click_model(cfg, pop, rooms, highlights, user, room, t)
    seg = np.maximum(segment, 0)
    watch_boost = np.where(segment >= 0, 1.0 + (highlights.peak_watch_boost[seg] - 1.0) * intensity, 1.0)
    clicked = rng.random(len(t)) < true_ctr

    long_stay = rng.random(len(t)) < np.minimum(fc.long_stay_share * np.exp(0.5 * aff), 0.5)
    log_watch = np.where(
        long_stay,
        np.log(fc.long_stay_median_min * MINUTE_MS) + fc.long_stay_sigma * rng.standard_normal(len(t)),
        np.log(fc.watch_median_s * 1000.0) + fc.watch_sigma * rng.standard_normal(len(t)),
    ) + fc.watch_affinity_weight * aff + np.log(watch_boost)
    room_left = rooms.end[room] - t  # >= 1: the room was live at t
    watch = np.minimum(np.maximum(np.exp(log_watch), 1000.0), room_left).astype(np.int64)
    exit_t = np.where(clicked, t + watch, t)

    # In-room actions arrive uniformly over the stay, at a rate per minute watched: a gift can come
    # an hour or more after entry when the stay is that long.
    stay_min = np.where(clicked, (exit_t - t) / MINUTE_MS, 0.0)
    rates = {
        LIKE: fc.like_per_min * np.exp(0.5 * aff),
        COMMENT: fc.comment_per_min * np.exp(0.5 * aff),
        GIFT: fc.gift_per_min * pop.user_gift_propensity[user] * np.exp(0.3 * aff),
    }
    impression, kind, action_t = [], [], []
    for action_kind, rate in rates.items():
        n = rng.poisson(rate * stay_min)
        idx = np.repeat(np.arange(len(t)), n)
        stay = exit_t[idx] - t[idx]
        impression.append(idx)
        kind.append(np.full(len(idx), action_kind, dtype=np.int8))
        action_t.append(t[idx] + 1 + (rng.random(len(idx)) * np.maximum(stay - 1, 0)).astype(np.int64))
    impression, kind, action_t = np.concatenate(impression), np.concatenate(kind), np.concatenate(action_t)
    prices = np.asarray(fc.gift_prices, dtype=np.int64)
    weights = np.asarray(fc.gift_price_weights, dtype=float)
    gift_price = np.where(kind == GIFT, prices[rng.choice(len(prices), size=len(kind), p=weights / weights.sum())], 0)
    return (
        LiveOutcomes(true_ctr=true_ctr, highlight_segment=segment, highlight_intensity=intensity,
                     clicked=clicked, exit_t=exit_t),
        LiveActions(impression=impression, kind=kind, t=action_t, gift_price=gift_price),
    )


def short_outcomes(
    cfg: WorldConfig, pop: Population, user: np.ndarray, photo: np.ndarray, t: np.ndarray, rng: np.random.Generator
) -> ShortOutcomes:
    sc = cfg.short_feedback
    aff = affinity(pop.user_latent[user], pop.photo_latent[photo], cfg.affinity_scale)
    duration = pop.photo_duration_ms[photo]
    share_watched = _sigmoid(sc.watch_affinity_weight * aff + rng.standard_normal(len(t)))
    watch = np.clip(share_watched * duration, 500, duration).astype(np.int64)
    liked = rng.random(len(t)) < _sigmoid(sc.like_base_logit + sc.like_affinity_weight * aff)
    like_t = t + 1 + (rng.random(len(t)) * np.maximum(watch - 1, 0)).astype(np.int64)
    return ShortOutcomes(leave_t=t + watch, liked=liked, like_t=like_t)
