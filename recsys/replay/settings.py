"""`make replay`'s settings (conf/replay.yaml `replay:`, conf/catch/*.yaml) as dataclasses, one field
per config key, checked once where they are built; the job reads these, never the config."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from recsys.replay.catch import CatchWindows
from recsys.replay.ranking import RankingWindows


def catch_windows(c: DictConfig) -> CatchWindows:
    """conf/catch/*.yaml as CatchWindows."""
    return CatchWindows(bin_s=int(c.bin_seconds), before_s=int(c.before_minutes) * 60,
                        after_s=int(c.after_minutes) * 60, min_impressions=int(c.min_impressions),
                        min_impressions_before=int(c.min_impressions_before),
                        fractions=tuple(float(f) for f in c.fractions))


@dataclass(frozen=True)
class FrozenRun:
    stream: str  # what the frozen model learns from...
    train_share: float  # ...in this first share of the timeline, then never again


@dataclass(frozen=True)
class RankingSettings:
    requests: int  # logged requests whose candidate sets are scored (0: no ranking figures)
    seed: int  # of their sample
    windows: RankingWindows


def ranking_settings(rc: DictConfig, catch: CatchWindows) -> RankingSettings:
    """`replay.ranking`; the catch latency's bins and window are the highlight catch's."""
    s = RankingSettings(requests=int(rc.requests), seed=int(rc.seed), windows=RankingWindows(
        top_k=tuple(int(k) for k in rc.top_k), catch_top_k=int(rc.catch_top_k), catch_share=float(rc.catch_share),
        bin_s=catch.bin_s, after_s=catch.after_s, min_requests=int(rc.min_requests)))
    if s.requests < 0 or 1 not in s.windows.top_k or min(s.windows.top_k) < 1 or s.windows.catch_top_k < 1:
        raise ValueError(f"replay.ranking: requests must be >= 0, top_k must hold 1 (the headline) and every "
                         f"top k be >= 1, got requests={s.requests}, top_k={list(s.windows.top_k)}, "
                         f"catch_top_k={s.windows.catch_top_k}")
    if not 0 < s.windows.catch_share <= 1:
        raise ValueError(f"replay.ranking.catch_share must be in (0, 1], got {s.windows.catch_share}")
    return s


@dataclass(frozen=True)
class ReplaySettings:
    streams: tuple[str, ...]  # the runs: label streams, oracle, frozen
    seeds: tuple[int, ...]
    step_ms: int  # the clock's tick
    batch_size: int
    max_wait_ms: int
    batch_norm_min_batch: int
    push_every_ms: tuple[int, ...]  # the first-listed shortest is the headline
    frozen: FrozenRun
    room_state: bool
    score_batch_size: int
    light_user_max_live: int
    progress: bool
    catch: CatchWindows
    ranking: RankingSettings
    calibration_rooms: int

    @classmethod
    def of(cls, rc: DictConfig) -> "ReplaySettings":
        catch = catch_windows(rc.catch)
        s = cls(streams=tuple(str(r) for r in rc.streams), seeds=tuple(int(x) for x in rc.seeds),
                step_ms=int(rc.step_seconds) * 1000, batch_size=int(rc.batch_size),
                max_wait_ms=int(rc.max_wait_s) * 1000,
                batch_norm_min_batch=int(rc.batch_norm_min_batch),
                push_every_ms=tuple(int(x) * 1000 for x in rc.push_every_s),
                frozen=FrozenRun(str(rc.frozen.stream), float(rc.frozen.train_share)), room_state=bool(rc.room_state),
                score_batch_size=int(rc.score_batch_size), light_user_max_live=int(rc.light_user_max_live),
                progress=bool(rc.progress), catch=catch, ranking=ranking_settings(rc.ranking, catch),
                calibration_rooms=int(rc.calibration.rooms))
        if not s.streams or not s.seeds or not s.push_every_ms:
            raise ValueError("replay.streams, replay.seeds and replay.push_every_s must each name at least one")
        if s.step_ms <= 0 or any(p <= 0 or p % s.step_ms for p in s.push_every_ms):
            raise ValueError(f"replay.push_every_s must be positive multiples of replay.step_seconds "
                             f"({s.step_ms // 1000}), got {list(rc.push_every_s)}")
        if not 0 < s.frozen.train_share <= 1:
            raise ValueError(f"replay.frozen.train_share must be in (0, 1], got {s.frozen.train_share}")
        return s

    @property
    def push_every_s(self) -> list[int]:
        return [p // 1000 for p in self.push_every_ms]
