"""`make replay`: both streams, several seeds, the same world and model; reports/replay.{json,md} + PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from data_pipelines.ingest.pipeline import CANONICAL
from recsys.allocator import keep_freed_memory
from recsys.data import ShardDataset
from recsys.replay import report as rpt
from recsys.replay.evaluation import load_evaluation
from recsys.replay.learner import OnlineLearner
from recsys.replay.loop import ReplayObserver, replay
from recsys.replay.timeline import ReportedSamples, step_edges



def _manifest(shard_dir: Path) -> dict:
    path = shard_dir / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `make streams` for this world first")
    return json.loads(path.read_text())


def run_replay(cfg: DictConfig, observer: ReplayObserver | None = None) -> dict:
    keep_freed_memory()
    rc = cfg.replay
    shard_root, data_dir = Path(cfg.shards.dir), Path(cfg.data.output_dir)
    streams, seeds = list(rc.streams), [int(s) for s in rc.seeds]
    manifests = {s: _manifest(shard_root / s) for s in streams}
    manifest = manifests[streams[0]]
    tasks = list(manifest["tasks"])
    eval_dataset = ShardDataset(shard_root / cfg.datamodule.eval_stream, batch_size=1)
    evaluation = load_evaluation(eval_dataset, data_dir / CANONICAL, data_dir / "truth", manifest["dense_features"],
                                 int(rc.light_user_max_live))
    edges = step_edges(int(evaluation.request_ts[0]), int(evaluation.request_ts[-1]), int(rc.step_minutes) * 60_000)
    counts = {g: int(mask.sum()) for g, mask in evaluation.groups.items()}
    print(f"replay on '{manifest['data']}': {len(evaluation):,} impressions, {len(edges) - 1} steps of "
          f"{rc.step_minutes} min, streams {streams}, seeds {seeds}")

    reports_dir = Path(cfg.paths.reports_dir)
    runs_dir = reports_dir / "replay"
    runs_dir.mkdir(parents=True, exist_ok=True)
    per_run: dict[str, dict[int, dict]] = {s: {} for s in streams}
    first_seed_predictions = {}
    ctr = tasks.index("ctr") if "ctr" in tasks else 0
    for seed in seeds:
        for stream in streams:
            dataset = ShardDataset(shard_root / stream, batch_size=int(rc.batch_size))
            learner = OnlineLearner(cfg, manifests[stream], seed)
            start = time.perf_counter()
            predictions = replay(learner, ReportedSamples(dataset), evaluation, edges, dataset.to_batch,
                                 dataset.gsu_names, int(rc.batch_size), int(rc.score_batch_size), observer=observer,
                                 progress=bool(rc.progress), desc=f"{stream} seed {seed}")
            np.savez_compressed(runs_dir / f"{stream}-seed{seed}.npz", predictions=predictions,
                                impression_id=evaluation.arrays["impression_id"])
            per_run[stream][seed] = {g: rpt.task_metrics(predictions[mask], evaluation.labels[mask], tasks)
                                     for g, mask in evaluation.groups.items()}
            if seed == seeds[0]:
                first_seed_predictions[stream] = predictions
            figures = ", ".join(f"{g} {per_run[stream][seed][g]['auc'][tasks[ctr]]:.4f}" for g in evaluation.groups)
            print(f"  {stream:<9} seed {seed}: {learner.steps} training batches in "
                  f"{time.perf_counter() - start:.0f} s; {tasks[ctr]} AUC {figures}")

    report = rpt.build_report(per_run, seeds, counts)
    report["config"] = {"step_minutes": int(rc.step_minutes), "batch_size": int(rc.batch_size),
                        "light_user_max_live": int(rc.light_user_max_live), "model_levels":
                        int(cfg.model.multitask.n_levels), "gsus": list(cfg.cross.gsu_names)}
    json_path, md_path = rpt.write(report, reports_dir, streams, tasks)
    rpt.plot_auc(report, streams, tasks[ctr], reports_dir / "replay_auc.png")
    rooms = rpt.plot_calibration(evaluation, first_seed_predictions, ctr, int(rc.calibration.rooms),
                                 int(rc.calibration.bin_minutes), int(rc.calibration.window_minutes),
                                 reports_dir / "replay_calibration.png")
    report["calibration_rooms"] = rooms
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {json_path}, {md_path}, {reports_dir / 'replay_auc.png'}, {reports_dir / 'replay_calibration.png'}")
    return report
