"""Replay figures: per-task AUC, GAUC and logloss (recsys/metrics.py) of the online predictions
against the final truth, per group of impressions and push interval, aggregated over seeds (mean
and sample standard deviation); differences between runs paired by seed; the report document with
its `summary` object. Rendering (Markdown, plots, files) is recsys/replay/report.py."""

from __future__ import annotations

import numpy as np

from data_pipelines.dataset import FAST_SLOW, REALTIME
from recsys import metrics
from recsys.replay.catch import summarize
from recsys.replay.sources import FROZEN, ORACLE

# Expected order of overall CTR AUC, best first: fresher labels should not score worse.
BRACKET_ORDER = (ORACLE, REALTIME, FAST_SLOW, FROZEN)
HEADLINE_PAIR = (REALTIME, FAST_SLOW)


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


def paired_difference(values_a: list[float], values_b: list[float]) -> dict:
    """a − b per seed, with the mean and sample standard deviation of those differences."""
    diffs = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    return {"mean": float(diffs.mean()), "sd": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
            "per_seed": diffs.tolist()}


def _ctr_auc(per_run: dict, run: str, seeds: list[int], push: str, group: str) -> list[float]:
    return [per_run[run][s]["push"][push][group]["auc"]["ctr"] for s in seeds]


def build_report(per_run: dict[str, dict[int, dict]], seeds: list[int], counts: dict[str, int],
                 push_every_s: list[int]) -> dict:
    """per_run[run][seed] = {"push": {seconds: {group: group_metrics}}, "catch": {seconds: {fraction:
    [Catch]}}} -> the replay.json document. "catch" holds the first fraction's figures (the headline),
    "catch_by_fraction" every fraction's."""
    headline = str(min(push_every_s))
    groups = list(counts)
    runs = list(per_run)
    report: dict = {"seeds": list(seeds), "impressions": counts, "headline_push_s": int(headline), "runs": {}}
    for run, by_seed in per_run.items():
        push = {p: {g: aggregate([by_seed[s]["push"][p][g] for s in seeds]) for g in groups}
                for p in by_seed[seeds[0]]["push"]}
        pushes = list(by_seed[seeds[0]]["catch"])
        fractions = list(by_seed[seeds[0]]["catch"][pushes[0]]) if pushes else []
        by_fraction = {str(f): {p: summarize([c for s in seeds for c in by_seed[s]["catch"][p][f]]) for p in pushes}
                       for f in fractions}
        report["runs"][run] = {"push": push, "catch": by_fraction[str(fractions[0])] if fractions else {},
                               "catch_by_fraction": by_fraction}

    ranked = [r for r in BRACKET_ORDER if r in runs]
    pairs = [(a, b) for a, b in zip(ranked, ranked[1:])]
    if all(r in runs for r in HEADLINE_PAIR) and HEADLINE_PAIR not in pairs:
        pairs.insert(0, HEADLINE_PAIR)
    report["paired_ctr_auc"] = {f"{a} - {b}": {g: paired_difference(_ctr_auc(per_run, a, seeds, headline, g),
                                                                    _ctr_auc(per_run, b, seeds, headline, g))
                                               for g in groups}
                                for a, b in pairs}
    report["summary"] = _summary(report, runs, headline)
    return report


def _summary(report: dict, runs: list[str], headline: str) -> dict:
    by_run = report["runs"]
    has_highlight = "highlight" in report["impressions"]
    summary: dict = {
        "headline_push_s": int(headline),
        "overall_auc_ctr": {r: by_run[r]["push"][headline]["overall"]["auc"]["ctr"] for r in runs},
        "push_interval_auc_ctr": {r: {p: v["overall"]["auc"]["ctr"] for p, v in by_run[r]["push"].items()}
                                  for r in runs},
    }
    if has_highlight:
        summary["highlight_auc_ctr"] = {r: by_run[r]["push"][headline]["highlight"]["auc"]["ctr"] for r in runs}
        summary["highlight_logloss_ctr"] = {r: by_run[r]["push"][headline]["highlight"]["logloss"]["ctr"]
                                            for r in runs}
        summary["push_interval_highlight_auc_ctr"] = {
            r: {p: v["highlight"]["auc"]["ctr"] for p, v in by_run[r]["push"].items()} for r in runs}
    if all(r in runs for r in HEADLINE_PAIR):
        a, b = HEADLINE_PAIR
        summary["paired_diff_overall_auc_ctr"] = report["paired_ctr_auc"][f"{a} - {b}"]["overall"]
        if has_highlight:
            summary["paired_diff_highlight_auc_ctr"] = report["paired_ctr_auc"][f"{a} - {b}"]["highlight"]
    if all(headline in by_run[r]["catch"] for r in runs):
        for key in ("catch_latency_s_median", "catch_latency_s_p90", "share_caught", "overshoot_mean",
                    "rise_share_median"):
            summary[key] = {r: by_run[r]["catch"][headline][key] for r in runs}
        summary["catch_by_fraction"] = {
            f: {r: {k: by_run[r]["catch_by_fraction"][f][headline][k] for k in ("catch_latency_s_median",
                                                                                  "share_caught")} for r in runs}
            for f in by_run[runs[0]]["catch_by_fraction"]}
    ranked = [r for r in BRACKET_ORDER if r in runs]
    aucs = [summary["overall_auc_ctr"][r] for r in ranked]
    summary["bracket_order"] = {"expected": ranked, "holds": bool(all(x >= y for x, y in zip(aucs, aucs[1:])))}
    return summary
