"""The live report's figures, computed from a run's record (online/record.py) alone: what the loop
served and how fast it learned. Served figures use the replay's metric and catch code
(recsys/replay) on the same impressions, so live and replay compare like for like."""

from __future__ import annotations

import re
from dataclasses import asdict

import numpy as np
import pandas as pd

from data_pipelines.contract import POS
from data_pipelines.dataset import DataSet
from online.record import Answers, LiveRun, LoopRecord, StreamLedger, Version
from recsys.replay.catch import CatchWindows, eligible_segments, highlight_catches, summarize
from recsys.replay.evaluation import EvaluationSet, load_evaluation
from recsys.replay.figures import group_metrics

AGREEMENT_TOLERANCE_AUC = 0.01  # |served − replay| CTR AUC, overall, for "live and replay agree"
_PUSH_LINE = re.compile(r"push (\d+) serving")


def quantiles(values: np.ndarray) -> dict[str, float | None]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"p50": None, "p99": None, "max": None}
    return {"p50": float(np.quantile(values, 0.5)), "p99": float(np.quantile(values, 0.99)),
            "max": float(values.max())}


def _learned_by_version(versions: list[Version]) -> dict[tuple[str, int], int]:
    return {(v.export_id, v.push): v.samples_learned for v in versions}


def _answered(answers: Answers, versions: list[Version]) -> tuple[np.ndarray, np.ndarray]:
    """(rows answered, the samples the answering version had learned: -1 for a version not in the
    trainer's record)."""
    learned_by = _learned_by_version(versions)
    rows = np.flatnonzero(answers.answered)
    learned = np.array([learned_by.get((answers.exports[answers.export[i]], int(answers.push[i])), -1) for i in rows],
                       dtype=np.int64)
    return rows, learned


def click_to_served(answers: Answers, versions: list[Version], learned: StreamLedger, ctr: int) -> dict:
    """For every click (a sample of the learned stream with ctr positive), the data seconds from the
    click to the first answer given by a version that had learned that sample, and the same in wall
    seconds. `learned`: the joiner's ledger of the stream the trainer learns."""
    rows, version_learned = _answered(answers, versions)
    order = np.argsort(answers.answered_unix_s[rows], kind="stable")
    when = answers.answered_unix_s[rows][order]
    reach = np.maximum.accumulate(version_learned[order])  # the most samples any version served so far had learned
    clicks = np.flatnonzero(learned.state[:, ctr] == POS)  # positions in the learned stream
    first = np.searchsorted(reach, clicks, side="right")  # first answer from a version with > position samples
    served = first < len(when)
    clock = answers.clock
    click_ms = learned.request_ts[clicks[served]]  # a click is at its request time
    served_unix = when[first[served]]
    data_s = (clock.data_ms(served_unix) - click_ms) / 1000
    wall_s = served_unix - clock.unix_s(click_ms)
    published_wall = learned.published_unix_s[clicks[served]] - clock.unix_s(click_ms)
    return {"clicks": int(len(clicks)), "served": int(served.sum()), "_data_s": data_s,
            "data_s": quantiles(data_s), "wall_s": quantiles(wall_s),
            "click_to_sample_published_wall_s": quantiles(published_wall)}


def staleness(answers: Answers, versions: list[Version], learned: StreamLedger) -> dict[str, float | None]:
    """Data seconds between each answer and the newest sample report its version had learned."""
    rows, version_learned = _answered(answers, versions)
    known = version_learned > 0
    at_ms = answers.clock.data_ms(answers.answered_unix_s[rows][known])
    return quantiles((at_ms - learned.report_ts[version_learned[known] - 1]) / 1000)


def served_figures(evaluation: EvaluationSet, predictions: np.ndarray, tasks: list[str],
                   windows: CatchWindows) -> dict:
    """Metrics per group and highlight catches of `predictions` (evaluation order; NaN rows: not
    scored, left out)."""
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


