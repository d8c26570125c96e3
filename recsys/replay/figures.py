"""Replay figures: per-task AUC, GAUC and logloss (recsys/metrics.py) of the online predictions
against the final truth, per group of impressions and push interval, aggregated over seeds (mean
and sample standard deviation); differences between runs paired by seed; the report document with
its `summary` object. Rendering (Markdown, plots, files) is recsys/replay/report.py."""

from __future__ import annotations

import numpy as np

from data_pipelines.dataset import FAST_SLOW, REALTIME
from recsys import metrics
from recsys.replay.catch import summarize
from recsys.replay.ranking import summarize_catches
from recsys.replay.runs import FROZEN, ORACLE

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


def per_seed_figure(values) -> dict:
    """One figure per seed, with their mean and sample standard deviation."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "per_seed": v.tolist()}


def paired_difference(values_a: list[float], values_b: list[float]) -> dict:
    """a − b per seed, with the mean and sample standard deviation of those differences."""
    return per_seed_figure(np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64))


def _ctr_auc(per_run: dict, run: str, seeds: list[int], push: str, group: str) -> list[float]:
    return [per_run[run][s]["push"][push][group]["auc"]["ctr"] for s in seeds]


def aggregate_ranking(per_seed: list[dict]) -> dict:
    """Ranking figures (recsys/replay/ranking.py: ranking_figures) over seeds: every number's mean
    and sample spread ("<name>_std"); the catch latencies pooled over seeds' segments."""
    def mean_std(values: list[float]) -> tuple[float, float]:
        v = np.asarray(values, dtype=np.float64)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    out: dict = {}
    for key, value in per_seed[0].items():
        if key == "catch_latency_s":
            out["catch"] = summarize_catches([x for f in per_seed for x in f[key]])
        elif isinstance(value, dict):
            out[key] = {}
            for name in value:
                out[key][name], out[key][f"{name}_std"] = mean_std([f[key][name] for f in per_seed])
        else:
            out[key], out[f"{key}_std"] = mean_std([f[key] for f in per_seed])
    return out


def _paired_ranking(per_run: dict, a: str, b: str, seeds: list[int], push: str) -> dict:
    """a − b by seed in normalized expected clicks of every top k, and in highlight top-1 share."""
    def values(run: str, key: str, name: str | None = None) -> list[float]:
        figures = [per_run[run][s]["ranking"][push][key] for s in seeds]
        return figures if name is None else [f[name] for f in figures]

    tops = [k for k in per_run[a][seeds[0]]["ranking"][push] if k.startswith("top")]
    return {**{f"normalized_{k}_clicks": paired_difference(values(a, k, "normalized"), values(b, k, "normalized"))
               for k in tops},
            "highlight_top1_share": paired_difference(values(a, "highlight_top1_share"),
                                                      values(b, "highlight_top1_share"))}


def _seed_headline(figures: dict, push: str) -> dict:
    """One seed's headline figures, kept so that another report (an experiment) can be paired with
    this one by seed."""
    out = {f"{group}_auc_ctr": m["auc"]["ctr"] for group, m in figures["push"][push].items()}
    ranking = figures.get("ranking", {}).get(push)
    if ranking:
        out["normalized_top1_clicks"] = ranking["top1"]["normalized"]
        out["highlight_top1_share"] = ranking["highlight_top1_share"]
    return out


