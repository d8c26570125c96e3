"""`make replay-worlds`: `make replay` over several worlds — other world seeds of the busy
configuration, or a grid of highlight shapes — each simulated, streamed and replayed by the
project's own jobs (one subprocess at a time), then the realtime − fast_slow differences side by
side: reports/<name>.{json,md} and, for a grid of two or more axes, a heat map per figure.

A world's data lives in data/<world>_<cell>_<digest of its overrides>/ (two sweeps that make the
same world share it) and its replay report in reports/<name>/<cell>/replay.json with the seconds it
took; both are kept, so an interrupted sweep resumes (`rerun: true` redoes everything)."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from data_pipelines.dataset import FINAL, DataSet
from recsys.replay.figures import HEADLINE_PAIR

# The figures compared across worlds: the summary's paired realtime − fast_slow differences.
PAIRED = {"normalized_top1_clicks": "paired_diff_normalized_top1_clicks",
          "highlight_top1_share": "paired_diff_highlight_top1_share",
          "overall_auc_ctr": "paired_diff_overall_auc_ctr",
          "highlight_auc_ctr": "paired_diff_highlight_auc_ctr"}
LABELS = {"normalized_top1_clicks": "normalized top-1 clicks", "highlight_top1_share": "highlight top-1 share",
          "overall_auc_ctr": "CTR AUC overall", "highlight_auc_ctr": "CTR AUC in highlights"}


@dataclass(frozen=True)
class Cell:
    labels: tuple[str, ...]  # one value label per axis
    overrides: tuple[str, ...]  # the world overrides those values make

    @property
    def slug(self) -> str:
        return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-") for label in self.labels)


def cells_of(axes: DictConfig | dict, only: list | None = None) -> list[Cell]:
    """Every combination of one value per axis (axes: name -> {label: [world overrides]}), or the
    combinations listed in `only` (label lists, axis order)."""
    axes = {name: {str(label): [str(o) for o in overrides] for label, overrides in values.items()}
            for name, values in axes.items()}
    combos = list(itertools.product(*(list(values) for values in axes.values())))
    if only is not None:
        wanted = [tuple(str(x) for x in c) for c in only]
        unknown = [c for c in wanted if c not in combos]
        if unknown:
            raise ValueError(f"worlds.only lists combinations the axes do not make: {unknown}")
        combos = [c for c in combos if c in wanted]
    return [Cell(combo, tuple(o for name, label in zip(axes, combo) for o in axes[name][label])) for combo in combos]


def _run(args: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[:1])} failed (exit {done.returncode}); its output: {log}")


def run_cell(wc: DictConfig, cell: Cell, data_dir: Path, reports_dir: Path, passthrough: list[str]
             ) -> tuple[dict, float]:
    """Simulates, streams and replays one world (each step skipped when its output exists); returns
    its replay summary and the seconds the world took when it was run."""
    overrides = [*wc.overrides, *cell.overrides]
    name = f"{wc.world}_{cell.slug}_{hashlib.sha1(' '.join(overrides).encode()).hexdigest()[:8]}"
    world = [f"world={wc.world}", f"world.name={name}", f"paths.data_dir={data_dir}", *overrides]
    out = reports_dir / wc.name / cell.slug
    report, timing = out / "replay.json", out / "seconds.json"
    if not (report.exists() and not wc.rerun):
        start = time.perf_counter()
        data = DataSet(data_dir / name)
        if wc.rerun or not data.has_stream(FINAL):
            _run(["data_pipelines.simulate", *world, "progress=false"], out / "simulate.log")
            _run(["data_pipelines.streams", *world], out / "streams.log")
        _run(["recsys.replay", *world, f"paths.reports_dir={out}", "replay.progress=false", *wc.replay, *passthrough],
             out / "replay.log")
        timing.write_text(json.dumps({"seconds": time.perf_counter() - start}))
    seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else float("nan")
    return json.loads(report.read_text())["summary"], seconds


def spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def compare(cells: list[Cell], summaries: list[dict]) -> dict:
    """Per cell, each figure's realtime − fast_slow difference (mean and sd over model seeds, per
    seed) and each stream's value; over all cells, the spread of the cells' means and of every
    (world, model seed) difference pooled."""
    a, b = HEADLINE_PAIR
    per_cell, across = [], {}
    for cell, summary in zip(cells, summaries):
        row = {"labels": list(cell.labels), "overrides": list(cell.overrides), "figures": {}}
        for figure, paired in PAIRED.items():
            if paired not in summary:
                continue
            values = summary[figure]
            truth = {"truth_optimal": values["truth_optimal"]} if "truth_optimal" in values else {}
            row["figures"][figure] = {"diff": summary[paired], a: values[a], b: values[b], **truth}
        per_cell.append(row)
    for figure in PAIRED:
        rows = [r["figures"][figure] for r in per_cell if figure in r["figures"]]
        if rows:
            across[figure] = {"cell_means": spread([r["diff"]["mean"] for r in rows]),
                              "pooled_seeds": spread([x for r in rows for x in r["diff"]["per_seed"]]),
                              "positive_cells": sum(r["diff"]["mean"] > 0 for r in rows),
                              "positive_seeds": sum(x > 0 for r in rows for x in r["diff"]["per_seed"])}
    return {"pair": f"{a} - {b}", "cells": per_cell, "across": across}


def markdown(wc: DictConfig, axes: list[str], result: dict, minutes: float) -> str:
    base = f"Base world `{wc.world}`" + (f" with `{' '.join(wc.overrides)}`" if wc.overrides else "")
    lines = [f"# Replay over worlds: {wc.name}", "",
             f"{base}; axes {', '.join(f'`{a}`' for a in axes)}; replay overrides "
             f"`{' '.join(wc.replay)}`. Every figure is {result['pair']} (mean ± sd over model seeds; "
             f"per seed in reports/{wc.name}/<cell>/replay.md). {len(result['cells'])} worlds, "
             f"{minutes:.0f} min of simulating, streaming and replaying in all.", "",
             "| " + " | ".join(axes) + " | " + " | ".join(LABELS.values()) + " |",
             "|" + "---|" * (len(axes) + len(LABELS))]
    for row in result["cells"]:
        cells = [f"{row['figures'][f]['diff']['mean']:+.4f} ± {row['figures'][f]['diff']['sd']:.4f}"
                 if f in row["figures"] else "—" for f in LABELS]
        lines.append("| " + " | ".join(row["labels"]) + " | " + " | ".join(cells) + " |")
    lines += ["", "Across worlds (the spread of the worlds' means; every world × model seed pooled; how many "
              "are positive):", "", "| figure | worlds' means | pooled | positive worlds | positive seeds |",
              "|---|---|---|---|---|"]
    for f, s in result["across"].items():
        lines.append(f"| {LABELS[f]} | {s['cell_means']['mean']:+.4f} ± {s['cell_means']['sd']:.4f} | "
                     f"{s['pooled_seeds']['mean']:+.4f} ± {s['pooled_seeds']['sd']:.4f} | "
                     f"{s['positive_cells']} / {s['cell_means']['n']} | {s['positive_seeds']} / "
                     f"{s['pooled_seeds']['n']} |")
    lines += ["", "Each world's streams beside each other (mean over model seeds):", "",
              "| " + " | ".join(axes) + " | " + " | ".join(f"{LABELS[f]}: {s}" for f in
                                                       ("normalized_top1_clicks", "highlight_top1_share")
                                                       for s in (*HEADLINE_PAIR, "truth") if
                                                       not (f == "normalized_top1_clicks" and s == "truth")) + " |",
              "|" + "---|" * (len(axes) + 5)]
    for row in result["cells"]:
        f1, f2 = row["figures"].get("normalized_top1_clicks"), row["figures"].get("highlight_top1_share")
        if f1 is None or f2 is None:
            continue
        cells = [f"{f1[s]:.3f}" for s in HEADLINE_PAIR] + [f"{f2[s]:.1%}" for s in HEADLINE_PAIR] \
            + [f"{f2.get('truth_optimal', float('nan')):.1%}"]
        lines.append("| " + " | ".join(row["labels"]) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def plot_heat_maps(axes: list[str], result: dict, path: Path) -> Path | None:
    """One heat map per figure (rows: the first axis with several values, columns: the second),
    one panel per value of any further axes; None with fewer than two such axes."""
    values = [list(dict.fromkeys(r["labels"][i] for r in result["cells"])) for i in range(len(axes))]
    varying = [i for i, v in enumerate(values) if len(v) > 1]
    if len(varying) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_axis, cols_axis, rest = varying[0], varying[1], [i for i in range(len(axes)) if i not in varying[:2]]
    facets = list(itertools.product(*(values[i] for i in rest))) or [()]
    figures = ["normalized_top1_clicks", "highlight_top1_share"]
    fig, grid = plt.subplots(len(figures), len(facets), figsize=(4.2 * len(facets), 3.6 * len(figures)), squeeze=False)
    for fi, figure in enumerate(figures):
        limit = max([abs(r["figures"][figure]["diff"]["mean"]) for r in result["cells"] if figure in r["figures"]]
                    + [1e-6])
        for ci, facet in enumerate(facets):
            ax = grid[fi][ci]
            table = np.full((len(values[rows_axis]), len(values[cols_axis])), np.nan)
            for r in result["cells"]:
                if figure in r["figures"] and tuple(r["labels"][i] for i in rest) == facet:
                    table[values[rows_axis].index(r["labels"][rows_axis]),
                          values[cols_axis].index(r["labels"][cols_axis])] = r["figures"][figure]["diff"]["mean"]
            image = ax.imshow(table, cmap="RdBu", vmin=-limit, vmax=limit)
            for (y, x), v in np.ndenumerate(table):
                ax.text(x, y, "—" if np.isnan(v) else f"{v:+.3f}", ha="center", va="center", fontsize=9)
            ax.set_xticks(range(len(values[cols_axis])), values[cols_axis])
            ax.set_yticks(range(len(values[rows_axis])), values[rows_axis])
            ax.set_xlabel(axes[cols_axis])
            ax.set_ylabel(axes[rows_axis])
            where = ", ".join(f"{axes[i]} {v}" for i, v in zip(rest, facet))
            ax.set_title(f"{result['pair']}: {LABELS[figure]}" + (f"\n{where}" if where else ""), fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
        head = summary.get("paired_diff_normalized_top1_clicks", {}).get("mean", float("nan"))
        print(f"[{i}/{len(cells)}] {' / '.join(cell.labels)}: {took:.0f} s; "
              f"realtime - fast_slow normalized top-1 clicks {head:+.4f}", flush=True)
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


def _passthrough(overrides: list[str]) -> list[str]:
    """Command-line overrides meant for every replay: not the sweep's own, nor where it writes."""
    own = ("worlds.", "+worlds.", "worlds=", "paths.")
    return [o for o in overrides if not o.startswith(own)]


if __name__ == "__main__":
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path="../../conf", config_name="replay_worlds", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        run_worlds(cfg, _passthrough(list(HydraConfig.get().overrides.task)))

    main()
