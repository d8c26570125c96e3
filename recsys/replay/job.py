"""`make replay`: both streams, several seeds, the same world and model; reports/replay.{json,md} + PNG."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from data_pipelines.dataset import DataSet
from recsys.allocator import keep_freed_memory
from recsys.data import ShardDataset
from recsys.replay import report as rpt
from recsys.replay.evaluation import EvaluationSet, load_evaluation
from recsys.replay.learner import OnlineLearner
from recsys.replay.loop import ReplayObserver, replay
from recsys.replay.timeline import ReportedSamples, step_edges


def _replay_one(cfg: DictConfig, data: DataSet, stream: str, seed: int, evaluation: EvaluationSet,
                edges: np.ndarray, observer: ReplayObserver | None) -> tuple[np.ndarray, int]:
    """One stream, one seed: (online predictions [N, T], training batches run)."""
    rc = cfg.replay
    dataset = ShardDataset(data.stream(stream), batch_size=int(rc.batch_size))
    learner = OnlineLearner(cfg, data.manifest(stream), seed)
    predictions = replay(learner, ReportedSamples(dataset), evaluation, edges, int(rc.batch_size),
                         int(rc.score_batch_size), observer=observer, progress=bool(rc.progress),
                         desc=f"{stream} seed {seed}")
    return predictions, learner.steps


def _write_reports(cfg: DictConfig, report: dict, evaluation: EvaluationSet, predictions: dict[str, np.ndarray],
                   tasks: list[str]) -> list[Path]:
    """replay.{json,md} and the two plots; `predictions` (one seed's, per stream) feed the calibration plot."""
    rc, streams = cfg.replay, list(cfg.replay.streams)
    reports_dir = Path(cfg.paths.reports_dir)
    ctr = tasks.index("ctr") if "ctr" in tasks else 0
    report["config"] = {"step_minutes": int(rc.step_minutes), "batch_size": int(rc.batch_size),
                        "light_user_max_live": int(rc.light_user_max_live), "model_levels":
                        int(cfg.model.multitask.n_levels), "gsus": list(cfg.cross.gsu_names)}
    paths = [reports_dir / "replay_auc.png", reports_dir / "replay_calibration.png"]
    rpt.plot_auc(report, streams, tasks[ctr], paths[0])
    report["calibration_rooms"] = rpt.plot_calibration(evaluation, predictions, ctr, int(rc.calibration.rooms),
                                                       int(rc.calibration.bin_minutes),
                                                       int(rc.calibration.window_minutes), paths[1])
    return [*rpt.write(report, reports_dir, streams, tasks), *paths]


def run_replay(cfg: DictConfig, observer: ReplayObserver | None = None) -> dict:
    keep_freed_memory()
    rc = cfg.replay
    data = DataSet(cfg.data.output_dir)
    streams, seeds = list(rc.streams), [int(s) for s in rc.seeds]
    tasks = list(data.manifest(streams[0])["tasks"])
    evaluation = load_evaluation(data, int(rc.light_user_max_live))
    edges = step_edges(int(evaluation.request_ts[0]), int(evaluation.request_ts[-1]), int(rc.step_minutes) * 60_000)
    print(f"replay on '{data.name}': {len(evaluation):,} impressions, {len(edges) - 1} steps of "
          f"{rc.step_minutes} min, streams {streams}, seeds {seeds}")

    runs_dir = Path(cfg.paths.reports_dir) / "replay"
    runs_dir.mkdir(parents=True, exist_ok=True)
    per_run: dict[str, dict[int, dict]] = {s: {} for s in streams}
    first_seed_predictions = {}
    for seed in seeds:
        for stream in streams:
            start = time.perf_counter()
            predictions, steps = _replay_one(cfg, data, stream, seed, evaluation, edges, observer)
            np.savez_compressed(runs_dir / f"{stream}-seed{seed}.npz", predictions=predictions,
                                impression_id=evaluation.arrays["impression_id"])
            per_run[stream][seed] = {g: rpt.group_metrics(predictions[mask], evaluation.labels[mask],
                                                          evaluation.users[mask], tasks)
                                     for g, mask in evaluation.groups.items()}
            first_seed_predictions.setdefault(stream, predictions)
            figures = ", ".join(f"{g} {m['auc'][tasks[0]]:.4f}" for g, m in per_run[stream][seed].items())
            print(f"  {stream:<9} seed {seed}: {steps} training batches in {time.perf_counter() - start:.0f} s; "
                  f"{tasks[0]} AUC {figures}")

    report = rpt.build_report(per_run, seeds, {g: int(mask.sum()) for g, mask in evaluation.groups.items()})
    paths = _write_reports(cfg, report, evaluation, first_seed_predictions, tasks)
    print("wrote " + ", ".join(str(p) for p in paths))
    return report