def build_report(per_run: dict[str, dict[int, dict]], seeds: list[int], counts: dict[str, int],
                 push_every_s: list[int], peers: list[str] = (), controls: list[str] = (),
                 ceiling: str | None = None) -> dict:
    """per_run[run][seed] = {"push": {seconds: {group: group_metrics}}, "catch": {seconds: {fraction:
    [Catch]}}, "ranking": {seconds: ranking_figures}} -> the replay.json document. "catch" holds the
    first fraction's figures (the headline), "catch_by_fraction" every fraction's; "ranking" is
    absent without candidate sets (real logs). `peers`: the runs that are other models, `controls`
    the runs that measure something (the ceiling, frozen tables, counters zeroed): both compared with
    realtime, the project's model on the same stream, seed by seed, in summaries of their own.
    `ceiling` (a control): the share of realtime's gap to the truth it closes, by seed."""
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
        ranking = by_seed[seeds[0]].get("ranking", {})
        if ranking:
            report["runs"][run]["ranking"] = {p: aggregate_ranking([by_seed[s]["ranking"][p] for s in seeds])
                                              for p in ranking}
        report["runs"][run]["per_seed"] = {str(s): _seed_headline(by_seed[s], headline) for s in seeds}

    ranked = [r for r in BRACKET_ORDER if r in runs]
    pairs = [(a, b) for a, b in zip(ranked, ranked[1:])]
    if all(r in runs for r in HEADLINE_PAIR) and HEADLINE_PAIR not in pairs:
        pairs.insert(0, HEADLINE_PAIR)
    peer_pairs = [(REALTIME, p) for p in peers if REALTIME in runs and p in runs]
    control_pairs = [(REALTIME, c) for c in controls if REALTIME in runs and c in runs]
    pairs += peer_pairs + control_pairs
    report["paired_ctr_auc"] = {f"{a} - {b}": {g: paired_difference(_ctr_auc(per_run, a, seeds, headline, g),
                                                                    _ctr_auc(per_run, b, seeds, headline, g))
                                               for g in groups}
                                for a, b in pairs}
    if all("ranking" in report["runs"][r] for r in runs):
        report["paired_ranking"] = {f"{a} - {b}": {p: _paired_ranking(per_run, a, b, seeds, p)
                                                   for p in report["runs"][a]["ranking"]} for a, b in pairs}
    report["summary"] = _summary(report, runs, headline)
    if peer_pairs and "paired_ranking" in report:
        report["summary"]["peer_normalized_top1_clicks"] = {p: report["summary"]["normalized_top1_clicks"][p]
                                                            for _, p in peer_pairs}
        report["summary"]["paired_diff_vs_peers"] = {
            p: report["paired_ranking"][f"{a} - {p}"][headline]["normalized_top1_clicks"] for a, p in peer_pairs}
    if control_pairs and "paired_ranking" in report:
        report["summary"]["paired_diff_vs_controls"] = {
            c: {k: report["paired_ranking"][f"{a} - {c}"][headline][k]
                for k in ("normalized_top1_clicks", "highlight_top1_share")} for a, c in control_pairs}
        if ceiling in controls and ceiling in runs:
            report["summary"]["ceiling_gap_closed"] = _gap_closed(per_run, ceiling, seeds, headline)
    return report


def _gap_closed(per_run: dict, ceiling: str, seeds: list[int], push: str) -> dict:
    """(ceiling − realtime) / (truth − realtime) in normalized top-1 clicks, by seed: the truth's
    ranking scores 1 by the normalization."""
    def top1(run: str, seed: int) -> float:
        return per_run[run][seed]["ranking"][push]["top1"]["normalized"]

    return per_seed_figure([(top1(ceiling, s) - top1(REALTIME, s)) / (1.0 - top1(REALTIME, s)) for s in seeds])


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
    if "paired_ranking" in report:
        ranking = {r: by_run[r]["ranking"][headline] for r in runs}
        for top in (k for k in ranking[runs[0]] if k.startswith("top")):
            summary[f"normalized_{top}_clicks"] = {r: ranking[r][top]["normalized"] for r in runs}
        summary["push_interval_normalized_top1_clicks"] = {
            r: {p: v["top1"]["normalized"] for p, v in by_run[r]["ranking"].items()} for r in runs}
        summary["highlight_top1_share"] = {**{r: ranking[r]["highlight_top1_share"] for r in runs},
                                           "truth_optimal": ranking[runs[0]]["highlight_top1_share_truth_optimal"]}
        summary["ranking_catch_latency_s_median"] = {r: ranking[r]["catch"]["latency_s_median"] for r in runs}
        summary["ranking_share_caught"] = {r: ranking[r]["catch"]["share_caught"] for r in runs}
        if all(r in runs for r in HEADLINE_PAIR):
            paired = report["paired_ranking"]["%s - %s" % HEADLINE_PAIR][headline]
            summary["paired_diff_normalized_top1_clicks"] = paired["normalized_top1_clicks"]
            summary["paired_diff_highlight_top1_share"] = paired["highlight_top1_share"]
    ranked = [r for r in BRACKET_ORDER if r in runs]
    aucs = [summary["overall_auc_ctr"][r] for r in ranked]
    summary["bracket_order"] = {"expected": ranked, "holds": bool(all(x >= y for x, y in zip(aucs, aucs[1:])))}
    return summary