def in_evaluation_order(evaluation: EvaluationSet, impression_id: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` (one row per impression of `impression_id`) re-ordered to the evaluation's rows; NaN
    for an evaluation impression without one."""
    out = np.full((len(evaluation), values.shape[1]), np.nan, dtype=np.float64)
    position = pd.Series(np.arange(len(impression_id)), index=impression_id)
    found = position.reindex(evaluation.arrays["impression_id"]).to_numpy()
    have = np.isfinite(found)
    out[have] = values[found[have].astype(np.int64)]
    return out


def _series_figures(loop: LoopRecord, learned_stream: str) -> dict:
    """Lags and backlogs over the run, from the progress samples taken while the driver played."""
    playing = [r for r in loop.series if r.driver.done_unix_s is None]

    def data_s(pairs) -> np.ndarray:
        return np.array([(a - b) / 1000 for a, b in pairs if a is not None and b is not None])

    waiting = np.array([r.joiner.emitted.get(learned_stream, 0) - (r.trainer.learned or 0) for r in loop.series])
    return {"trainer_lag_s": quantiles(data_s((r.driver.clock_ms, r.trainer.clock_ms) for r in playing)),
            "joiner_lag_s": quantiles(data_s((r.driver.clock_ms, r.joiner.watermark) for r in playing)),
            "samples_waiting": quantiles(waiting),
            "events_in_broker": quantiles(np.array([r.events_in_broker for r in playing]))}


def restart_figures(loop: LoopRecord) -> dict:
    """Restarts by component (the joiner processes `joiner.<k>` together), and per component the
    seconds from each death (the kill, or when the supervisor saw it gone) to the component at work
    again: p50 and max."""
    kind = [r.component.split(".")[0] for r in loop.restarts]
    recovery = {}
    for c in sorted(set(kind)):
        mine = [r for r, k in zip(loop.restarts, kind) if k == c]
        q = quantiles(np.array([r.recovered_unix_s - r.died_unix_s for r in mine if r.recovered_unix_s is not None]))
        recovery[c] = {"p50": q["p50"], "max": q["max"], "not_recovered": sum(r.recovered_unix_s is None for r in mine)}
    return {"restarts": {c: kind.count(c) for c in sorted(set(kind))}, "recovery_s": recovery}


def expected_samples(data: DataSet, stream: str, played_impressions: np.ndarray) -> tuple[int, int]:
    """(count, order-free digest) of `make streams`' samples of `stream` for the impressions played:
    what the trainer must have learned, each exactly once."""
    from online.trainer import sample_digest
    from recsys.data import ShardDataset

    count, digest = 0, 0
    for part in ShardDataset(data.stream(stream), batch_size=1).micro_batches():
        mine = np.isin(part["impression_id"], played_impressions)
        count += int(mine.sum())
        digest = (digest + sample_digest(part["impression_id"][mine], part["report_ts"][mine], part["kind"][mine])) % 2**64
    return count, digest


def histogram_quantiles(metrics: dict[str, float], name: str, qs: tuple[float, ...] = (0.5, 0.99)) -> list[float | None]:
    """Quantiles of a Prometheus histogram in {"name{labels}": value} metrics, interpolated linearly
    inside the bucket they fall in (None: no observation)."""
    buckets = sorted((float(key.split('le="', 1)[1].split('"', 1)[0]), value) for key, value in metrics.items()
                     if key.startswith(f"{name}_bucket{{"))
    if not buckets or buckets[-1][1] == 0:
        return [None for _ in qs]
    bounds = np.array([b for b, _ in buckets])
    cumulative = np.array([c for _, c in buckets])
    out = []
    for q in qs:
        rank = q * cumulative[-1]
        k = int(np.searchsorted(cumulative, rank, side="left"))
        lower, below = (0.0, 0.0) if k == 0 else (bounds[k - 1], cumulative[k - 1])
        upper = bounds[k] if np.isfinite(bounds[k]) else lower  # the +Inf bucket: its lower bound
        inside = cumulative[k] - below
        out.append(float(lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)))
    return out


def feature_figures(run: LiveRun, data: DataSet, answers: Answers, ledger: dict[str, StreamLedger], loop: LoopRecord,
                    speed: float, span_s: float | None) -> dict:
    """The ids-only loop's figures: request bytes, feature skew against the streams' recomputation,
    samples carrying the served features, and an event's publication to the state a request sees."""
    from online.report.skew import feature_skew, samples_match_served
    from online.world import played_world

    served = run.served()
    sent = answers.request_bytes[answers.request_bytes > 0]
    lag = histogram_quantiles(loop.ranker_metrics, "ranker_state_event_lag_seconds")
    skew = feature_skew(data, played_world(data, span_s), served, answers, run.rounds())
    return {"request_bytes": {"p50": float(np.quantile(sent, 0.5)) if len(sent) else None,
                              "p99": float(np.quantile(sent, 0.99)) if len(sent) else None},
            "feature_skew_rate": skew["rate"], "feature_skew": skew,
            "samples_with_served_features": samples_match_served(ledger, served),
            "event_to_state_s": {"wall": {"p50": lag[0], "p99": lag[1]},
                                 "data": {"p50": None if lag[0] is None else lag[0] * speed,
                                          "p99": None if lag[1] is None else lag[1] * speed}}}


def build_report(run: LiveRun, data: DataSet, light_user_max_live: int, windows: CatchWindows, learned_stream: str,
                 comparison: tuple[np.ndarray, np.ndarray, str] | None, settings: dict) -> tuple[dict, np.ndarray]:
    """The report's content from the run's record, and every click's data seconds to a served model
    that learned it (for the plot). `comparison`: the replay's (impression ids, predictions, source)
    or None; `settings`: the run's settings the report states."""
    answers, versions, ledger = run.answers(), run.versions(), run.ledger()
    driver, joiner, trainer, loop = run.driver_summary(), run.joiner_summary(), run.trainer_summary(), run.loop()
    tasks, learned = answers.tasks, ledger[learned_stream]
    ctr = tasks.index("ctr")

    evaluation = load_evaluation(data, light_user_max_live)
    ids = pd.read_parquet(data.canonical.live_impressions, columns=["impression_id"])["impression_id"].to_numpy()
    served = in_evaluation_order(evaluation, ids[answers.rows], answers.probabilities[answers.rows])
    live = served_figures(evaluation, served, tasks, windows)
    replay_figures, replay_source = None, None
    if comparison is not None:
        replay_ids, replay_predictions, replay_source = comparison
        replayed = in_evaluation_order(evaluation, replay_ids, replay_predictions)
        replay_figures = served_figures(evaluation, np.where(np.isfinite(served[:, :1]), replayed, np.nan), tasks,
                                        windows)

    expected_count, expected_digest = expected_samples(data, learned_stream, ids[answers.rows])
    latency = click_to_served(answers, versions, learned, ctr)
    click_latencies = latency.pop("_data_s")
    request_s = (answers.answered_unix_s - answers.sent_unix_s)[answers.answered]
    first_try = answers.answered & (answers.attempts == 1)
    served_auc = live["groups"]["overall"]["auc"]["ctr"]
    replay_auc = None if replay_figures is None else replay_figures["groups"]["overall"]["auc"]["ctr"]

    def ms(q: dict) -> dict:
        return {k: None if v is None else v * 1000 for k, v in q.items()}

    summary = {
        "served_auc_ctr": served_auc,
        "served_auc_ctr_highlight": live["groups"].get("highlight", {}).get("auc", {}).get("ctr"),
        "replay_auc_ctr": replay_auc,
        "replay_auc_ctr_highlight": None if replay_figures is None else
        replay_figures["groups"].get("highlight", {}).get("auc", {}).get("ctr"),
        "click_to_served_s": {"p50": latency["data_s"]["p50"], "p99": latency["data_s"]["p99"]},
        "click_to_served_wall_s": {"p50": latency["wall_s"]["p50"], "p99": latency["wall_s"]["p99"]},
        "samples_emitted": int(joiner.emitted.get(learned_stream, 0)),
        "samples_learned": int(trainer.samples_learned_total),
        "pushes_applied": sum(len(_PUSH_LINE.findall(text)) for text in loop.ranker_logs),
        "requests_sent": driver.requests_sent,
        "requests_answered": driver.requests_answered,
        "requests_lost": driver.requests_lost,
        "events_quarantined": joiner.quarantined,
        # Published (and acknowledged by the broker) but neither applied nor quarantined by the joiner.
        "lost_events": driver.events_published - joiner.events - joiner.quarantined,
        "samples_expected": expected_count,
        "samples_digest_matches": trainer.samples_learned_total == expected_count and int(trainer.digest) == expected_digest,
        **restart_figures(loop),
        **_series_figures(loop, learned_stream),
        "ranker_request_ms": ms(quantiles(request_s)),
        "ranker_request_ms_first_try": ms(quantiles((answers.answered_unix_s - answers.sent_unix_s)[first_try])),
        "served_model_staleness_s": staleness(answers, versions, learned),
        **feature_figures(run, data, answers, ledger, loop, settings["speed"], settings["span_s"]),
        "wall_s": loop.wall_s,
    }
    if replay_auc is not None:
        summary["agreement"] = {"auc_ctr_diff": served_auc - replay_auc, "tolerance": AGREEMENT_TOLERANCE_AUC,
                                "within": abs(served_auc - replay_auc) <= AGREEMENT_TOLERANCE_AUC}
    report = {"summary": summary, "config": {"world": data.name, **settings},
              "served": live, "replay": replay_figures, "replay_source": replay_source,
              "click_to_served": latency, "joiner": asdict(joiner), "driver": asdict(driver),
              "trainer": {k: v for k, v in asdict(trainer).items() if k in
                          ("samples_learned_total", "digest", "resumed_after_samples", "pushes", "exports")},
              "ranker_metrics": {k: v for k, v in loop.ranker_metrics.items()
                                 if k.startswith(("ranker_push", "ranker_state", "ranker_served", "ranker_unknown"))},
              "faults": [asdict(f) for f in loop.faults], "restarts": [asdict(r) for r in loop.restarts],
              "faults_skipped": loop.faults_skipped, "quarantine": loop.quarantine[:100]}
    return report, click_latencies
