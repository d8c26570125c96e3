"""The feature stage's JSON-lines input (serving/ranker/src/features/features_main.cpp): a world's
state events and its impressions as queries, interleaved as a live feed would deliver them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from online.state_events import StateEvents


def feed_lines(events: StateEvents, impressions: pd.DataFrame, lead_ms: np.ndarray | None = None) -> list[str]:
    """Event lines, and a query line per impression (request id: its row) placed after every event
    published before its request time. An event is published at its time minus `lead_ms` (default
    0: on time): a lead publishes it early, ahead of queries it must not change, and out of order."""
    published = events.columns["ts"] - (0 if lead_ms is None else lead_ms)
    order = np.argsort(published, kind="stable")
    request_ts = impressions["request_ts"].to_numpy()
    queries = np.argsort(request_ts, kind="stable")
    # Where each query goes: after the events published strictly before its request.
    cut = np.searchsorted(published[order], request_ts[queries], side="left")
    users, lives = impressions["user_id"].to_numpy(), impressions["live_id"].to_numpy()
    lines, done = [], 0
    for q, until in zip(queries, cut):
        lines += [json.dumps({"event": events.fields(int(i))}) for i in order[done:until]]
        done = until
        lines.append(json.dumps({"query": {"request_id": str(q), "user_id": int(users[q]),
                                           "request_ts": int(request_ts[q]), "live_ids": [int(lives[q])]}}))
    lines += [json.dumps({"event": events.fields(int(i))}) for i in order[done:]]
    return lines
