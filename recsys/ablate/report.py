"""The ablation comparison, built only from the runs' CSV metric files: per experiment and task,
validation AUC / GAUC as mean ± sample std over seeds, and the difference to the reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

METRIC_PREFIXES = ("val/", "val_light/")


def final_metrics(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every validation metric in a Lightning CSVLogger file."""
    frame = pd.read_csv(metrics_csv)
    out = {}
    for column in frame.columns:
        if column.startswith(METRIC_PREFIXES):
            values = frame[column].dropna()
            if len(values):
                out[column] = float(values.iloc[-1])
    if not out:
        raise ValueError(f"{metrics_csv}: no validation metrics (did the run finish?)")
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def compare(runs: dict[str, dict[int, dict[str, float]]], reference: str) -> dict:
    """runs[experiment][seed] = final_metrics(...) -> the ablation.json document."""
    if reference not in runs:
        raise ValueError(f"the reference experiment '{reference}' has no runs")
    metrics = sorted(set.intersection(*(set(m) for by_seed in runs.values() for m in by_seed.values())))
    summary = {}
    for experiment, by_seed in runs.items():
        entry = {"seeds": sorted(by_seed), "mean": {}, "std": {}}
        for name in metrics:
            entry["mean"][name], entry["std"][name] = _mean_std([by_seed[s][name] for s in sorted(by_seed)])
        summary[experiment] = entry
    ref = summary[reference]
    for entry in summary.values():
        entry["diff"] = {m: entry["mean"][m] - ref["mean"][m] for m in metrics}
        entry["beyond_spread"] = {m: abs(entry["diff"][m]) > entry["std"][m] + ref["std"][m] for m in metrics}
    return {"reference": reference, "metrics": metrics, "experiments": summary,
            "runs": {e: {str(s): m for s, m in by_seed.items()} for e, by_seed in runs.items()}}


def _cell(entry: dict, metric: str, reference: bool) -> str:
    mean, std = entry["mean"].get(metric, math.nan), entry["std"].get(metric, math.nan)
    text = f"{mean:.4f} ± {std:.4f}"
    if not reference and metric in entry["diff"]:
        text += f" ({entry['diff'][metric]:+.4f}{'*' if entry['beyond_spread'][metric] else ''})"
    return text


def markdown(doc: dict, tasks: list[str]) -> str:
    ref = doc["reference"]
    lines = ["# Ablation grid", "",
             f"Validation on the later time slice; mean ± sample std over seeds; in brackets the difference to "
             f"`{ref}`, starred when it exceeds the sum of the two spreads.", ""]
    for kind, title in (("auc", "AUC"), ("gauc", "GAUC")):
        columns = [f"val/{kind}/{t}" for t in tasks]
        if kind == "auc":
            columns.append("val_light/auc/ctr")
        names = [c.split("/")[-1] if not c.startswith("val_light") else "ctr, light users" for c in columns]
        lines += [f"## {title}", "", "| experiment | " + " | ".join(names) + " |", "|---" * (len(columns) + 1) + "|"]
        for experiment, entry in doc["experiments"].items():
            cells = [_cell(entry, c, experiment == ref) for c in columns]
            lines.append(f"| {experiment} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![CTR AUC by experiment](ablation.png)", ""]
    return "\n".join(lines)


def write(doc: dict, reports_dir: Path, tasks: list[str]) -> tuple[Path, Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    paths = reports_dir / "ablation.json", reports_dir / "ablation.md", reports_dir / "ablation.png"
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    paths[1].write_text(markdown(doc, tasks))
    plot(doc, ["val/auc/ctr", "val_light/auc/ctr"], paths[2])
    return paths


def plot(doc: dict, metrics: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["experiments"])
    metrics = [m for m in metrics if m in doc["metrics"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [doc["experiments"][n]["mean"][metric] for n in names]
        stds = [doc["experiments"][n]["std"][metric] for n in names]
        colors = ["tab:gray" if n == doc["reference"] else "tab:blue" for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=colors)
        ax.axhline(doc["experiments"][doc["reference"]]["mean"][metric], color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_ylim(min(means) - 0.02, max(means) + 0.02)
        ax.set_title(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
