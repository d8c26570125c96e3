"""Replay figures: per-task AUC, GAUC and logloss (recsys/metrics.py) of the online predictions
against the final truth, per group of impressions, aggregated over seeds (mean and sample standard
deviation), as JSON, Markdown and two plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recsys import metrics


def group_metrics(predictions: np.ndarray, labels: np.ndarray, users: np.ndarray,
                  tasks: list[str]) -> dict[str, dict[str, float]]:
    """{metric: {task: value}} for metrics.METRICS over the given rows (NaN predictions, i.e.
    impressions not scored, are skipped)."""
    flat = metrics.task_metrics(predictions, labels, users, tasks)
    return {m: {t: flat[f"{m}/{t}"] for t in tasks} for m in metrics.METRICS}


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and spread over seeds: {"auc": mean, "auc_std": std, ...} for every metric given
    (sample standard deviation; 0 with a single seed)."""
    out = {}
    for metric in per_seed[0]:
        tasks = list(per_seed[0][metric])
        values = np.array([[run[metric][t] for t in tasks] for run in per_seed], dtype=np.float64)
        out[metric] = dict(zip(tasks, values.mean(0).tolist()))
        std = values.std(0, ddof=1) if len(per_seed) > 1 else np.zeros(len(tasks))
        out[f"{metric}_std"] = dict(zip(tasks, std.tolist()))
    return out


def build_report(per_run: dict[str, dict[int, dict[str, dict]]], seeds: list[int],
                 counts: dict[str, int]) -> dict:
    """per_run[stream][seed][group] = task_metrics(...) -> the replay.json document."""
    report: dict = {"seeds": list(seeds), "impressions": counts}
    for stream, by_seed in per_run.items():
        groups = list(next(iter(by_seed.values())))
        report[stream] = {g: aggregate([by_seed[s][g] for s in seeds]) for g in groups}
    return report


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def markdown(report: dict, streams: list[str], tasks: list[str]) -> str:
    lines = ["# Replay: online predictions against the final truth", "",
             f"Seeds: {report['seeds']} (mean ± sample standard deviation over seeds). Each impression is scored "
             "by the model as trained only on samples reported before its request time.", ""]
    a, b = (streams + [None])[:2]
    for group, n in report["impressions"].items():
        lines += [f"## {group.replace('_', ' ')} ({n:,} impressions)", ""]
        header = "| task | " + " | ".join(f"{s} AUC" for s in streams) + \
                 (f" | AUC {a} − {b} | beyond the spread? | " if b else " | ") + \
                 " | ".join(f"{s} logloss" for s in streams) + " |"
        lines += [header, "|" + "---|" * (1 + 2 * len(streams) + (2 if b else 0))]
        for t in tasks:
            cells = [_fmt(report[s][group]["auc"][t], report[s][group]["auc_std"][t]) for s in streams]
            extra = []
            if b:
                diff = report[a][group]["auc"][t] - report[b][group]["auc"][t]
                spread = report[a][group]["auc_std"][t] + report[b][group]["auc_std"][t]
                # One seed has no spread to be beyond: its zero std would flag every difference.
                beyond = ("yes" if abs(diff) > spread else "no") if len(report["seeds"]) > 1 else "n/a (one seed)"
                extra = [f"{diff:+.4f}", beyond]
            ll = [_fmt(report[s][group]["logloss"][t], report[s][group]["logloss_std"][t]) for s in streams]
            lines.append("| " + " | ".join([t, *cells, *extra, *ll]) + " |")
        lines.append("")
    lines += ["\"Beyond the spread\": the difference of the means exceeds the sum of the two standard deviations.",
              "", "![AUC by group](replay_auc.png)", "", "![calibration around highlights](replay_calibration.png)", ""]
    return "\n".join(lines)


def write(report: dict, reports_dir: Path, streams: list[str], tasks: list[str]) -> tuple[Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = reports_dir / "replay.json", reports_dir / "replay.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report, streams, tasks))
    return json_path, md_path


def plot_auc(report: dict, streams: list[str], task: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(report["impressions"])
    x = np.arange(len(groups))
    width = 0.8 / len(streams)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, s in enumerate(streams):
        means = [report[s][g]["auc"][task] for g in groups]
        stds = [report[s][g]["auc_std"][task] for g in groups]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=stds, capsize=3, label=s)
    ax.set_xticks(x, [g.replace("_", " ") for g in groups])
    lows = [report[s][g]["auc"][task] for s in streams for g in groups]
    ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.05))
    ax.set_ylabel(f"replay {task.upper()} AUC")
    ax.legend()
    ax.set_title(f"Replay {task.upper()} AUC by impression group (mean ± std over {len(report['seeds'])} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_calibration(evaluation, predictions: dict[str, np.ndarray], task_index: int, rooms: int, bin_minutes: int,
                     window_minutes: int, path: Path) -> list[int]:
    """Predicted vs observed CTR over time around the busiest highlight of the `rooms` rooms with the
    most impressions inside highlights. Returns the rooms plotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = evaluation.highlight_segment
    if seg is None or not (seg >= 0).any():
        return []
    segments, counts = np.unique(seg[seg >= 0], return_counts=True)
    chosen, picked_rooms = [], []
    for s in segments[np.argsort(-counts, kind="stable")]:
        room = int(evaluation.live_id[np.flatnonzero(seg == s)[0]])
        if room not in picked_rooms:
            chosen.append(int(s))
            picked_rooms.append(room)
        if len(chosen) == rooms:
            break
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 2.8 * len(chosen)), squeeze=False)
    bin_ms, half = bin_minutes * 60_000, window_minutes * 60_000
    for ax, s, room in zip(axes[:, 0], chosen, picked_rooms):
        inside = np.flatnonzero(seg == s)
        start, end = evaluation.request_ts[inside].min(), evaluation.request_ts[inside].max()
        in_room = (evaluation.live_id == room) & (evaluation.request_ts >= start - half) & \
                  (evaluation.request_ts <= end + half)
        rows = np.flatnonzero(in_room)
        b = (evaluation.request_ts[rows] - (start - half)) // bin_ms
        centers = (np.unique(b) * bin_ms + bin_ms / 2 - half) / 60_000  # minutes from the highlight's start
        def per_bin(values: np.ndarray) -> np.ndarray:
            return np.array([values[b == k].mean() for k in np.unique(b)])
        ax.plot(centers, per_bin(evaluation.labels[rows, task_index]), "k.-", label="observed CTR")
        if evaluation.true_ctr is not None:
            ax.plot(centers, per_bin(evaluation.true_ctr[rows]), "k:", label="true CTR (simulator)")
        for name, p in predictions.items():
            ax.plot(centers, per_bin(p[rows, task_index]), "-", label=f"predicted, {name}")
        ax.axvspan(0, (end - start) / 60_000, color="orange", alpha=0.2, label="highlight")
        ax.set_title(f"room {room}: {len(rows):,} impressions, {bin_minutes}-minute bins")
        ax.set_ylabel("CTR")
    axes[-1, 0].set_xlabel("minutes from the highlight's first impression")
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return picked_rooms
