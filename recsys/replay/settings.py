"""`make replay`'s settings: conf/replay.yaml `replay:` is a `_target_` node whose keys are
ReplaySettings' fields (the learner, catch windows, frozen run and ranking sub-nodes likewise), built
once by `replay_settings` and checked where they are built; the job reads these, never the config."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from data_pipelines.configured import build
from recsys.learning.spec import LearnerSpec
from recsys.replay.catch import CatchWindows
from recsys.replay.ranking import RankingWindows


def _set(obj, **values) -> None:
    for name, value in values.items():
        object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class FrozenRun:
    stream: str  # what the frozen model learns from...
    train_share: float  # ...in this first share of the timeline, then never again

    def __post_init__(self) -> None:
        if not 0 < self.train_share <= 1:
            raise ValueError(f"replay.frozen.train_share must be in (0, 1], got {self.train_share}")


@dataclass(frozen=True)
class RankingSettings:
    """What each model would have recommended (recsys/replay/ranking.py)."""

    requests: int  # logged requests whose candidate sets are scored (0: no ranking figures)
    seed: int  # of their sample
    top_k: tuple[int, ...]  # expected clicks of the top k under the truth, normalized; 1 is the headline
    catch_top_k: int  # ranking catch: the room in the model's top k...
    catch_share: float  # ...for this share of the requests whose truth has it in its top k
    min_requests: int  # such requests a bin needs to count
    bin_s: int  # the ranking catch's bins and window: the highlight catch's (conf/catch)
    after_s: int

    def __post_init__(self) -> None:
        _set(self, top_k=tuple(int(k) for k in self.top_k))
        if self.requests < 0 or 1 not in self.top_k or min(self.top_k) < 1 or self.catch_top_k < 1:
            raise ValueError(f"replay.ranking: requests must be >= 0, top_k must hold 1 (the headline) and every "
                             f"top k be >= 1, got requests={self.requests}, top_k={list(self.top_k)}, "
                             f"catch_top_k={self.catch_top_k}")
        if not 0 < self.catch_share <= 1:
            raise ValueError(f"replay.ranking.catch_share must be in (0, 1], got {self.catch_share}")

    @property
    def windows(self) -> RankingWindows:
        return RankingWindows(top_k=self.top_k, catch_top_k=self.catch_top_k, catch_share=self.catch_share,
                              bin_s=self.bin_s, after_s=self.after_s, min_requests=self.min_requests)


@dataclass(frozen=True)
class ReplaySettings:
    streams: tuple[str, ...]  # the runs: label streams, oracle, frozen
    seeds: tuple[int, ...]
    step_s: int  # the clock's tick
    learner: LearnerSpec  # conf/learner: batches, waits, batch norm — the live trainer's too
    push_every_s: tuple[int, ...]  # the shortest is the headline
    frozen: FrozenRun
    room_state: bool  # false: the room's real-time dense features are zeroed for training and scoring
    until_s: float | None  # data seconds replayed from the first impression; None: the whole data set
    score_batch_size: int
    light_user_max_live: int  # users with at most this many earlier live interactions count as light
    progress: bool
    catch: CatchWindows  # conf/catch
    ranking: RankingSettings
    calibration_rooms: int  # the calibration plot: the busiest highlights' rooms

    def __post_init__(self) -> None:
        _set(self, streams=tuple(str(r) for r in self.streams), seeds=tuple(int(x) for x in self.seeds),
             push_every_s=tuple(int(x) for x in self.push_every_s))
        if not self.streams or not self.seeds or not self.push_every_s:
            raise ValueError("replay.streams, replay.seeds and replay.push_every_s must each name at least one")
        if self.until_s is not None and self.until_s <= 0:
            raise ValueError(f"replay.until_s must be positive (or null: the whole data set), got {self.until_s}")
        if self.step_s <= 0 or any(p <= 0 or p % self.step_s for p in self.push_every_s):
            raise ValueError(f"replay.push_every_s must be positive multiples of replay.step_s ({self.step_s}), "
                             f"got {list(self.push_every_s)}")

    @property
    def step_ms(self) -> int:
        return self.step_s * 1000

    @property
    def push_every_ms(self) -> tuple[int, ...]:
        return tuple(p * 1000 for p in self.push_every_s)


def replay_settings(node: DictConfig) -> ReplaySettings:
    """conf/replay.yaml `replay:` built (its sub-nodes too)."""
    return build(node)
