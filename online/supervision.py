"""How `make online`'s supervisor (online/live.py) treats a component that dies: the restart policy
(backoff doubling up to a cap, a limit per component) and the fault schedules it injects (the drill,
and the chaos run: `online.chaos` SIGKILLs of randomly chosen components at random moments). Pure
decisions, no processes: the supervisor acts on them, tests check them by hand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What the supervisor can start again; the chaos run kills among them.
RESTARTABLE = ("trainer", "joiner", "ranker", "broker", "driver")
CHAOS_WINDOW = (0.1, 0.9)  # of the played span: kills land after the loop is under way and before its end


@dataclass(frozen=True)
class RestartPolicy:
    """conf/online.yaml `online.restart`: a component that exits unexpectedly is started again after
    `backoff_s`, doubled for each earlier restart of the same component up to `backoff_max_s`; the
    (limit + 1)-th death of one component ends the run (a component that cannot stay up is a fault
    to fix, not to hide)."""

    limit: int
    backoff_s: float
    backoff_max_s: float

    def __post_init__(self) -> None:
        if self.limit < 0 or self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            raise ValueError(f"online.restart: limit and backoff_s must be at least 0 and backoff_max_s at least "
                             f"backoff_s, got {self}")

    def delay_s(self, earlier_restarts: int) -> float:
        """The wait before starting a component that has been restarted `earlier_restarts` times."""
        return min(self.backoff_max_s, self.backoff_s * 2.0 ** earlier_restarts)

    def allows(self, earlier_restarts: int) -> bool:
        return earlier_restarts < self.limit


@dataclass(frozen=True)
class Kill:
    share: float  # of the played span, by the driver's clock
    component: str
    signal: str = "SIGKILL"  # SIGKILL: a crash; SIGTERM: an operator's stop (the ranker and broker end cleanly)


# online.drill: the named schedule kept from before the chaos run — the trainer crashed at 30 % of the
# span, the ranker and the broker stopped cleanly at 50 % and 70 %; each started again by the supervisor.
DRILL = (Kill(0.3, "trainer"), Kill(0.5, "ranker", "SIGTERM"), Kill(0.7, "broker", "SIGTERM"))


def fault_schedule(drill: bool, chaos: int, chaos_seed: int) -> list[Kill]:
    """The faults a run injects, in time order: the drill, or `chaos` random SIGKILLs, or none."""
    if drill and chaos:
        raise ValueError("online.drill and online.chaos are two fault schedules: choose one")
    return list(DRILL) if drill else chaos_schedule(chaos, chaos_seed)


def chaos_schedule(kills: int, seed: int, components: tuple[str, ...] = RESTARTABLE) -> list[Kill]:
    """`kills` SIGKILLs at uniform random moments of CHAOS_WINDOW, in time order. Components are drawn
    in shuffled rounds (each round kills every one of `components` once, in a random order), so that
    a run of at least len(components) kills kills each of them."""
    if kills < 0:
        raise ValueError(f"online.chaos must be at least 0, got {kills}")
    rng = np.random.default_rng(seed)
    shares = np.sort(rng.uniform(*CHAOS_WINDOW, size=kills))
    order: list[str] = []
    while len(order) < kills:
        order += [components[i] for i in rng.permutation(len(components))]
    return [Kill(float(s), c) for s, c in zip(shares, order)]
