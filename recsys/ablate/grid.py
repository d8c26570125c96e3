"""Runs the grid: each experiment of `ablate.experiments` with each seed, one `make train`
subprocess at a time, each writing its CSV metrics (and a W&B run grouped by experiment, tagged
with model, stream and GSU set, job type `ablation`). Runs whose metrics already exist are kept,
so an interrupted grid resumes where it stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from recsys.ablate.report import final_metrics

ROOT = Path(__file__).resolve().parents[2]


def metrics_file(log_dir: Path, run_name: str) -> Path | None:
    versions = sorted((log_dir / run_name).glob("version_*/metrics.csv"))
    return versions[-1] if versions else None


def run_grid(cfg: DictConfig, passthrough: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    ac = cfg.ablate
    log_dir = Path(ac.log_dir)
    # The runs log under ablate.log_dir; the grid's own paths.log_dir must not override that.
    passthrough = [o for o in passthrough if not o.lstrip("+~").startswith("paths.log_dir=")]
    runs: dict[str, dict[int, dict[str, float]]] = {}
    todo = [(e, int(s)) for e in ac.experiments for s in ac.seeds]
    start = time.perf_counter()
    for i, (experiment, seed) in enumerate(todo, 1):
        run_name = f"{experiment}-seed{seed}"
        found = metrics_file(log_dir, run_name)
        if found is not None and not ac.rerun:
            try:
                runs.setdefault(experiment, {})[seed] = final_metrics(found)
                print(f"[{i}/{len(todo)}] {run_name}: kept {found}")
                continue
            except ValueError:
                pass  # an unfinished run: train it again
        args = [sys.executable, "-m", "recsys.train.train", f"+experiment={experiment}", f"seed={seed}",
                f"run_name={run_name}", f"paths.log_dir={log_dir}", *ac.train_overrides, *passthrough]
        t0 = time.perf_counter()
        result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if result.returncode != 0:
            raise RuntimeError(f"{run_name} failed:\n{result.stderr[-3000:]}")
        runs.setdefault(experiment, {})[seed] = final_metrics(metrics_file(log_dir, run_name))
        elapsed = time.perf_counter() - start
        print(f"[{i}/{len(todo)}] {run_name}: CTR AUC {runs[experiment][seed].get('val/auc/ctr', float('nan')):.4f} "
              f"in {time.perf_counter() - t0:.0f} s (grid {elapsed / 60:.1f} min)", flush=True)
    return runs
