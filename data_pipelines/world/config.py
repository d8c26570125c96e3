"""World parameters. Each dataclass is built by Hydra from `conf/world/*.yaml` (`_target_`)."""

from __future__ import annotations

from dataclasses import dataclass, field

HOUR_MS = 3_600_000
MINUTE_MS = 60_000


@dataclass(frozen=True)
class RoomConfig:
    """When live authors go live and for how long."""

    live_day_probability: float = 0.7  # chance that a live author streams on a given day
    start_jitter_min: float = 60.0  # spread of the start around the author's habitual hour
    duration_median_min: float = 60.0
    duration_sigma: float = 0.5  # lognormal sigma of the duration
    duration_min_min: float = 15.0
    duration_max_min: float = 240.0


@dataclass(frozen=True)
class HighlightConfig:
    """Highlight moments: minutes-long segments in which a room's click-through rate and watch
    time rise sharply to a peak and fall back. A room's timeline is cut into slots and each slot
    may hold one segment, so segments never overlap."""

    slot_min: float = 15.0
    probability_per_slot: float = 0.35
    duration_min_min: float = 2.0
    duration_max_min: float = 6.0
    peak_ctr_boost: float = 6.0  # click-probability multiplier at the peak
    peak_position: float = 0.25  # share of the segment before the peak: fast rise, slower fall
    peak_watch_boost: float = 1.8  # watch-time multiplier at the peak


@dataclass(frozen=True)
class LiveFeedbackConfig:
    """Click, watch time and in-room actions of a live impression."""

    base_ctr_logit: float = -2.6
    affinity_weight: float = 1.0
    popularity_weight: float = 0.3
    max_click_probability: float = 0.95
    watch_median_s: float = 45.0
    watch_sigma: float = 1.6
    watch_affinity_weight: float = 0.4
    # A minority of clicks turn into long stays (tens of minutes, some beyond an hour); most gifts
    # happen in them, so a share of gifts arrives after the 5-minute and even the 1-hour window.
    long_stay_share: float = 0.08
    long_stay_median_min: float = 40.0
    long_stay_sigma: float = 0.8
    like_per_min: float = 0.08
    comment_per_min: float = 0.05
    gift_per_min: float = 0.03  # for a user of average gift propensity among gifters
    gifter_share: float = 0.15  # users who ever gift
    gift_prices: list[int] = field(default_factory=lambda: [1, 5, 10, 52, 99, 520])
    gift_price_weights: list[float] = field(default_factory=lambda: [0.45, 0.25, 0.15, 0.08, 0.05, 0.02])


@dataclass(frozen=True)
class ShortFeedbackConfig:
    """Watch time and likes of a short-video play."""

    duration_median_s: float = 25.0
    duration_sigma: float = 0.6
    watch_affinity_weight: float = 1.5
    like_base_logit: float = -3.5
    like_affinity_weight: float = 1.5


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
    n_categories: int = 12
    latent_dim: int = 16
    content_emb_dim: int = 32
    content_emb_noise: float = 0.3  # "pretrained multimodal" embedding = latent projection + noise
    affinity_scale: float = 2.0  # user-item dot products are multiplied by this
    exposures_per_user_mean: float = 200.0
    activity_sigma: float = 1.2  # lognormal spread of user activity: a long tail of light users
    live_share: float = 0.1  # share of exposures that are live rooms (about 9:1 short : live)
    live_preference_sigma: float = 0.6  # users differ in how often they are shown lives
    candidates_per_exposure: int = 8  # the recommender shows the best of this many random candidates
    users_per_chunk: int = 5000  # users simulated together; fixed so results do not depend on memory
    room: RoomConfig = field(default_factory=RoomConfig)
    highlight: HighlightConfig = field(default_factory=HighlightConfig)
    live_feedback: LiveFeedbackConfig = field(default_factory=LiveFeedbackConfig)
    short_feedback: ShortFeedbackConfig = field(default_factory=ShortFeedbackConfig)

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
