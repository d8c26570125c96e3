"""reports/<name>.{json,md} and a plot: what the live loop served and how fast it learned.

Everything is computed from the components' own logs: the driver's answers (what each impression
was scored with, by which version, when), the trainer's versions (the samples each version had
learned), the joiner's ledger (which sample is which position in the realtime stream) and the
progress the components wrote into the broker once a second. Served figures use the replay's
metric and catch code (recsys/replay) on the same impressions, so live and replay compare like for
like.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from data_pipelines.contract import POS
from data_pipelines.dataset import DataSet
from recsys.replay.figures import group_metrics
from recsys.replay.catch import eligible_segments, highlight_catches, summarize
from recsys.replay.evaluation import EvaluationSet, load_evaluation
from recsys.replay.settings import catch_windows

AGREEMENT_TOLERANCE_AUC = 0.01  # |served − replay| CTR AUC, overall, for "live and replay agree"
_PUSH_LINE = re.compile(r"push (\d+) serving")


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p50": None, "p99": None, "max": None}
    return {"p50": float(np.quantile(values, 0.5)), "p99": float(np.quantile(values, 0.99)),
            "max": float(values.max())}


def _versions(path: Path) -> dict[tuple[str, int], int]:
    out = {}
    for line in path.read_text().splitlines():
        v = json.loads(line)
        out[(v["export_id"], int(v["push"]))] = int(v["samples_learned"])
    return out


class _Clock:
    """The driver's clock: data time runs `speed` times wall time from (data0_ms, unix0_s)."""

    def __init__(self, answers: dict):
        self.speed, self.data0, self.unix0 = float(answers["speed"]), int(answers["data0_ms"]), float(answers["unix0_s"])

    def data_ms(self, unix_s: np.ndarray) -> np.ndarray:
        return self.data0 + (unix_s - self.unix0) * self.speed * 1000

    def unix_s(self, data_ms: np.ndarray) -> np.ndarray:
        return self.unix0 + (data_ms - self.data0) / 1000 / self.speed


