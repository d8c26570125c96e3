"""World parameters. Each dataclass is built by Hydra from `conf/world/*.yaml` (`_target_`); the
values live there only (conf/world/default.yaml, which the other worlds start from)."""

from __future__ import annotations

from dataclasses import dataclass

HOUR_MS = 3_600_000
MINUTE_MS = 60_000


@dataclass(frozen=True)
class RoomConfig:
    """When live authors go live and for how long."""

    live_day_probability: float  # chance that a live author streams on a given day
    start_jitter_min: float  # spread of the start around the author's habitual hour
    duration_median_min: float
    duration_sigma: float  # lognormal sigma of the duration
    duration_min_min: float
    duration_max_min: float


@dataclass(frozen=True)
class HighlightConfig:
    """Highlight moments: minutes-long segments in which a room's click-through rate and watch
    time rise sharply to a peak and fall back. A room's timeline is cut into slots and each slot
    may hold one segment, so segments never overlap."""

    slot_min: float
    probability_per_slot: float
    duration_min_min: float
    duration_max_min: float
    peak_ctr_boost: float  # click-probability multiplier at the peak
    peak_position: float  # share of the segment before the peak: fast rise, slower fall
    peak_watch_boost: float  # watch-time multiplier at the peak


@dataclass(frozen=True)
class LiveFeedbackConfig:
    """Click, watch time and in-room actions of a live impression."""

    base_ctr_logit: float
    affinity_weight: float
    popularity_weight: float
    max_click_probability: float
    watch_median_s: float
    watch_sigma: float
    watch_affinity_weight: float
    # A minority of clicks turn into long stays (tens of minutes, some beyond an hour); most gifts
    # happen in them, so a share of gifts arrives after the 5-minute and even the 1-hour window.
    long_stay_share: float
    long_stay_median_min: float
    long_stay_sigma: float
    like_per_min: float
    comment_per_min: float
    gift_per_min: float  # for a user of average gift propensity among gifters
    gifter_share: float  # users who ever gift
    gift_prices: list[int]
    gift_price_weights: list[float]


@dataclass(frozen=True)
class ShortFeedbackConfig:
    """Watch time and likes of a short-video play."""

    duration_median_s: float
    duration_sigma: float
    watch_affinity_weight: float
    like_base_logit: float
    like_affinity_weight: float


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and behaviour of one simulated world. Everything is derived from `seed`."""

    name: str
    seed: int
    start_ms: int  # wall-clock epoch ms of simulated time zero
    span_hours: float
    n_users: int
    n_authors: int
    live_author_share: float  # authors who go live; every author posts short videos
    n_photos: int
    n_categories: int
    latent_dim: int
    content_emb_dim: int
    content_emb_noise: float  # "pretrained multimodal" embedding = latent projection + noise
    affinity_scale: float  # user-item dot products are multiplied by this
    exposures_per_user_mean: float
    activity_sigma: float  # lognormal spread of user activity: a long tail of light users
    live_share: float  # share of exposures that are live rooms (about 9:1 short : live)
    live_preference_sigma: float  # users differ in how often they are shown lives
    candidates_per_exposure: int  # the recommender shows the best of this many random candidates
    users_per_chunk: int  # users simulated together; fixed so results do not depend on memory
    room: RoomConfig
    highlight: HighlightConfig
    live_feedback: LiveFeedbackConfig
    short_feedback: ShortFeedbackConfig

    def __post_init__(self) -> None:
        problems = []
        if self.span_hours <= 0:
            problems.append("span_hours must be positive")
        for name in ("n_users", "n_authors", "n_photos", "n_categories", "latent_dim", "content_emb_dim"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 < self.live_author_share <= 1:
            problems.append("live_author_share must be in (0, 1]")
        if not 0 < self.live_share < 1:
            problems.append("live_share must be in (0, 1)")
        if self.candidates_per_exposure < 1:
            problems.append("candidates_per_exposure must be at least 1")
        if problems:
            raise ValueError(f"world '{self.name}': " + "; ".join(problems))

    @property
    def span_ms(self) -> int:
        return int(round(self.span_hours * HOUR_MS))

    @property
    def n_live_authors(self) -> int:
        return max(1, int(round(self.n_authors * self.live_author_share)))


def world_config_of(values: dict) -> WorldConfig:
    """The WorldConfig a data set was simulated from, as its truth/world.json records it."""
    nested = {"room": RoomConfig, "highlight": HighlightConfig, "live_feedback": LiveFeedbackConfig,
              "short_feedback": ShortFeedbackConfig}
    return WorldConfig(**{k: nested[k](**v) if k in nested else v for k, v in values.items()})
