"""`make replay`: every run (label streams, oracle, frozen) over seeds on the same world and model,
every push interval from one learning run each; reports/replay.{json,md} + plots."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from data_pipelines.configured import build
from data_pipelines.dataset import FINAL, DataSet
from recsys.allocator import keep_freed_memory
from recsys.learning.gbdt import GbdtLearner, refit_summary
from recsys.learning.learner import Learner
from recsys.model.gbdt import GbdtSpec
from recsys.replay import figures
from recsys.replay import report as rpt
from recsys.replay.candidates import CandidateSets, build_candidates, simulated_world
from recsys.replay.ceiling import LoggedBoost, WithOracle, highlight_boost, with_oracle_feature
from recsys.replay.catch import CatchWindows, eligible_segments, highlight_catches
from recsys.replay.settings import ReplaySettings, replay_settings
from recsys.replay.evaluation import EvaluationSet, load_evaluation
from recsys.replay.loop import ReplayObserver, Scored, replay
from recsys.replay.ranking import RankingWindows, ranking_figures
from recsys.replay.runs import (FROZEN, ORACLE, PeerRun, WithoutRoomState, learned_stream, manifest_for,
                                share_of_timeline, training_samples, without_room_state)
from recsys.replay.timeline import step_edges
from recsys.train.precision import warn_if_emulated


def report_name(cfg: DictConfig) -> str:
    """reports/<name>.{json,md}: the feature ablation and experiments (`+experiment=...`) write
    beside the main report, not over it."""
    name = "replay" if bool(cfg.replay.room_state) else "replay_no_room_state"
    experiment = str(cfg.get("experiment_name", "default"))
    return name if experiment == "default" else f"{name}_{experiment}"


IMPRESSIONS, CANDIDATES = "impressions", "candidates"  # what a replayed model scores


class TimedLearner:
    """A learner whose training time is counted (the report's samples learned per second; a
    refitting learner's refits count too), and whose `freeze_tables` stop learning from the first
    batch holding a sample reported at `freeze_at_ms` or later (a peer run's frozen tables)."""

    def __init__(self, learner: Learner | GbdtLearner, freeze_tables: tuple[str, ...] = (),
                 freeze_at_ms: int | None = None):
        self.learner, self._train_s = learner, 0.0
        self.freeze_tables, self.freeze_at_ms = set(freeze_tables), freeze_at_ms

    @property
    def train_s(self) -> float:
        return self._train_s + getattr(self.learner, "refit_s", 0.0)

    def train(self, batch) -> float:
        start = time.perf_counter()
        if self.freeze_tables and int(batch.report_ts.max()) >= self.freeze_at_ms:
            self.learner.freeze_tables(self.freeze_tables)
            self.freeze_tables = set()
        loss = self.learner.train(batch)
        self._train_s += time.perf_counter() - start
        return loss

    def predict(self, batch):
        return self.learner.predict(batch)


def _replay_one(cfg: DictConfig, s: ReplaySettings, data: DataSet, run: str, seed: int, peers: dict[str, PeerRun],
                targets: dict[str, Scored], n_tasks: int, edges: np.ndarray, observer: ReplayObserver | None
                ) -> tuple[dict[str, dict[int, np.ndarray]], object, TimedLearner]:
    """(predictions, the batch closer, the learner)."""
    stream, peer = learned_stream(run, peers), peers.get(run)
    manifest, transform = manifest_for(data, stream, s.frozen.stream), None
    evaluation, room_state = targets[IMPRESSIONS], s.room_state and (peer is None or peer.room_state)
    if peer is not None and not peer.room_state:
        targets = {name: WithoutRoomState(target) for name, target in targets.items()}
    if peer is not None and peer.oracle_input:
        manifest, transform, targets = _with_oracle_input(data, manifest, targets, evaluation)
    if peer is not None and isinstance(peer.model, GbdtSpec):
        inner = GbdtLearner(peer.model, list(manifest["tasks"]), list(peer.cross.gsu_names), seed)
    else:
        inner = Learner(cfg, manifest, seed, batch_norm_min_batch=s.learner.batch_norm_min_batch,
                        model_specs=(peer.model, peer.cross) if peer else None)
    learner = TimedLearner(inner, peer.freeze_tables if peer else (),
                           share_of_timeline(edges, peer.freeze_after_share) if peer else None)
    samples = training_samples(stream, data, evaluation, edges, s.frozen.stream, s.frozen.train_share,
                               room_state, transform)
    predictions, closer = replay(learner, samples, targets, n_tasks, edges, list(s.push_every_ms),
                                 s.learner.batch_size, s.learner.max_wait_ms, s.score_batch_size, observer=observer,
                                 progress=s.progress, desc=f"{run} seed {seed}")
    return predictions, closer, learner


def _with_oracle_input(data: DataSet, manifest, targets: dict[str, Scored], evaluation: EvaluationSet):
    """The ceiling run's manifest, sample transform and targets: every row with the room's true
    highlight multiplier as one more dense feature (recsys/replay/ceiling.py)."""
    if not data.truth.world.exists():
        raise ValueError(f"{data.root}: the ceiling run needs a simulated world's truth (make simulate)")
    world = simulated_world(data)
    logged = LoggedBoost(data, world)
    out: dict[str, Scored] = {IMPRESSIONS: WithOracle(targets[IMPRESSIONS],
                                                      logged.of(evaluation.arrays["impression_id"]))}
    if CANDIDATES in targets:
        c = targets[CANDIDATES]
        out[CANDIDATES] = WithOracle(c, highlight_boost(world, c.live_id, c.request_ts))
    return with_oracle_feature(manifest), logged, out


def _candidates(cfg: DictConfig, s: ReplaySettings, data: DataSet, evaluation: EvaluationSet) -> CandidateSets | None:
    """The candidate sets the ranking figures are computed on: simulated worlds only."""
    if evaluation.highlights is None or not s.ranking.requests:
        return None
    start = time.perf_counter()
    sets = build_candidates(data, s.ranking.requests, s.ranking.seed,
                            span=(int(evaluation.request_ts[0]), int(evaluation.request_ts[-1])), progress=s.progress)
    if not s.room_state:
        sets = dataclasses.replace(sets, arrays=without_room_state(sets.arrays))
    print(f"candidate sets: {sets.requests:,} requests, {len(sets):,} candidates "
          f"({len(sets) / max(sets.requests, 1):.1f} rooms live per request), {time.perf_counter() - start:.0f} s")
    return sets


def _evaluate(evaluation: EvaluationSet, candidates: CandidateSets | None,
              predictions: dict[str, dict[int, np.ndarray]], tasks: list[str], segments: list[int], windows: CatchWindows, ranking: RankingWindows) -> dict:
    """One run's figures: per push interval (seconds) the metrics of every group, the catches (per
    fraction of the rise) and the ranking figures on the candidate sets."""
    ctr = tasks.index("ctr")
    out: dict = {"push": {}, "catch": {}, "ranking": {}}
    for push_ms, p in predictions[IMPRESSIONS].items():
        key = str(push_ms // 1000)
        out["push"][key] = {g: figures.group_metrics(p[mask], evaluation.labels[mask], evaluation.users[mask], tasks)
                            for g, mask in evaluation.groups.items()}
        if evaluation.highlights is not None:
            out["catch"][key] = highlight_catches(evaluation.highlights, segments, evaluation.live_id,
                                                  evaluation.request_ts, p[:, ctr], evaluation.true_ctr,
                                                  evaluation.highlight_segment >= 0, windows)
        if candidates is not None:
            c = candidates
            out["ranking"][key] = ranking_figures(c.offsets, c.request_ts, c.live_id, c.true_ctr, c.segment,
                                                  evaluation.highlights, predictions[CANDIDATES][push_ms][:, ctr],
                                                  ranking)
    return out


def predictions_path(runs_dir: Path, run: str, seed: int) -> Path:
    """reports/<name>/<run>-seed<seed>.npz: every task's prediction of every impression scored, per
    push interval (`push_<s>s`), with the impressions' ids."""
    return runs_dir / f"{run}-seed{seed}.npz"


def _save_predictions(runs_dir: Path, run: str, seed: int, evaluation: EvaluationSet, candidates: CandidateSets | None,
                      predictions: dict[str, dict[int, np.ndarray]], ctr: int) -> None:
    """The predictions (predictions_path); beside them -candidates.npz: the predicted CTR of every
    candidate row."""
    np.savez_compressed(predictions_path(runs_dir, run, seed), impression_id=evaluation.arrays["impression_id"],
                        **{f"push_{ms // 1000}s": p for ms, p in predictions[IMPRESSIONS].items()})
    if candidates is not None:
        np.savez_compressed(runs_dir / f"{run}-seed{seed}-candidates.npz", offsets=candidates.offsets,
                            request_ts=candidates.request_ts, live_id=candidates.live_id, true_ctr=candidates.true_ctr,
                            segment=candidates.segment,
                            **{f"push_{ms // 1000}s": p[:, ctr] for ms, p in predictions[CANDIDATES].items()})


def peer_runs(cfg: DictConfig, runs: list[str]) -> dict[str, PeerRun]:
    """The peers (conf/replay.yaml `peers`) among `runs`, built; a run that is neither a peer nor a
    stream is refused by the streams' check."""
    nodes = cfg.get("peers") or {}
    return {r: build(nodes[r]) for r in runs if r in nodes}


def run_replay(cfg: DictConfig, observer: ReplayObserver | None = None) -> dict:
    keep_freed_memory()
    warn_if_emulated(cfg.trainer.precision, cfg.trainer.accelerator)
    s = replay_settings(cfg.replay)
    data = DataSet(cfg.data.output_dir)
    runs, seeds, push_every_s = list(s.streams), list(s.seeds), list(s.push_every_s)
    peers = peer_runs(cfg, runs)
    data.require_streams({FINAL, s.frozen.stream, *(learned_stream(r, peers) for r in runs)} - {ORACLE, FROZEN})
    tasks = list(data.manifest(s.frozen.stream)["tasks"])
    if "ctr" not in tasks:
        raise ValueError(f"{data.root}: replay reports CTR figures, and the streams have no ctr task ({tasks})")
    evaluation = load_evaluation(data, s.light_user_max_live)
    if s.until_s is not None:  # the first until_s data seconds only
        evaluation = evaluation.first(int(evaluation.request_ts[0]) + int(s.until_s * 1000))
    if not s.room_state:
        evaluation = dataclasses.replace(evaluation, arrays=without_room_state(evaluation.arrays))
    candidates = _candidates(cfg, s, data, evaluation)
    targets: dict[str, Scored] = {IMPRESSIONS: evaluation, **({CANDIDATES: candidates} if candidates else {})}
    edges = step_edges(int(evaluation.request_ts[0]), int(evaluation.request_ts[-1]), s.step_ms)
    windows = s.catch
    segments = [] if evaluation.highlights is None else eligible_segments(
        evaluation.highlights, evaluation.live_id, evaluation.request_ts, evaluation.highlight_segment, windows)
    print(f"replay on '{data.name}': {len(evaluation):,} impressions, {len(edges) - 1} steps of {s.step_ms // 1000} s, "
          f"runs {runs}, seeds {seeds}, push every {push_every_s} s, {len(segments)} highlight segments to catch"
          + ("" if s.room_state else "; room state features zeroed")
          + ("" if s.until_s is None else f"; the first {s.until_s:g} s of the data set"))

    name = report_name(cfg)
    runs_dir = Path(cfg.paths.reports_dir) / name
    runs_dir.mkdir(parents=True, exist_ok=True)
    per_run: dict[str, dict[int, dict]] = {r: {} for r in runs}
    first_seed_predictions: dict[str, np.ndarray] = {}
    head = str(min(push_every_s))  # the headline push interval, seconds
    learned: dict[str, list[tuple[int, float]]] = {r: [] for r in runs}  # (samples, seconds learning) by seed
    refits: dict[str, list] = {}  # a refitting peer's refits, every seed
    importance: dict[str, dict[str, float]] = {}  # a tree peer's CTR gain shares at the end, first seed
    for seed in seeds:
        for run in runs:
            start = time.perf_counter()
            predictions, streaming, learner = _replay_one(cfg, s, data, run, seed, peers, targets, len(tasks), edges,
                                                          observer)
            learned[run].append((streaming.samples, learner.train_s))
            if isinstance(learner.learner, GbdtLearner):
                refits.setdefault(run, []).extend(learner.learner.refits)
                if run not in importance:
                    importance[run] = learner.learner.importance()
            _save_predictions(runs_dir, run, seed, evaluation, candidates, predictions, tasks.index("ctr"))
            per_run[run][seed] = _evaluate(evaluation, candidates, predictions, tasks, segments, windows,
                                           s.ranking.windows)
            first_seed_predictions.setdefault(run, predictions[IMPRESSIONS][int(head) * 1000])
            headline = per_run[run][seed]["push"][head]
            ranked = per_run[run][seed]["ranking"].get(head)
            print(f"  {run:<9} seed {seed}: {streaming.samples:,} samples in {streaming.batches:,} batches, "
                  f"{time.perf_counter() - start:.0f} s; CTR AUC overall {headline['overall']['auc']['ctr']:.4f}"
                  + (f", highlight {headline['highlight']['auc']['ctr']:.4f}" if "highlight" in headline else "")
                  + (f"; normalized top-1 clicks {ranked['top1']['normalized']:.3f}" if ranked else ""))

    learning_rates = {r: sum(n for n, _ in v) / max(sum(t for _, t in v), 1e-9) for r, v in learned.items()}
    report = figures.build_report(per_run, seeds, {g: int(m.sum()) for g, m in evaluation.groups.items()}, push_every_s,
                                  peers=[r for r, p in peers.items() if p.role == "peer"],
                                  controls=[r for r, p in peers.items() if p.role == "control"],
                                  ceiling=next((r for r, p in peers.items() if p.oracle_input), None))
    report["config"] = {"world": data.name, "step_s": s.step_s, "learner": dataclasses.asdict(s.learner),
                        "push_every_s": push_every_s,
                        "room_state": s.room_state, "until_s": s.until_s, "frozen": dataclasses.asdict(s.frozen),
                        "light_user_max_live": s.light_user_max_live,
                        "catch": dataclasses.asdict(windows), "highlight_segments_caught_over": len(segments),
                        "ranking": {"requests": 0 if candidates is None else candidates.requests,
                                    "candidates": 0 if candidates is None else len(candidates),
                                    "seed": s.ranking.seed, **dataclasses.asdict(s.ranking.windows)},
                        "model_levels": int(cfg.model.multitask.n_levels), "gsus": list(cfg.cross.gsu_names),
                        "peers": {r: {"stream": p.stream, "model": type(p.model).__name__,
                                      "interaction": getattr(p.model, "interaction", None),
                                      "gsus": list(p.cross.gsu_names), "freeze_tables": list(p.freeze_tables),
                                      "freeze_at_ms": share_of_timeline(edges, p.freeze_after_share) if p.freeze_tables else None,
                                      "oracle_input": p.oracle_input, "room_state": p.room_state, "role": p.role,
                                      **({"refits": refit_summary(refits[r], len(seeds), p.model.refit_every_s),
                                          "ctr_gain_share": importance[r]} if r in refits else {})}
                                  for r, p in peers.items()},
                        "samples_per_s": learning_rates}
    pooled = {r: {f: [c for s in seeds for c in per_run[r][s]["catch"].get(head, {}).get(f, [])]
                  for f in windows.fractions} for r in runs}
    paths = rpt.write_all(report, evaluation, first_seed_predictions, tasks, Path(cfg.paths.reports_dir), name,
                          s.calibration_rooms, windows, pooled)
    print("wrote " + ", ".join(str(p) for p in paths))
    return report
