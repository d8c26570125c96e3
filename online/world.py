"""The data set the live loop plays: its events in order and every request's features, computed by
the streams' own functions (data_pipelines/streams/build.py) from the canonical tables and the
history store, with the feature spec the data set's streams were built with (its manifest)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.dataset import FINAL, DataSet
from data_pipelines.history_store import HistoryStore
from data_pipelines.streams.build import build_features
from data_pipelines.streams.features import FeatureSpec
from data_pipelines.streams.shards import ImpressionFeatures
from online.events import Timeline, world_timeline


@dataclass(frozen=True)
class PlayedWorld:
    timeline: Timeline
    features: ImpressionFeatures  # every impression of the data set (rows of the canonical table)
    rows: np.ndarray  # the rows played, in request order


def played_span(impressions: pd.DataFrame, span_s: float | None) -> np.ndarray:
    """Which impressions (rows of the canonical table) fall in the first `span_s` data seconds from
    the first one (all of them for None)."""
    ts = impressions["request_ts"].to_numpy()
    if span_s is None:
        return np.ones(len(ts), dtype=bool)
    return ts < int(ts.min()) + int(float(span_s) * 1000)


def played_world(data: DataSet, span_s: float | None, progress: bool = False) -> PlayedWorld:
    """`span_s` data seconds of the data set from its first impression (all of it for None)."""
    impressions = pd.read_parquet(data.require(data.canonical.live_impressions, "make simulate / make ingest"))
    actions = pd.read_parquet(data.canonical.live_actions)
    store = HistoryStore.load(data.require(data.history, "make simulate / make history"))
    spec = FeatureSpec.of_manifest(data.manifest(FINAL))
    # Features of every impression: a request's room state counts earlier requests of the room,
    # whichever span is played.
    features, _ = build_features(data.canonical, impressions, store, spec, progress=progress)
    played = played_span(impressions, span_s)
    kept = impressions[played]
    timeline = world_timeline(kept, actions[actions["impression_id"].isin(kept["impression_id"])])
    rows = np.flatnonzero(played)
    # world_timeline numbers rows within `kept`: back to rows of the whole table, which features follow.
    timeline = Timeline(timeline.ts, timeline.type, timeline.user, timeline.impression, rows[timeline.row],
                        timeline.watch_ms)
    order = np.argsort(impressions["request_ts"].to_numpy()[rows], kind="stable")
    return PlayedWorld(timeline, features, rows[order])
