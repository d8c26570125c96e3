"""reports/<name>.{json,md,png}: what a run of the live loop served and how fast it learned, computed
from the run's record (online/record.py) and its config alone — `figures.py` computes, `render.py`
renders, `compare.py` runs the replay it is compared against. `python -m online.report [overrides]`
writes it again for the run the config names."""

from __future__ import annotations

import json
from dataclasses import asdict

from omegaconf import DictConfig

from data_pipelines.configured import build
from data_pipelines.dataset import DataSet
from online.record import LiveRun
from online.report.compare import comparison_predictions
from online.report.figures import build_report
from online.report.render import markdown, plot


def stated_settings(cfg: DictConfig) -> dict:
    """The run's settings the report states, from its components' own config nodes."""
    loop, joiner, push, trainer = (build(cfg[k]) for k in ("online", "joiner", "push", "online_train"))
    return {"speed": loop.speed, "partitions": loop.partitions, "span_s": loop.span_s, "joiner_step_s": joiner.step_s,
            "push_every_s": push.every_s, "full_every_s": push.full_every_s, "seed": trainer.seed,
            "stream": trainer.stream, "learner": asdict(trainer.learner), "ranker_format": loop.ranker_format}


def write_report(run: LiveRun, cfg: DictConfig | None = None) -> dict:
    """The report of `run` (its config: the one the run saved, unless given)."""
    cfg = run.config() if cfg is None else cfg
    comparison = comparison_predictions(cfg) if bool(cfg.online.replay) else None
    learned_stream = str(cfg.online_train.stream)
    report, click_latencies = build_report(run, DataSet(cfg.data.output_dir), int(cfg.task.light_user_max_live),
                                           build(cfg.catch), learned_stream, comparison, stated_settings(cfg))
    run.reports.mkdir(parents=True, exist_ok=True)
    run.report_path(".json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    run.report_path(".md").write_text(markdown(report))
    plot(run.loop(), learned_stream, report["click_to_served"], click_latencies, run.report_path(".png"))
    return report
