"""The label-consistency report (the analogue of the paper's Table 1): for each stream and task,
how many true positives the stream ever reports, how many it first reports as negatives, and how
long after the positive happened it becomes visible to training."""

from __future__ import annotations

import numpy as np

from data_pipelines.contract import NEG, POS, PU_POS
from data_pipelines.streams.labels import NO_POSITIVE, Impressions, Samples

_NEVER = np.iinfo(np.int64).max


def _first_report(samples: Samples, n: int, task: int, states: tuple[int, ...]) -> np.ndarray:
    """[N] earliest report_ts of a sample giving `task` one of `states`; _NEVER if none."""
    first = np.full(n, _NEVER, dtype=np.int64)
    hit = np.isin(samples.state[:, task], states)
    np.minimum.at(first, samples.impression[hit], samples.report_ts[hit])
    return first


def consistency_counts(samples: Samples, imps: Impressions, tasks: tuple[str, ...]) -> dict[str, dict]:
    """Per task what the report is made of: true positives, how many are ever reported and how many
    first as a negative (counts), and the report delays in s. Counts add up and delays concatenate
    over any partition of the impressions, so a distributed engine merges these with
    `merge_consistency_counts` and summarises once."""
    n = len(imps)
    out: dict[str, dict] = {}
    for j, task in enumerate(tasks):
        truth = imps.first_positive_ts[:, j]
        positive = truth != NO_POSITIVE
        first_pos = _first_report(samples, n, j, (POS, PU_POS))[positive]
        first_neg = _first_report(samples, n, j, (NEG,))[positive]
        reported = first_pos != _NEVER
        out[task] = {"true_positives": int(positive.sum()), "reported": int(reported.sum()),
                     "false_negatives_first": int((first_neg < first_pos).sum()),
                     "delays_s": (first_pos[reported] - truth[positive][reported]) / 1000.0}
    return out


def merge_consistency_counts(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """The counts of the union of disjoint sets of impressions."""
    return {task: {"true_positives": sum(p[task]["true_positives"] for p in parts),
                   "reported": sum(p[task]["reported"] for p in parts),
                   "false_negatives_first": sum(p[task]["false_negatives_first"] for p in parts),
                   "delays_s": np.concatenate([p[task]["delays_s"] for p in parts])}
            for task in parts[0]}


def summarize_consistency(counts: dict[str, dict]) -> dict:
    """Per task: true_positives, coverage, false_negative_share, delay_median_s, delay_p90_s."""
    out = {}
    for task, c in counts.items():
        positives, delays = c["true_positives"], c["delays_s"]
        out[task] = {
            "true_positives": positives,
            "coverage": c["reported"] / positives if positives else 0.0,
            "false_negative_share": c["false_negatives_first"] / positives if positives else 0.0,
            "delay_median_s": float(np.median(delays)) if len(delays) else None,
            "delay_p90_s": float(np.percentile(delays, 90)) if len(delays) else None,
        }
    return out


def label_consistency(samples: Samples, imps: Impressions, tasks: tuple[str, ...]) -> dict:
    """Per task: coverage, false_negative_share, delay_median_s, delay_p90_s (over true positives)."""
    return summarize_consistency(consistency_counts(samples, imps, tasks))


def render_markdown(report: dict, title: str, sample_counts: dict[str, int] | None = None) -> str:
    lines = [f"# Label consistency — {title}", "",
             "Share of true positives each stream ever reports (coverage), share first reported as a "
             "negative (false negatives), and the delay from the positive to its first report.", ""]
    if sample_counts:
        lines += ["Samples written: " + ", ".join(f"{k} {v:,}" for k, v in sample_counts.items()), ""]
    for stream, per_task in report.items():
        if stream.startswith("_"):
            continue
        lines += [f"## {stream}", "", "| task | true positives | coverage | false negatives first | "
                  "delay median (s) | delay p90 (s) |", "|---|---|---|---|---|---|"]
        for task, r in per_task.items():
            def fmt(x):
                return "—" if x is None else f"{x:,.1f}"
            lines.append(f"| {task} | {r['true_positives']:,} | {r['coverage']:.3f} | "
                         f"{r['false_negative_share']:.3f} | {fmt(r['delay_median_s'])} | {fmt(r['delay_p90_s'])} |")
        lines.append("")
    return "\n".join(lines)