def _answered(answers: dict, versions: dict[tuple[str, int], int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows answered, the samples the answering version had learned: -1 for a version not in the
    trainer's log)."""
    rows = np.flatnonzero(np.isfinite(answers["answered_unix_s"]))
    exports = answers["exports"]
    learned = np.array([versions.get((str(exports[answers["export"][i]]), int(answers["push"][i])), -1)
                        for i in rows], dtype=np.int64)
    return rows, learned


def click_to_served(answers: dict, versions: dict[tuple[str, int], int], ledger: dict, ctr: int) -> dict:
    """For every click (a realtime sample with ctr positive), the data seconds from the click to the
    first answer given by a version that had learned that sample, and the same in wall seconds."""
    rows, learned = _answered(answers, versions)
    order = np.argsort(answers["answered_unix_s"][rows], kind="stable")
    when = answers["answered_unix_s"][rows][order]
    reach = np.maximum.accumulate(learned[order])  # the most samples any version served so far had learned
    clicks = np.flatnonzero(ledger["realtime.state"][:, ctr] == POS)  # positions in the realtime stream
    first = np.searchsorted(reach, clicks, side="right")  # first answer from a version with > position samples
    served = first < len(when)
    clock = _Clock(answers)
    click_ms = ledger["realtime.request_ts"][clicks[served]]  # a click is at its request time
    served_unix = when[first[served]]
    data_s = (clock.data_ms(served_unix) - click_ms) / 1000
    wall_s = served_unix - clock.unix_s(click_ms)
    published_wall = ledger["realtime.published_unix_s"][clicks[served]] - clock.unix_s(click_ms)
    return {"clicks": int(len(clicks)), "served": int(served.sum()), "_data_s": data_s,
            "data_s": _quantiles(data_s), "wall_s": _quantiles(wall_s),
            "click_to_sample_published_wall_s": _quantiles(published_wall)}


def staleness(answers: dict, versions: dict[tuple[str, int], int], ledger: dict) -> dict[str, float | None]:
    """Data seconds between each answer and the newest sample report its version had learned."""
    rows, learned = _answered(answers, versions)
    known = learned > 0
    at_ms = _Clock(answers).data_ms(answers["answered_unix_s"][rows][known])
    return _quantiles((at_ms - ledger["realtime.report_ts"][learned[known] - 1]) / 1000)


def _served_figures(evaluation: EvaluationSet, predictions: np.ndarray, tasks: list[str], windows) -> dict:
    mask = np.isfinite(predictions[:, 0])
    out = {"impressions": int(mask.sum())}
    out["groups"] = {g: group_metrics(predictions[m & mask], evaluation.labels[m & mask],
                                          evaluation.users[m & mask], tasks) for g, m in evaluation.groups.items()}
    if evaluation.highlights is not None:
        ctr = tasks.index("ctr")
        rows = np.flatnonzero(mask)
        segment = evaluation.highlight_segment[rows]
        segments = eligible_segments(evaluation.highlights, evaluation.live_id[rows], evaluation.request_ts[rows],
                                     segment, windows)
        catches = highlight_catches(evaluation.highlights, segments, evaluation.live_id[rows],
                                    evaluation.request_ts[rows], predictions[rows, ctr], evaluation.true_ctr[rows],
                                    segment >= 0, windows)
        out["catch"] = {str(f): summarize(c) for f, c in catches.items()}
    return out


def replay_predictions(cfg: DictConfig, evaluation: EvaluationSet, push_s: int, seed: int, run: str) -> tuple[
        np.ndarray | None, str | None]:
    """The replay's predictions at this push interval and seed, in evaluation order: from `make
    replay`'s files when they hold them, else from a replay of this one run (online.replay=auto)."""
    reports = Path(cfg.paths.reports_dir)
    for name in ("replay", "replay_online_compare"):
        path = reports / name / f"{run}-seed{seed}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as saved:
                key = f"push_{push_s}s"
                if key in saved and np.array_equal(saved["impression_id"], evaluation.arrays["impression_id"]):
                    return saved[key], str(path)
    if str(cfg.online.replay) == "skip":
        return None, None
    # `make replay` itself, in a process of its own (this one runs under Hydra already).
    overrides = [f"world={cfg.world.name}", f"paths.data_dir={cfg.paths.data_dir}",
                 f"paths.reports_dir={cfg.paths.reports_dir}", f"paths.log_dir={cfg.paths.log_dir}",
                 f"replay.streams=[{run}]", f"replay.seeds=[{seed}]", f"replay.push_every_s=[{push_s}]",
                 "experiment_name=online_compare", "replay.ranking.requests=0",  # its AUC only: no candidate sets
                 f"replay.progress={str(bool(cfg.online.progress)).lower()}"]
    print(f"replay figures for comparison: make replay ARGS=\"{' '.join(overrides)}\"")
    subprocess.run([sys.executable, "-m", "recsys.replay", *overrides], check=True)
    path = reports / "replay_online_compare" / f"{run}-seed{seed}.npz"
    with np.load(path, allow_pickle=False) as saved:
        return saved[f"push_{push_s}s"], str(path)


def write_report(cfg: DictConfig, settings, loop, wall_s: float) -> dict:
    data = DataSet(cfg.data.output_dir)
    logs = loop.logs
    with np.load(logs / "answers.npz", allow_pickle=False) as f:
        answers = dict(f)
    with np.load(logs / "joiner_samples.npz", allow_pickle=False) as f:
        ledger = dict(f)
    versions = _versions(logs / "versions.jsonl")
    driver = json.loads((logs / "driver_summary.json").read_text())
    joiner = json.loads((logs / "joiner_summary.json").read_text())
    trainer = json.loads((Path(cfg.paths.reports_dir) / f"online_train_{settings.name}.json").read_text())
    tasks = [str(t) for t in answers["tasks"]]
    ctr = tasks.index("ctr")

    evaluation = load_evaluation(data, int(cfg.task.light_user_max_live))
    played = np.zeros(len(answers["probabilities"]), dtype=bool)
    played[answers["rows"]] = True
    # Canonical rows -> evaluation rows (the evaluation is ordered by request time).
    ids = pd.read_parquet(data.canonical.live_impressions, columns=["impression_id"])["impression_id"].to_numpy()
    position = pd.Series(np.arange(len(ids)), index=ids).loc[evaluation.arrays["impression_id"]].to_numpy()
    served = answers["probabilities"][position]
    in_span = played[position]
    windows = catch_windows(cfg.catch)
    live = _served_figures(evaluation, np.where(in_span[:, None], served, np.nan), tasks, windows)

    push_s = int(cfg.push.every_s)
    replay, replay_source = replay_predictions(cfg, evaluation, push_s, int(cfg.online_train.seed),
                                               str(cfg.online_train.stream))
    replay_figures = None if replay is None else _served_figures(
        evaluation, np.where(in_span[:, None] & np.isfinite(served[:, :1]), replay, np.nan), tasks, windows)

    latency = click_to_served(answers, versions, ledger, ctr)
    click_latencies = latency.pop("_data_s")
    series = loop.series
    lag = np.array([(r["driver_clock_ms"] - r["trainer_clock_ms"]) / 1000 for r in series
                    if "driver_clock_ms" in r and "trainer_clock_ms" in r and "driver_done_unix_s" not in r])
    joiner_lag = np.array([(r["driver_clock_ms"] - r["joiner_watermark"]) / 1000 for r in series
                           if "driver_clock_ms" in r and "joiner_watermark" in r and "driver_done_unix_s" not in r])
    waiting = np.array([r.get("joiner_emitted_realtime", 0) - r.get("trainer_learned", 0) for r in series])
    events_waiting = np.array([r["events_in_broker"] for r in series if "driver_done_unix_s" not in r])
    answered = np.isfinite(answers["answered_unix_s"])
    request_s = (answers["answered_unix_s"] - answers["sent_unix_s"])[answered]
    first_try = answered & (answers["attempts"] == 1)
    pushes_applied = sum(len(_PUSH_LINE.findall(text)) for text in loop.ranker_logs)
    quarantine = [{k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
                  for _, fields in loop.quarantined]

    served_auc = live["groups"]["overall"]["auc"]["ctr"]
    replay_auc = None if replay_figures is None else replay_figures["groups"]["overall"]["auc"]["ctr"]
    summary = {
        "served_auc_ctr": served_auc,
        "served_auc_ctr_highlight": live["groups"].get("highlight", {}).get("auc", {}).get("ctr"),
        "replay_auc_ctr": replay_auc,
        "replay_auc_ctr_highlight": None if replay_figures is None else
        replay_figures["groups"].get("highlight", {}).get("auc", {}).get("ctr"),
        "click_to_served_s": {"p50": latency["data_s"]["p50"], "p99": latency["data_s"]["p99"]},
        "click_to_served_wall_s": {"p50": latency["wall_s"]["p50"], "p99": latency["wall_s"]["p99"]},
        "samples_emitted": int(joiner["emitted"].get(str(cfg.online_train.stream), 0)),
        "samples_learned": int(trainer["samples_learned_total"]),
        "pushes_applied": pushes_applied,
        "requests_sent": int(driver["requests_sent"]),
        "requests_answered": int(driver["requests_answered"]),
        "requests_lost": int(driver["requests_lost"]),
        "events_quarantined": int(joiner["quarantined"]),
        "trainer_lag_s": _quantiles(lag),
        "joiner_lag_s": _quantiles(joiner_lag),
        "samples_waiting": _quantiles(waiting),
        "events_in_broker": _quantiles(events_waiting),
        "ranker_request_ms": {k: None if v is None else v * 1000 for k, v in _quantiles(request_s).items()},
        "ranker_request_ms_first_try": {k: None if v is None else v * 1000 for k, v in
                                        _quantiles((answers["answered_unix_s"] - answers["sent_unix_s"])[first_try]).items()},
        "served_model_staleness_s": staleness(answers, versions, ledger),
        "wall_s": wall_s,
    }
    if replay_auc is not None:
        summary["agreement"] = {"auc_ctr_diff": served_auc - replay_auc, "tolerance": AGREEMENT_TOLERANCE_AUC,
                                "within": abs(served_auc - replay_auc) <= AGREEMENT_TOLERANCE_AUC}
    report = {"summary": summary,
              "config": {"world": data.name, "speed": settings.speed, "partitions": settings.partitions,
                         "span_s": settings.span_s, "joiner_step_s": settings.joiner_step_ms / 1000,
                         "push_every_s": push_s, "full_every_s": float(cfg.push.full_every_s),
                         "seed": int(cfg.online_train.seed), "stream": str(cfg.online_train.stream),
                         "batch_size": int(cfg.online_train.batch_size), "max_wait_s": float(cfg.online_train.max_wait_s),
                         "ranker_format": settings.ranker_format},
              "served": live, "replay": replay_figures, "replay_source": replay_source,
              "click_to_served": latency, "joiner": joiner, "driver": driver,
              "trainer": {k: trainer[k] for k in ("samples_learned_total", "digest", "resumed_after_samples",
                                                  "pushes", "exports") if k in trainer},
              "ranker_metrics": {k: v for k, v in loop.ranker_metrics.items() if k.startswith("ranker_push")},
              "faults": loop.events, "quarantine": quarantine[:100]}
    reports = Path(cfg.paths.reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{settings.name}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (reports / f"{settings.name}.md").write_text(markdown(report))
    plot(series, latency, click_latencies, reports / f"{settings.name}.png")
    return report


def _f(value, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    s, c = report["summary"], report["config"]
    live, replay = report["served"], report["replay"]
    lines = [f"# The live loop on '{c['world']}'", "",
             f"{c['speed']:g}× the data's clock, {c['partitions']} partitions, a push every {c['push_every_s']} s "
             f"and a full export every {c['full_every_s']:g} s of data time; the realtime stream, seed {c['seed']}; "
             f"{s['wall_s'] / 60:.1f} min end to end.", "",
             "| | live (served) | replay (same push interval) |", "|---|---|---|",
             f"| CTR AUC, overall | {_f(s['served_auc_ctr'])} | {_f(s['replay_auc_ctr'])} |",
             f"| CTR AUC, in highlights | {_f(s['served_auc_ctr_highlight'])} | {_f(s['replay_auc_ctr_highlight'])} |"]
    for fraction, figures in live.get("catch", {}).items():
        other = (replay or {}).get("catch", {}).get(fraction, {})
        lines.append(f"| highlights caught at {float(fraction):.0%} of the rise | "
                     f"{_f(figures['share_caught'], '.0%')} of {figures['segments']} | "
                     f"{_f(other.get('share_caught'), '.0%')} |")
        lines.append(f"| median catch latency at {float(fraction):.0%} (s) | {_f(figures['catch_latency_s_median'], '.0f')}"
                     f" | {_f(other.get('catch_latency_s_median'), '.0f')} |")
    if "agreement" in s:
        a = s["agreement"]
        lines += ["", f"Served − replay CTR AUC: {a['auc_ctr_diff']:+.4f} (tolerance ±{a['tolerance']}: "
                      f"{'within' if a['within'] else 'OUTSIDE'})."]
    lat, wall = s["click_to_served_s"], s["click_to_served_wall_s"]
    lines += ["", "| how fast | p50 | p99 |", "|---|---|---|",
              f"| click → first answer from a model that learned it (data s) | {_f(lat['p50'], '.1f')} | {_f(lat['p99'], '.1f')} |",
              f"| the same in wall seconds | {_f(wall['p50'], '.2f')} | {_f(wall['p99'], '.2f')} |",
              f"| served model's newest learned sample, behind the answer (data s) | "
              f"{_f(s['served_model_staleness_s']['p50'], '.1f')} | {_f(s['served_model_staleness_s']['p99'], '.1f')} |",
              f"| trainer behind the driver's clock (data s) | {_f(s['trainer_lag_s']['p50'], '.1f')} | "
              f"{_f(s['trainer_lag_s']['p99'], '.1f')} |",
              f"| joiner watermark behind the clock (data s) | {_f(s['joiner_lag_s']['p50'], '.1f')} | "
              f"{_f(s['joiner_lag_s']['p99'], '.1f')} |",
              f"| samples published, not learned yet | {_f(s['samples_waiting']['p50'], '.0f')} | "
              f"{_f(s['samples_waiting']['p99'], '.0f')} |",
              f"| events in the broker, not consumed yet (approx.) | {_f(s['events_in_broker']['p50'], '.0f')} | "
              f"{_f(s['events_in_broker']['p99'], '.0f')} |",
              f"| ranker request, client side (ms) | {_f(s['ranker_request_ms']['p50'], '.2f')} | "
              f"{_f(s['ranker_request_ms']['p99'], '.2f')} |", "",
              f"Requests: {s['requests_sent']:,} sent, {s['requests_answered']:,} answered, {s['requests_lost']:,} lost. "
              f"Samples: {s['samples_emitted']:,} emitted, {s['samples_learned']:,} learned. "
              f"Pushes applied by the ranker: {s['pushes_applied']:,}. Events quarantined: {s['events_quarantined']:,}.",
              "", f"Replay figures from `{report['replay_source']}`." if report["replay_source"] else
              "No replay figures (online.replay=skip and no replay files)."]
    if report["faults"]:
        lines += ["", "Faults: " + "; ".join(e["event"] for e in report["faults"]) + "."]
    return "\n".join(lines) + "\n"


def plot(series: list[dict], latency: dict, click_latencies: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    rows = [r for r in series if "driver_clock_ms" in r and "driver_done_unix_s" not in r]
    if rows:
        t0 = rows[0]["unix_s"]
        wall = [(r["unix_s"] - t0) / 60 for r in rows]
        a.plot(wall, [(r["driver_clock_ms"] - r.get("trainer_clock_ms", r["driver_clock_ms"])) / 1000 for r in rows],
               label="trainer behind the clock (data s)", linewidth=0.6)
        a.plot(wall, [(r["driver_clock_ms"] - r.get("joiner_watermark", r["driver_clock_ms"])) / 1000 for r in rows],
               label="joiner watermark behind the clock (data s)")
        a2 = a.twinx()
        a2.plot(wall, [r.get("joiner_emitted_realtime", 0) - r.get("trainer_learned", 0) for r in rows], color="grey",
                alpha=0.5, label="samples waiting")
        a2.set_ylabel("samples published, not learned")
        a.set_xlabel("wall minutes")
        a.legend(loc="upper left", fontsize=8)
    a.set_title("lag and backlog")
    if len(click_latencies):
        ordered = np.sort(click_latencies)
        b.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered))
    b.set_title("click → served by a model that learned it")
    b.set_xlabel("data seconds")
    b.set_ylabel("share of clicks")
    b.text(0.02, 0.95, f"p50 {_f(latency['data_s']['p50'], '.0f')} s, p99 {_f(latency['data_s']['p99'], '.0f')} s",
           transform=b.transAxes, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
