"""The replay report rendered: Markdown, plots and the files (reports/<name>.{json,md}, *.png), from
the document recsys/replay/figures.py builds; highlight-catch plots pooled over seeds
(recsys/replay/catch.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from data_pipelines.dataset import FAST_SLOW, REALTIME
from recsys.replay.catch import Catch, CatchWindows, segment_series
from recsys.replay.runs import ORACLE


# ---------------------------------------------------------------- Markdown


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def _num(value: float | None, spec: str = ".4f") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown(report: dict, tasks: list[str], name: str = "replay") -> str:
    runs, head = list(report["runs"]), str(report["headline_push_s"])
    cfg = report.get("config", {})
    lines = ["# Replay: online predictions against the final truth", "",
             f"World `{cfg.get('world', '?')}`, seeds {report['seeds']} (mean ± sample standard deviation over "
             f"seeds). Each impression is scored by the model as last pushed before its request; samples are "
             f"learned in report order, in batches of up to {cfg.get('learner', {}).get('batch_size', '?')} closed "
             f"when full or after {cfg.get('learner', {}).get('max_wait_s', '?')} s. Headline figures: push every "
             f"{head} s."
             + ("" if cfg.get("room_state", True) else " **Room state features zeroed** (`replay.room_state=false`)."),
             ""]
    lines += _ranking_section(report)
    lines += _peers_section(report)
    has_highlight = "highlight" in report["impressions"]
    header = "| run | CTR AUC overall | CTR AUC in highlights | CTR logloss in highlights | catch latency median " \
             "| p90 | share caught | rise reached (median) | overshoot |" if has_highlight else \
             "| run | CTR AUC overall | CTR logloss |"
    lines += ["## Summary", "", header, "|" + "---|" * (header.count("|") - 1)]
    for r in runs:
        m = report["runs"][r]["push"][head]
        cells = [r, _fmt(m["overall"]["auc"]["ctr"], m["overall"]["auc_std"]["ctr"])]
        if has_highlight:
            c = report["runs"][r]["catch"].get(head, {})
            cells += [_fmt(m["highlight"]["auc"]["ctr"], m["highlight"]["auc_std"]["ctr"]),
                      _fmt(m["highlight"]["logloss"]["ctr"], m["highlight"]["logloss_std"]["ctr"]),
                      _seconds(c.get("catch_latency_s_median")), _seconds(c.get("catch_latency_s_p90")),
                      _num(c.get("share_caught"), ".0%"), _num(c.get("rise_share_median"), ".0%"),
                      _num(c.get("overshoot_mean"), "+.4f")]
        else:
            cells.append(_fmt(m["overall"]["logloss"]["ctr"], m["overall"]["logloss_std"]["ctr"]))
        lines.append("| " + " | ".join(cells) + " |")
    bracket = report["summary"]["bracket_order"]
    catch_cfg = cfg.get("catch")
    if has_highlight and catch_cfg:
        lines += ["", f"Catch (recsys/replay/catch.py, {catch_cfg['bin_s']}-s bins, over "
                  f"{cfg.get('highlight_segments_caught_over', '?')} highlight segments × seeds): a highlight is caught "
                  f"once the predicted CTR stands {catch_cfg['fractions'][0]:.0%} of the true rise (pre-highlight level to "
                  f"peak) above the model's own pre-highlight level, at most {catch_cfg['after_s'] // 60} min after "
                  "it ends; latency from its start (\"never\" where a quantile falls among those not caught); rise "
                  "reached: the largest share of the rise the prediction got to; overshoot: mean predicted minus true "
                  f"CTR in the {catch_cfg['after_s'] // 60} min after it."]
    if has_highlight and "catch_by_fraction" in report["summary"]:
        fractions = list(report["summary"]["catch_by_fraction"])
        lines += ["", "Catch at each share of the rise (median latency, share caught):", "",
                  "| run | " + " | ".join(f"{float(f):.0%} of the rise" for f in fractions) + " |",
                  "|" + "---|" * (len(fractions) + 1)]
        for r in runs:
            cells = [f"{_seconds(c['catch_latency_s_median'])}, {_num(c['share_caught'], '.0%')}"
                     for c in (report["summary"]["catch_by_fraction"][f][r] for f in fractions)]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", f"Expected order of overall CTR AUC {' ≥ '.join(bracket['expected'])}: "
              f"{'holds' if bracket['holds'] else 'does not hold'}.", ""]

    lines += ["## Differences paired by seed (CTR AUC)", "",
              "| pair | group | mean ± sd of per-seed differences | per seed | ahead on every seed? |", "|---|---|---|---|---|"]
    for pair, by_group in report["paired_ctr_auc"].items():
        for g, d in by_group.items():
            every = "yes" if all(x > 0 for x in d["per_seed"]) else "no"
            lines.append(f"| {pair} | {g.replace('_', ' ')} | {d['mean']:+.4f} ± {d['sd']:.4f} | "
                         + " / ".join(f"{x:+.4f}" for x in d["per_seed"]) + f" | {every} |")
    lines.append("")

    pushes = list(report["runs"][runs[0]]["push"])
    lines += ["## Push interval", "", "CTR AUC when serving gets the model every P seconds (overall / in highlights)"
              + (", and the highlight catch (median latency, share caught):" if has_highlight else ":"), "",
              "| run | " + " | ".join(f"P = {p} s" for p in pushes) + " |", "|" + "---|" * (len(pushes) + 1)]
    for r in runs:
        cells = []
        for p in pushes:
            m = report["runs"][r]["push"][p]
            cell = f"{m['overall']['auc']['ctr']:.4f}"
            if has_highlight:
                c = report["runs"][r]["catch"][p]
                cell += f" / {m['highlight']['auc']['ctr']:.4f}; {_seconds(c['catch_latency_s_median'])}, " \
                        f"{_num(c['share_caught'], '.0%')}"
            cells.append(cell)
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines.append("")

    for group, n in report["impressions"].items():
        lines += [f"## {group.replace('_', ' ')} ({n:,} impressions), every task, push every {head} s", "",
                  "| task | " + " | ".join(f"{r} AUC" for r in runs) + " | " + " | ".join(f"{r} logloss" for r in runs)
                  + " |", "|" + "---|" * (1 + 2 * len(runs))]
        for t in tasks:
            m = [report["runs"][r]["push"][head][group] for r in runs]
            lines.append("| " + " | ".join([t, *(_fmt(x["auc"][t], x["auc_std"][t]) for x in m),
                                            *(_fmt(x["logloss"][t], x["logloss_std"][t]) for x in m)]) + " |")
        lines.append("")
    lines += [f"![AUC against push interval]({name}_push_interval.png)", ""]
    if has_highlight:
        lines += [f"![calibration around the busiest highlights]({name}_calibration.png)", "",
                  f"![catch latency]({name}_catch_latency.png)", ""]
    return "\n".join(lines)


def _peers_section(report: dict) -> list[str]:
    """The peer models and the controls beside the project's model (conf/replay.yaml `peers`)."""
    summary, peers = report["summary"], report.get("config", {}).get("peers", {})
    paired = {**summary.get("paired_diff_vs_peers", {}),
              **{c: d["normalized_top1_clicks"] for c, d in summary.get("paired_diff_vs_controls", {}).items()}}
    if not paired or "normalized_top1_clicks" not in summary:
        return []
    rate = report.get("config", {}).get("samples_per_s", {})
    lines = ["## Peers and controls", "",
             "Each learns the realtime stream as the project's model does (same samples, batches, pushes, "
             "candidate sets); a peer is another model, a control measures something (docs/evaluation.md). "
             "realtime − run: normalized top-1 clicks paired by seed.", "",
             "| run | role | top-1 clicks | top-3 clicks | highlight top-1 share | CTR AUC | CTR AUC in highlights "
             "| samples/s learned | realtime − run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in ["realtime", *paired]:
        d = paired.get(r)
        lines.append(f"| {r} | {peers.get(r, {}).get('role', 'the project')} "
                     f"| {summary['normalized_top1_clicks'][r]:.3f} | {summary['normalized_top3_clicks'][r]:.3f} "
                     f"| {summary['highlight_top1_share'][r]:.1%} | {summary['overall_auc_ctr'][r]:.4f} "
                     f"| {_num(summary.get('highlight_auc_ctr', {}).get(r))} | {_num(rate.get(r), ',.0f')} | "
                     + ("—" if d is None else f"{d['mean']:+.3f} ± {d['sd']:.3f}") + " |")
    refits = {r: p["refits"] for r, p in peers.items() if "refits" in p and p["refits"]["max_s"] is not None}
    for r, f in refits.items():
        lines += ["", f"{r} refits every {f['every_s']} s of the replay's clock ({f['per_run']:.0f} refits a run, "
                  f"{f['mean_s']:.1f} s each on average); its longest took {f['max_s']:.1f} s on "
                  f"{f['max_samples']:,} samples: the shortest push interval it could keep in real time here."]
        gain = list(peers[r].get("ctr_gain_share", {}).items())[:8]
        if gain:
            lines += ["", f"What {r}'s CTR trees lean on at the end (share of split gain, first seed): "
                      + ", ".join(f"{name} {share:.0%}" for name, share in gain) + "."]
    gap = summary.get("ceiling_gap_closed")
    if gap:
        lines += ["", f"The ceiling closes {gap['mean']:.0%} ± {gap['sd']:.0%} of realtime's gap to the truth's "
                  "ranking in normalized top-1 clicks (by seed: " + ", ".join(f"{x:.0%}" for x in gap["per_seed"]) + ")."]
    return lines + [""]


def _ranking_section(report: dict) -> list[str]:
    """What each model would have recommended (recsys/replay/ranking.py); nothing without candidate sets."""
    runs, head = list(report["runs"]), str(report["headline_push_s"])
    if "paired_ranking" not in report:
        return []
    cfg = report.get("config", {}).get("ranking", {})
    first = report["runs"][runs[0]]["ranking"][head]
    tops = [k for k in first if k.startswith("top")]
    catch_k = cfg.get("catch_top_k", 3)
    lines = ["## What each model would recommend (candidate sets, the simulator's truth)", "",
             f"{cfg.get('requests', '?'):,} logged requests sampled (seed {cfg.get('seed', '?')}), every room live at "
             f"each a candidate ({cfg.get('candidates', '?'):,} in all); each model ranks them by its predicted CTR "
             "as last pushed. Expected clicks of its top k under the true click probabilities, normalized: a random "
             "ranking 0, the truth's own 1 (raw expected CTR per slot beside it); highlight top-1 share: requests "
             "whose top room is in a highlight; ranking catch: seconds from a highlight's start until the model has "
             f"the room in its top {catch_k} for {cfg.get('catch_share', 0.5):.0%} of the requests whose truth has it "
             f"there (median over segments × seeds, \"never\" where the median falls among those not caught).", "",
             "| run | " + " | ".join(f"normalized {k} clicks | {k} CTR" for k in tops)
             + " | highlight top-1 share | ranking catch median | caught |",
             "|" + "---|" * (2 * len(tops) + 4)]
    for r in runs:
        f = report["runs"][r]["ranking"][head]
        cells = [r, *(c for k in tops
                      for c in (_fmt(f[k]["normalized"], f[k]["normalized_std"]), f"{f[k]['ctr']:.4f}")),
                 f"{f['highlight_top1_share']:.1%}", _seconds(f["catch"]["latency_s_median"]),
                 f"{_num(f['catch']['share_caught'], '.0%')} of {f['catch']['segments']}"]
        lines.append("| " + " | ".join(cells) + " |")
    best = first["highlight_top1_share_truth_optimal"]
    lines.append("| truth-optimal | " + " | ".join(f"1 | {first[k]['best_ctr']:.4f}" for k in tops)
                 + f" | {best:.1%} | | |")
    lines += ["", "Paired by seed (a − b, mean ± sd; per seed):", "",
              "| pair | push | " + " | ".join(f"normalized {k} clicks" for k in tops) + " | highlight top-1 share |",
              "|" + "---|" * (len(tops) + 3)]
    for pair, by_push in report["paired_ranking"].items():
        for p, d in by_push.items():
            cells = [d[f"normalized_{k}_clicks"] for k in tops] + [d["highlight_top1_share"]]
            lines.append(f"| {pair} | {p} s | " + " | ".join(
                f"{c['mean']:+.4f} ± {c['sd']:.4f} (" + " / ".join(f"{x:+.4f}" for x in c["per_seed"]) + ")"
                for c in cells) + " |")
    pushes = list(report["runs"][runs[0]]["ranking"])
    lines += ["", "Normalized top-1 clicks against push interval:", "",
              "| run | " + " | ".join(f"P = {p} s" for p in pushes) + " |", "|" + "---|" * (len(pushes) + 1)]
    for r in runs:
        lines.append(f"| {r} | " + " | ".join(_fmt(report["runs"][r]["ranking"][p]["top1"]["normalized"],
                                                   report["runs"][r]["ranking"][p]["top1"]["normalized_std"])
                                              for p in pushes) + " |")
    return lines + [""]


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_push_interval(report: dict, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if "highlight" in report["impressions"] else 1, figsize=(9, 3.5), squeeze=False)
    for ax, group in zip(axes[0], ["overall", "highlight"]):
        for r, figures in report["runs"].items():
            pushes = [int(p) for p in figures["push"]]
            means = [figures["push"][str(p)][group]["auc"]["ctr"] for p in pushes]
            stds = [figures["push"][str(p)][group]["auc_std"]["ctr"] for p in pushes]
            ax.errorbar(pushes, means, yerr=stds, marker="o", capsize=3, label=r)
        ax.set_xscale("log")
        ax.set_xlabel("push interval (s)")
        ax.set_ylabel(f"CTR AUC, {group}")
        ax.set_title(f"CTR AUC against push interval, {group}")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_catch_latency(per_run_catches: dict[str, dict[float, list[Catch]]], path: Path) -> None:
    """Share of segments caught within x seconds of their start, per run and share of the rise (an
    empirical CDF; never-caught segments keep each curve below 1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    styles = ["-", "--", ":", "-."]
    for i, (r, by_fraction) in enumerate(per_run_catches.items()):
        for j, (fraction, catches) in enumerate(by_fraction.items()):
            if not catches:
                continue
            latencies = np.sort([c.latency_s for c in catches if c.latency_s is not None])
            share = np.arange(1, len(latencies) + 1) / len(catches)
            ax.step(np.concatenate([[0], latencies]), np.concatenate([[0], share]), where="post",
                    linestyle=styles[j % len(styles)], color=f"C{i}", label=f"{r}, {fraction:.0%} of the rise")
    ax.set_xlabel("seconds from the highlight's start")
    ax.set_ylabel("share of highlights caught")
    ax.set_title("Catch latency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def busiest_segments(evaluation, n: int) -> list[int]:
    """The `n` highlight segments with the most impressions inside, one per room."""
    seg = evaluation.highlight_segment
    counts = np.bincount(seg[seg >= 0], minlength=len(evaluation.highlights))
    chosen, rooms = [], set()
    for s in np.argsort(-counts, kind="stable").tolist():
        room = int(evaluation.highlights["live_id"].iloc[s])
        if room not in rooms:
            chosen.append(s)
            rooms.add(room)
        if len(chosen) == n:
            break
    return chosen


def plot_calibration(evaluation, predictions: dict[str, np.ndarray], ctr: int, segments: list[int],
                     windows: CatchWindows, path: Path) -> None:
    """Mean predicted and true CTR per 30-s bin around the given highlights (one seed's runs)."""
    plt = _pyplot()
    fig, axes = plt.subplots(max(len(segments), 1), 1, figsize=(8, 2.8 * max(len(segments), 1)), squeeze=False)
    in_highlight = evaluation.highlight_segment >= 0
    for ax, s in zip(axes[:, 0], segments):
        row = evaluation.highlights.iloc[s]
        rows = np.flatnonzero(evaluation.live_id == row["live_id"])
        start, end = int(row["start_timestamp"]), int(row["end_timestamp"])
        true_drawn = False
        for r, p in predictions.items():
            series = segment_series(evaluation.request_ts[rows], p[rows, ctr], evaluation.true_ctr[rows],
                                    in_highlight[rows], start, end, windows)
            x = (series.offset_s + windows.bin_s / 2) / 60
            if not true_drawn:
                ax.plot(x, series.true, "k.:", label="true CTR (simulator)")
                true_drawn = True
            ax.plot(x, series.predicted, ".-", label=f"predicted, {r}")
        ax.axvspan(0, (end - start) / 60_000, color="orange", alpha=0.2, label="highlight")
        ax.set_title(f"room {int(row['live_id'])}, highlight of {(end - start) / 60_000:.1f} min, "
                     f"{windows.bin_s}-s bins")
        ax.set_ylabel("CTR")
    axes[-1, 0].set_xlabel("minutes from the highlight's start (after it: from its end, shifted by its length)")
    axes[0, 0].legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: dict, evaluation, predictions: dict[str, np.ndarray], tasks: list[str], reports_dir: Path,
              name: str, calibration_rooms: int, windows: CatchWindows,
              per_run_catches: dict[str, dict[float, list[Catch]]] | None = None) -> list[Path]:
    """<name>.json, <name>.md and the plots; `predictions` (one seed's, headline push interval, per
    run) feed the calibration plot."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    paths = [reports_dir / f"{name}_push_interval.png"]
    plot_push_interval(report, paths[0])
    if evaluation.highlights is not None:
        segments = busiest_segments(evaluation, calibration_rooms)
        report["calibration_segments"] = segments
        shown = {r: p for r, p in predictions.items() if r in (REALTIME, FAST_SLOW, ORACLE)} or predictions
        paths.append(reports_dir / f"{name}_calibration.png")
        plot_calibration(evaluation, shown, tasks.index("ctr"), segments, windows, paths[-1])
        if per_run_catches is not None:
            paths.append(reports_dir / f"{name}_catch_latency.png")
            plot_catch_latency(per_run_catches, paths[-1])
    json_path, md_path = reports_dir / f"{name}.json", reports_dir / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    md_path.write_text(markdown(report, tasks, name))
    return [json_path, md_path, *paths]
