"""Label-window semantics, in one place (DESIGN.md, "Label-window streams").

An impression has, per task, the time of its first positive (or none) and an exit time. A stream
engine turns that into samples, each with `report_ts` (when it becomes visible to training) and a
label state per task. Every function here is a pure function of arrays, so the engine can be
mapped over partitions (users, rooms, days) by a distributed runner without shared state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from data_pipelines.contract import ACTION_CODES, MASKED, NEG, POS, PU_POS, TASKS
from data_pipelines.dataset import FINAL

NO_POSITIVE = -1  # in first-positive arrays

# What kind of sample each one is, to order samples with equal report_ts deterministically.
KIND_FAST, KIND_SLOW, KIND_POSITIVE, KIND_EXIT, KIND_FINAL = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Impressions:
    """The label-relevant facts of N live impressions."""

    request_ts: np.ndarray  # [N] ms
    exit_ts: np.ndarray  # [N] ms; equals request_ts for an impression without a click
    first_positive_ts: np.ndarray  # [N, T] ms, NO_POSITIVE where the task never turned positive

    def __len__(self) -> int:
        return len(self.request_ts)


@dataclass(frozen=True)
class Samples:
    """Samples of one stream, sorted by (report_ts, impression, kind)."""

    impression: np.ndarray  # [S] row into the Impressions the samples were made from
    report_ts: np.ndarray  # [S] ms
    kind: np.ndarray  # [S] int8, KIND_*
    state: np.ndarray  # [S, T] int8 label states

    def __len__(self) -> int:
        return len(self.report_ts)

    @staticmethod
    def concat_sorted(parts: list["Samples"]) -> "Samples":
        impression = np.concatenate([p.impression for p in parts])
        report_ts = np.concatenate([p.report_ts for p in parts])
        kind = np.concatenate([p.kind for p in parts])
        state = np.concatenate([p.state for p in parts])
        order = np.lexsort((kind, impression, report_ts))
        return Samples(impression[order], report_ts[order], kind[order], state[order])


def first_positive_times(impressions: pd.DataFrame, actions: pd.DataFrame, long_view_ms: int,
                         tasks: tuple[str, ...] = TASKS) -> np.ndarray:
    """[N, T] first-positive times from canonical live_impressions and live_actions.

    ctr: the click, at request time. lvtr: the moment the stay reaches `long_view_ms`.
    ltr / cmtr / gtr: the first like / comment / gift attributed to the impression.
    """
    n = len(impressions)
    request = impressions["request_ts"].to_numpy()
    clicked = impressions["clicked"].to_numpy()
    long_view = clicked & (impressions["watch_ms"].to_numpy() >= long_view_ms)
    # numpy, not a pandas groupby: the live loop's joiner calls this every step on a few hundred stays.
    ids = impressions["impression_id"].to_numpy()
    by_id = np.argsort(ids, kind="stable")
    action_ids = actions["impression_id"].to_numpy()
    pos = np.minimum(np.searchsorted(ids[by_id], action_ids), max(n - 1, 0))
    if len(action_ids) and (n == 0 or np.any(ids[by_id][pos] != action_ids)):
        raise ValueError("actions name impressions that are not among the impressions given")
    action_row = by_id[pos] if len(action_ids) else np.zeros(0, dtype=np.int64)
    action_code, action_ts = actions["action"].to_numpy(), actions["ts"].to_numpy().astype(np.int64)
    out = np.full((n, len(tasks)), NO_POSITIVE, dtype=np.int64)
    action_of_task = {"ltr": "like", "cmtr": "comment", "gtr": "gift"}
    for j, task in enumerate(tasks):
        if task == "ctr":
            out[:, j] = np.where(clicked, request, NO_POSITIVE)
        elif task == "lvtr":
            out[:, j] = np.where(long_view, request + long_view_ms, NO_POSITIVE)
        elif task in action_of_task:
            mine = action_code == ACTION_CODES[action_of_task[task]]
            first = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(first, action_row[mine], action_ts[mine])
            out[:, j] = np.where(first == np.iinfo(np.int64).max, NO_POSITIVE, first)
        else:
            raise ValueError(f"unknown task '{task}'; known: {TASKS}")
    return out


@dataclass(frozen=True)
class FastSlowStream:
    """The baseline (paper 2.1-2.2). At t0 + fast_window one sample with every task as observed
    in [t0, t0 + fast_window] (pos or neg: later positives are false negatives). At
    t0 + slow_window, only if some task's first positive fell in (fast, slow], one sample with
    those tasks pu_pos and all others masked. Anything later is ignored."""

    fast_window_ms: int = 300_000
    slow_window_ms: int = 3_600_000

    def emit(self, imps: Impressions) -> Samples:
        t0, fp = imps.request_ts[:, None], imps.first_positive_ts
        has = fp != NO_POSITIVE
        fast_end, slow_end = t0 + self.fast_window_ms, t0 + self.slow_window_ms
        fast_state = np.where(has & (fp <= fast_end), POS, NEG).astype(np.int8)
        late = has & (fp > fast_end) & (fp <= slow_end)
        slow_rows = np.flatnonzero(late.any(axis=1))
        n = len(imps)
        fast = Samples(np.arange(n), imps.request_ts + self.fast_window_ms, np.full(n, KIND_FAST, np.int8), fast_state)
        slow = Samples(slow_rows, imps.request_ts[slow_rows] + self.slow_window_ms,
                       np.full(len(slow_rows), KIND_SLOW, np.int8),
                       np.where(late[slow_rows], PU_POS, MASKED).astype(np.int8))
        return Samples.concat_sorted([fast, slow])


@dataclass(frozen=True)
class RealtimeStream:
    """Moment (paper 2.3). Time is cut into ticks from t0: tick k is [t0 + k*tick, t0 + (k+1)*tick).
    At the end of each tick in which some task had its first positive, one sample with those tasks
    pos and all others masked (first-only: later positives of a task are never reported). At the
    end of the tick holding t_exit, one sample with every task that had no positive by then as neg
    and all others masked (none if every task was positive)."""

    tick_ms: int = 30_000

    def tick_end(self, t0: np.ndarray, t: np.ndarray) -> np.ndarray:
        return t0 + ((t - t0) // self.tick_ms + 1) * self.tick_ms

    def emit(self, imps: Impressions) -> Samples:
        n, n_tasks = imps.first_positive_ts.shape
        rows, tasks = np.nonzero(imps.first_positive_ts != NO_POSITIVE)
        report = self.tick_end(imps.request_ts[rows], imps.first_positive_ts[rows, tasks])
        # One sample per (impression, tick) holding at least one first positive.
        order = np.lexsort((report, rows))
        rows, tasks, report = rows[order], tasks[order], report[order]
        new_sample = np.ones(len(rows), dtype=bool)
        new_sample[1:] = (rows[1:] != rows[:-1]) | (report[1:] != report[:-1])
        sample_of = np.cumsum(new_sample) - 1
        pos_state = np.zeros((int(new_sample.sum()), n_tasks), dtype=np.int8)
        pos_state[sample_of, tasks] = POS
        positives = Samples(rows[new_sample], report[new_sample], np.full(len(pos_state), KIND_POSITIVE, np.int8),
                            pos_state)

        exit_report = self.tick_end(imps.request_ts, imps.exit_ts)
        fp = imps.first_positive_ts
        never = (fp == NO_POSITIVE) | (fp > exit_report[:, None])
        exit_rows = np.flatnonzero(never.any(axis=1))
        exits = Samples(exit_rows, exit_report[exit_rows], np.full(len(exit_rows), KIND_EXIT, np.int8),
                        np.where(never[exit_rows], NEG, MASKED).astype(np.int8))
        return Samples.concat_sorted([positives, exits])


@dataclass(frozen=True)
class FinalLabels:
    """Not a training stream: one sample per impression with its final truth for every task,
    reported once everything about it is known. Evaluation reads it."""

    def emit(self, imps: Impressions) -> Samples:
        fp = imps.first_positive_ts
        last = np.maximum(imps.exit_ts, fp.max(axis=1))
        n = len(imps)
        return Samples.concat_sorted([Samples(np.arange(n), last, np.full(n, KIND_FINAL, np.int8),
                                              np.where(fp != NO_POSITIVE, POS, NEG).astype(np.int8))])


class StreamEngine(Protocol):
    def emit(self, imps: Impressions) -> Samples: ...


@dataclass(frozen=True)
class LabelRules:
    """Which label streams are made and by which rules (conf/stream/*.yaml): the tasks, the long-view
    threshold and an engine per stream. Built once from the config and handed to whatever makes
    samples — `make streams` (local and on Ray) and the live loop's label joiner — so that they make
    the same samples."""

    tasks: tuple[str, ...]
    long_view_ms: int
    engines: Mapping[str, StreamEngine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        object.__setattr__(self, "engines", dict(self.engines))
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"stream.tasks must name tasks of {list(TASKS)}, got {list(self.tasks)}")
        if not self.engines:
            raise ValueError("stream.engines names no stream")
        if self.long_view_ms <= 0:
            raise ValueError(f"stream.long_view_ms must be positive, got {self.long_view_ms}")

    @property
    def streams(self) -> list[str]:
        return list(self.engines)

    def emit(self, impressions: pd.DataFrame, actions: pd.DataFrame, with_final: bool = True
             ) -> tuple[Impressions, dict[str, Samples]]:
        """Every stream's samples of canonical `impressions` (whose actions are all in `actions`),
        and the final labels when `with_final` (every impression once: the evaluation stream)."""
        imps = Impressions(impressions["request_ts"].to_numpy(), impressions["exit_ts"].to_numpy(),
                           first_positive_times(impressions, actions, self.long_view_ms, self.tasks))
        samples = {name: engine.emit(imps) for name, engine in self.engines.items()}
        if with_final:
            samples[FINAL] = FinalLabels().emit(imps)
        return imps, samples

