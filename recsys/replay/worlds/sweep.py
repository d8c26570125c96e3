"""`make replay-worlds`, the orchestration: each world of the sweep is composed in this process —
`make simulate`'s, `make streams`' and `make replay`'s configs with the world's overrides — and its
jobs run one at a time, each in a process of its own handed its composed config whole.

A world is named by what it is: its composed world config's digest (`world_name`), so two sweeps, or
two spellings of the same overrides, that make the same world share its data
(data/<base>_<cell>_<digest>/). Its replay report goes to reports/<sweep>/<cell>/replay.json with the
seconds the world took; both are kept, so an interrupted sweep resumes (`rerun: true` redoes all)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from data_pipelines.dataset import FINAL, DataSet
from recsys.replay.worlds.cells import Cell, cells_of
from recsys.replay.worlds.compare import compare
from recsys.replay.worlds.render import markdown, plot_heat_maps

JOBS = ("simulate", "streams", "replay")


def world_name(base: str, cell: Cell, world: DictConfig) -> str:
    """The data folder of a cell's world: the base world, the cell's labels, and a digest of the
    world's composed config (its name left out: it is what is being chosen)."""
    content = {k: v for k, v in OmegaConf.to_container(world, resolve=True).items() if k != "name"}
    digest = hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{base}_{cell.slug}_{digest}"


@dataclass(frozen=True)
class CellConfigs:
    """One world's three jobs, each its composed config, all on the world's data folder."""

    name: str
    simulate: DictConfig
    streams: DictConfig
    replay: DictConfig


def cell_configs(wc: DictConfig, cell: Cell, data_dir: Path, out: Path, passthrough: list[str]) -> CellConfigs:
    world = [f"world={wc.world}", *wc.overrides, *cell.overrides, f"paths.data_dir={data_dir}"]
    configs = {"simulate": compose(config_name="simulate", overrides=[*world, "progress=false"]),
               "streams": compose(config_name="streams", overrides=[*world, "progress=false"]),
               "replay": compose(config_name="replay", overrides=[*world, f"paths.reports_dir={out}",
                                                                  "replay.progress=false", *wc.replay, *passthrough])}
    name = world_name(str(wc.world), cell, configs["simulate"].world)
    for cfg in configs.values():
        cfg.world.name = name
    return CellConfigs(name, **configs)


def _job_main(job: str, config_yaml: str, log: str) -> None:
    """One job of a world, its output into `log`."""
    with open(log, "w") as out:
        os.dup2(out.fileno(), sys.stdout.fileno())
        os.dup2(out.fileno(), sys.stderr.fileno())
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    cfg = OmegaConf.create(config_yaml)
    if job == "simulate":
        from data_pipelines.jobs import run_build_history, run_ingest, run_simulation

        run_simulation(cfg)
        run_ingest(cfg)
        run_build_history(cfg)
    elif job == "streams":
        from data_pipelines.jobs import run_streams

        run_streams(cfg)
    else:
        from recsys.replay.job import run_replay

        run_replay(cfg)


def run_job(job: str, cfg: DictConfig, log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    process = multiprocessing.get_context("spawn").Process(target=_job_main, args=(job, OmegaConf.to_yaml(cfg),
                                                                                    str(log)), name=f"worlds-{job}")
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"make {job} failed (exit {process.exitcode}); its output: {log}")


def run_cell(wc: DictConfig, cell: Cell, data_dir: Path, reports_dir: Path, passthrough: list[str]
             ) -> tuple[dict, float]:
    """Simulates, streams and replays one world (each step skipped when its output exists); returns
    its replay summary and the seconds the world took when it was run."""
    out = reports_dir / wc.name / cell.slug
    report, timing = out / "replay.json", out / "seconds.json"
    if not (report.exists() and not wc.rerun):
        configs = cell_configs(wc, cell, data_dir, out, passthrough)
        start = time.perf_counter()
        if wc.rerun or not DataSet(data_dir / configs.name).has_stream(FINAL):
            run_job("simulate", configs.simulate, out / "simulate.log")
            run_job("streams", configs.streams, out / "streams.log")
        run_job("replay", configs.replay, out / "replay.log")
        timing.write_text(json.dumps({"seconds": time.perf_counter() - start, "world": configs.name}))
    seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else float("nan")
    return json.loads(report.read_text())["summary"], seconds


def run_worlds(cfg: DictConfig, passthrough: list[str]) -> dict:
    wc = cfg.worlds
    cells = cells_of(wc.axes, None if wc.only is None else list(wc.only))
    data_dir, reports_dir = Path(cfg.paths.data_dir), Path(cfg.paths.reports_dir)
    summaries, seconds = [], []
    print(f"replay over {len(cells)} worlds ({wc.name}): " + "; ".join(" / ".join(c.labels) for c in cells))
    for i, cell in enumerate(cells, 1):
        summary, took = run_cell(wc, cell, data_dir, reports_dir, passthrough)
        summaries.append(summary)
        seconds.append(took)
        pairs = {"fast_slow": summary["paired_diff_normalized_top1_clicks"]} if \
            "paired_diff_normalized_top1_clicks" in summary else {}
        pairs.update(summary.get("paired_diff_vs_peers", {}))
        print(f"[{i}/{len(cells)}] {' / '.join(cell.labels)}: {took:.0f} s; normalized top-1 clicks, realtime - "
              + ", ".join(f"{run} {d['mean']:+.4f}" for run, d in pairs.items()), flush=True)
    axes = list(wc.axes)
    result = {"name": wc.name, "world": wc.world, "axes": axes, "replay": list(wc.replay), **compare(cells, summaries)}
    minutes = sum(seconds) / 60  # what running every world took, whenever it ran
    result["minutes"] = minutes
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / f"{wc.name}.json").write_text(json.dumps(result, indent=2))
    text = markdown(wc, axes, result, minutes)
    heat = plot_heat_maps(axes, result, reports_dir / f"{wc.name}.png")
    if heat is not None:
        text += f"\n![{result['pair']} over the grid]({heat.name})\n"
    (reports_dir / f"{wc.name}.md").write_text(text)
    print(f"wrote {reports_dir / wc.name}.json, .md" + (f", {heat.name}" if heat else ""))
    return result


def passthrough_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides meant for every replay: not the sweep's own, nor where it writes."""
    own = ("worlds.", "+worlds.", "worlds=", "paths.")
    return [o for o in overrides if not o.startswith(own)]
