"""JSON-lines feeds of the feature stage (serving/ranker/src/features): a world's state events with
query or request lines interleaved as a live feed would deliver them — for the `ranker_features`
tool, the JSON ranker's ids-only requests, and the tests and benches that hold them to make streams."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from online.state_events import StateEvents


def feed_lines(events: StateEvents, asked: list[tuple[int, str]], lead_ms: np.ndarray | None = None) -> list[str]:
    """Event lines, and each asked line (request time, line) placed after every event published
    strictly before its request time. An event is published at its time minus `lead_ms` (default 0:
    on time): a lead publishes it early, ahead of requests it must not change, and out of order."""
    published = events.columns["ts"] - (0 if lead_ms is None else lead_ms)
    order = np.argsort(published, kind="stable")
    times = np.array([t for t, _ in asked], dtype=np.int64)
    by_time = np.argsort(times, kind="stable")
    cut = np.searchsorted(published[order], times[by_time], side="left")
    lines, done = [], 0
    for k, until in zip(by_time, cut):
        lines += [json.dumps({"event": events.fields(int(i))}) for i in order[done:until]]
        done = until
        lines.append(asked[k][1])
    lines += [json.dumps({"event": events.fields(int(i))}) for i in order[done:]]
    return lines


def impression_queries(impressions: pd.DataFrame) -> list[tuple[int, str]]:
    """A `ranker_features` query per impression (request id: its row), its live as the one candidate."""
    users, lives = impressions["user_id"].to_numpy(), impressions["live_id"].to_numpy()
    request_ts = impressions["request_ts"].to_numpy()
    return [(int(request_ts[q]), json.dumps({"query": {"request_id": str(q), "user_id": int(users[q]),
                                                        "request_ts": int(request_ts[q]), "live_ids": [int(lives[q])]}}))
            for q in range(len(impressions))]
