"""Who is shown what, and when: exposure times, the short-video / live mix, and a simple
recommender that shows the best of a few random candidates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.world.config import HOUR_MS, WorldConfig
from data_pipelines.world.latent import DIURNAL_WEIGHTS, Population
from data_pipelines.world.rooms import LiveNowIndex, Rooms


@dataclass(frozen=True)
class Exposures:
    """One chunk of users' exposures. Times are ms since simulated time zero."""

    short_user: np.ndarray  # [Ns]
    short_photo: np.ndarray  # [Ns]
    short_t: np.ndarray  # [Ns]
    live_user: np.ndarray  # [Nl]
    live_room: np.ndarray  # [Nl]
    live_t: np.ndarray  # [Nl]


def hour_bin_weights(cfg: WorldConfig) -> np.ndarray:
    """Probability of each hour-long bin of the span under the diurnal pattern."""
    n_bins = int(np.ceil(cfg.span_hours))
    start_hour = int((cfg.start_ms % (24 * HOUR_MS)) // HOUR_MS)
    weights = DIURNAL_WEIGHTS[(start_hour + np.arange(n_bins)) % 24].copy()
    weights[-1] *= cfg.span_hours - (n_bins - 1)  # the last bin may be partial
    return weights / weights.sum()


def live_coverage(cfg: WorldConfig, live_now: LiveNowIndex) -> float:
    """Share of exposure time (diurnally weighted) during which at least one room is live.
    Live exposures are drawn at rate live_share / coverage when rooms are live, so that the
    overall short : live mix is the configured one."""
    per_minute_live = np.diff(live_now.offsets) > 0
    n_minutes = len(per_minute_live)
    minute_weights = np.repeat(hour_bin_weights(cfg), 60)[:n_minutes]
    covered = float((minute_weights * per_minute_live).sum() / minute_weights.sum())
    return max(covered, 1e-6)


def affinity(user_latent: np.ndarray, item_latent: np.ndarray, scale: float) -> np.ndarray:
    """Row-wise scaled dot products of two [N, d] arrays."""
    return scale * np.einsum("nd,nd->n", user_latent, item_latent)


def _best_candidate(
    user: np.ndarray,
    candidates: np.ndarray,  # [N, K], -1 marks an unavailable candidate
    user_latent: np.ndarray,
    item_latent: np.ndarray,
    item_bias: np.ndarray,
    scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Index of the candidate with the highest affinity + bias + Gumbel noise (-1 if none)."""
    n, k = candidates.shape
    scores = np.full((n, k), -np.inf)
    valid = candidates >= 0
    for j in range(k):  # one column at a time keeps memory at [N, d]
        ok = valid[:, j]
        item = candidates[ok, j]
        scores[ok, j] = (
            affinity(user_latent[user[ok]], item_latent[item], scale)
            + item_bias[item]
            + rng.gumbel(size=ok.sum())
        )
    best = np.argmax(scores, axis=1)
    chosen = candidates[np.arange(n), best]
    return np.where(valid.any(axis=1), chosen, -1)


def draw_exposures(
    cfg: WorldConfig,
    pop: Population,
    rooms: Rooms,
    live_now: LiveNowIndex,
    coverage: float,
    users: np.ndarray,
    rng: np.random.Generator,
) -> Exposures:
    counts = rng.poisson(cfg.exposures_per_user_mean * pop.user_activity[users])
    user = np.repeat(users, counts)
    hour_bin = rng.choice(len(hour_bin_weights(cfg)), size=len(user), p=hour_bin_weights(cfg))
    t = np.minimum((hour_bin + rng.random(len(user))) * HOUR_MS, cfg.span_ms - 1).astype(np.int64)
    order = np.lexsort((t, user))
    user, t = user[order], t[order]

    p_live = np.minimum(cfg.live_share * pop.user_live_preference[user] / coverage, 0.9)
    wants_live = rng.random(len(user)) < p_live
    k = cfg.candidates_per_exposure

    # Lives: candidates must be live at the exposure time itself, not just in its minute.
    lu, lt = user[wants_live], t[wants_live]
    cand = live_now.sample(lt, k, rng)
    safe = np.maximum(cand, 0)
    cand = np.where((cand >= 0) & (rooms.start[safe] <= lt[:, None]) & (lt[:, None] < rooms.end[safe]), cand, -1)
    room = _best_candidate(lu, cand, pop.user_latent, rooms.latent, 0.5 * rooms.log_popularity,
                           cfg.affinity_scale, rng)
    has_room = room >= 0

    # Shorts: everything else, including live slots at moments when no room was live.
    su = np.concatenate([user[~wants_live], lu[~has_room]])
    st = np.concatenate([t[~wants_live], lt[~has_room]])
    photo_weight = np.exp(0.5 * pop.author_log_popularity[pop.photo_author])
    cand = rng.choice(len(pop.photo_author), size=(len(su), k), p=photo_weight / photo_weight.sum())
    photo = _best_candidate(su, cand, pop.user_latent, pop.photo_latent, np.zeros(len(photo_weight)),
                            cfg.affinity_scale, rng)
    return Exposures(
        short_user=su, short_photo=photo, short_t=st,
        live_user=lu[has_room], live_room=room[has_room], live_t=lt[has_room],
    )


def unique_rows(*columns: np.ndarray) -> np.ndarray:
    """Boolean mask keeping the first of rows that are equal in every column."""
    if len(columns[0]) == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort(columns[::-1])
    same_as_previous = np.ones(len(order) - 1, dtype=bool)
    for col in columns:
        same_as_previous &= col[order][1:] == col[order][:-1]
    keep = np.ones(len(order), dtype=bool)
    keep[order[1:][same_as_previous]] = False
    return keep




def outside_own_stays(user: np.ndarray, room: np.ndarray, t: np.ndarray, exit_t: np.ndarray) -> np.ndarray:
    """Mask of live impressions that do not fall inside the same user's ongoing stay in the same
    room (a viewer already in a room is not shown it again). Removing an impression can end a
    stay early and so re-admit a later one; the fixed point is reached in a few passes."""
    keep = np.ones(len(t), dtype=bool)
    order = np.lexsort((t, room, user))
    u, r, ts, ex = user[order], room[order], t[order], exit_t[order]
    group_start = np.ones(len(order), dtype=bool)
    group_start[1:] = (u[1:] != u[:-1]) | (r[1:] != r[:-1])
    group_id = np.cumsum(group_start) - 1
    kept_sorted = np.ones(len(order), dtype=bool)
    while True:
        # Latest exit among kept earlier impressions of the same (user, room).
        exits = np.where(kept_sorted, ex, np.iinfo(np.int64).min)
        running = pd.Series(exits).groupby(group_id).cummax().to_numpy()
        previous = np.concatenate([[np.iinfo(np.int64).min], running[:-1]])
        previous[group_start] = np.iinfo(np.int64).min
        new_kept = ts >= previous
        if np.array_equal(new_kept, kept_sorted):
            break
        kept_sorted = new_kept
    keep[order] = kept_sorted
    return keep
