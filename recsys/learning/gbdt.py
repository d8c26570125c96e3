"""A learner for the gradient-boosted trees peer (recsys/model/gbdt.py): it keeps every sample it is
given and refits its boosters from scratch, on all of them, when a model is asked for and the last
refit is at least `refit_every_s` old on the replay's clock (the times of the rows it scores).
Between refits, every push serves the last boosters, as a ranker would serve the last model a slow
trainer finished.

Labels as the other models learn them (contract label states): a task's booster fits the samples
whose state for that task is not masked, label 1 for positive states. A task without both labels
yet predicts the share of positives seen so far (0 before any)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightgbm
import numpy as np
import torch

from data_pipelines.contract import MASKED, POSITIVE_STATES
from recsys.data.batch import Batch
from recsys.model.gbdt import CATEGORICAL, GbdtSpec, feature_names, features


@dataclass(frozen=True)
class Refit:
    at_ms: int  # the replay time it served from
    samples: int  # samples it fitted
    seconds: float  # wall time of the refit, every task's booster


class GbdtLearner:
    def __init__(self, spec: GbdtSpec, tasks: list[str], gsu_names: list[str], seed: int):
        self.spec, self.tasks, self.gsu_names, self.seed = spec, list(tasks), list(gsu_names), int(seed)
        self.columns = spec.columns(self.gsu_names)
        self.names = [feature_names(self.gsu_names)[i] for i in self.columns]
        self._rows: list[np.ndarray] = []
        self._states: list[np.ndarray] = []
        self._learned = 0  # samples given to train()
        self._fitted = 0  # samples the current boosters fitted
        self._boosters: list[lightgbm.Booster | None] = [None] * len(self.tasks)
        self._priors = np.zeros(len(self.tasks))
        self._last_window: int | None = None
        self.refits: list[Refit] = []
        self.steps = 0  # the model's version: one per refit

    @property
    def refit_s(self) -> float:
        """Seconds spent refitting: this learner's learning time."""
        return sum(r.seconds for r in self.refits)

    def train(self, batch: Batch) -> float:
        """Keeps the batch's samples for the next refit; nothing is learned yet (no loss: NaN)."""
        self._rows.append(features(batch, self.gsu_names)[:, self.columns])
        self._states.append(batch.states.numpy().astype(np.int8))
        self._learned += len(batch)
        return float("nan")

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Per-task probabilities [B, T] of the boosters as they are, after a refit if one is due at
        the batch's earliest request time."""
        self._refit_if_due(int(batch.request_ts.min()))
        x = features(batch, self.gsu_names)[:, self.columns]
        out = np.tile(self._priors, (len(batch), 1))
        for t, booster in enumerate(self._boosters):
            if booster is not None:
                out[:, t] = booster.predict(x, num_threads=self._threads())
        return torch.from_numpy(out.astype(np.float32))

    def importance(self, task: str = "ctr") -> dict[str, float]:
        """Each feature's share of the total split gain in `task`'s booster as last refitted,
        largest first (empty before a booster exists): what the trees lean on."""
        booster = self._boosters[self.tasks.index(task)]
        if booster is None:
            return {}
        gain = booster.feature_importance(importance_type="gain")
        order = np.argsort(-gain, kind="stable")
        return {self.names[i]: float(gain[i] / max(gain.sum(), 1e-12)) for i in order}

    def _threads(self) -> int:
        return int(self.spec.params.get("num_threads", 0))

    def _refit_if_due(self, now_ms: int) -> None:
        window = now_ms // (self.spec.refit_every_s * 1000)
        if self._learned == self._fitted or (self._last_window is not None and window <= self._last_window):
            return
        start = time.perf_counter()
        x, states = np.concatenate(self._rows), np.concatenate(self._states)
        self._rows, self._states = [x], [states]
        categorical = [self.names.index(f) for f in CATEGORICAL if f in self.names]
        params = {**self.spec.params, "objective": "binary", "seed": self.seed, "verbosity": -1}
        datasets: dict[bytes, lightgbm.Dataset] = {}  # one binning per distinct mask (the tasks share one)
        for t in range(len(self.tasks)):
            learned = states[:, t] != MASKED
            labels = np.isin(states[learned, t], POSITIVE_STATES).astype(np.float64)
            self._priors[t] = labels.mean() if len(labels) else 0.0
            if len(labels) == 0 or labels.min() == labels.max():
                self._boosters[t] = None
                continue
            key = np.packbits(learned).tobytes()
            if key not in datasets:
                datasets[key] = lightgbm.Dataset(x[learned], label=labels, feature_name=self.names,
                                                 categorical_feature=categorical, params=params,
                                                 free_raw_data=False).construct()
            dataset = datasets[key]
            dataset.set_label(labels)
            self._boosters[t] = lightgbm.train(params, dataset, num_boost_round=self.spec.num_boost_round)
        self._fitted, self._last_window = self._learned, window
        self.steps += 1
        self.refits.append(Refit(now_ms, self._fitted, time.perf_counter() - start))


def refit_summary(refits: list[Refit], runs: int, every_s: int) -> dict:
    """What the report says of a refitting learner's refits over `runs` runs: the longest one bounds
    the shortest push interval the learner could keep in real time (under the run's load)."""
    longest = max(refits, key=lambda r: r.seconds, default=None)
    return {"every_s": every_s, "per_run": len(refits) / max(runs, 1),
            "mean_s": float(np.mean([r.seconds for r in refits])) if refits else None,
            "max_s": None if longest is None else longest.seconds,
            "max_samples": None if longest is None else longest.samples}
