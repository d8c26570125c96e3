"""The live report rendered: reports/<name>.md from the report's content (online/report/figures.py)
and a plot of the loop's lags and of click-to-served latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from online.record import LoopRecord


def _f(value, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    s, c = report["summary"], report["config"]
    live, replay = report["served"], report["replay"]
    lines = [f"# The live loop on '{c['world']}'", "",
             f"{c['speed']:g}× the data's clock, {c['partitions']} partitions, a push every {c['push_every_s']} s "
             f"and a full export every {c['full_every_s']:g} s of data time; the {c['stream']} stream, seed {c['seed']}; "
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
              f"| events the partitions hold (kept for a ranker's rebuild) | {_f(s['events_in_broker']['p50'], '.0f')} | "
              f"{_f(s['events_in_broker']['p99'], '.0f')} |",
              f"| an event's publication → the ranker's state (wall s) | "
              f"{_f(s['event_to_state_s']['wall']['p50'], '.4f')} | {_f(s['event_to_state_s']['wall']['p99'], '.4f')} |",
              f"| the same in data seconds | {_f(s['event_to_state_s']['data']['p50'], '.3f')} | "
              f"{_f(s['event_to_state_s']['data']['p99'], '.3f')} |",
              f"| request size on the wire, ids-only (bytes) | {_f(s['request_bytes']['p50'], '.0f')} | "
              f"{_f(s['request_bytes']['p99'], '.0f')} |",
              f"| ranker request, client side (ms) | {_f(s['ranker_request_ms']['p50'], '.2f')} | "
              f"{_f(s['ranker_request_ms']['p99'], '.2f')} |", "",
              f"Requests: {s['requests_sent']:,} sent, {s['requests_answered']:,} answered, {s['requests_lost']:,} lost. "
              f"Samples: {s['samples_emitted']:,} emitted, {s['samples_learned']:,} learned. "
              f"Pushes applied by the ranker: {s['pushes_applied']:,}. Events quarantined: {s['events_quarantined']:,}.",
              "", f"Replay figures from `{report['replay_source']}`." if report["replay_source"] else
              "No replay figures (online.replay=false)."]
    skew, matched = s["feature_skew"], s["samples_with_served_features"]
    lines += ["", f"Features: the ranker computed every request's features from the events it had read; "
                  f"{skew['skewed']:,} of {skew['requests']:,} served requests differ from make streams' "
                  f"recomputation (feature_skew_rate {_f(s['feature_skew_rate'], '.4f')}; causes: "
                  + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in skew["causes"].items()) + "). "
                  f"{matched['matching']:,} of {matched['samples']:,} samples carry their request's served features."]
    lines += ["", f"Exactly once: {s['samples_learned']:,} samples learned of {s['samples_expected']:,} that make "
                  f"streams gives the impressions played; digest {'matches' if s['samples_digest_matches'] else 'DIFFERS'}"
                  f". Events lost (published, acknowledged, never consumed): {s['lost_events']:,}."]
    if report["faults"]:
        lines += ["", "Faults: " + "; ".join(e["event"] for e in report["faults"]) + "."]
    if report["restarts"]:
        lines += ["", "| restarted | times | recovery p50 (s) | max (s) |", "|---|---|---|---|"]
        lines += [f"| {c} | {n} | {_f(s['recovery_s'][c]['p50'], '.1f')} | {_f(s['recovery_s'][c]['max'], '.1f')} |"
                  for c, n in s["restarts"].items()]
        lines += ["", "Restarts: " + "; ".join(f"{r['component']} ({r['cause']})" for r in report["restarts"]) + "."]
    return "\n".join(lines) + "\n"


def plot(loop: LoopRecord, learned_stream: str, latency: dict, click_latencies: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    rows = [r for r in loop.series if r.driver.clock_ms is not None and r.driver.done_unix_s is None]
    if rows:
        t0 = rows[0].unix_s
        wall = [(r.unix_s - t0) / 60 for r in rows]

        def behind(value) -> list[float]:
            return [(r.driver.clock_ms - (r.driver.clock_ms if value(r) is None else value(r))) / 1000 for r in rows]

        a.plot(wall, behind(lambda r: r.trainer.clock_ms), label="trainer behind the clock (data s)", linewidth=0.6)
        a.plot(wall, behind(lambda r: r.joiner.watermark), label="joiner watermark behind the clock (data s)")
        a2 = a.twinx()
        a2.plot(wall, [r.joiner.emitted.get(learned_stream, 0) - (r.trainer.learned or 0) for r in rows], color="grey",
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
