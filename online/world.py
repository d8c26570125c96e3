"""The data set the live loop plays: its events in order and every request's features, computed by
the streams' own functions (data_pipelines/streams/build.py) from the canonical tables and the
history store, exactly as `make streams` computes them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from data_pipelines.dataset import DataSet
from data_pipelines.history_store import HistoryStore
from data_pipelines.streams.build import build_features
from data_pipelines.streams.shards import ImpressionFeatures
from online.events import Timeline, world_timeline


@dataclass(frozen=True)
class PlayedWorld:
    timeline: Timeline
    features: ImpressionFeatures  # every impression of the data set (rows of the canonical table)
    rows: np.ndarray  # the rows played, in request order


def played_world(cfg: DictConfig) -> PlayedWorld:
    """`cfg.online.span_s` seconds of the data set from its first impression (all of it when null)."""
    data = DataSet(cfg.data.output_dir)
    impressions = pd.read_parquet(data.require(data.canonical.live_impressions, "make simulate / make ingest"))
    actions = pd.read_parquet(data.canonical.live_actions)
    store = HistoryStore.load(data.require(data.history, "make simulate / make history"))
    # Features of every impression: a request's room state counts earlier requests of the room,
    # whichever span is played.
    features, _ = build_features(data.canonical, impressions, store, instantiate(cfg.data.features),
                                 int(cfg.gsu.length), int(cfg.gsu.max_pairs), progress=bool(cfg.online.progress))
    played = np.ones(len(impressions), dtype=bool)
    if cfg.online.span_s is not None:
        start = int(impressions["request_ts"].min())
        played = impressions["request_ts"].to_numpy() < start + int(float(cfg.online.span_s) * 1000)
    kept = impressions[played]
    timeline = world_timeline(kept, actions[actions["impression_id"].isin(kept["impression_id"])])
    rows = np.flatnonzero(played)
    # world_timeline numbers rows within `kept`: back to rows of the whole table, which features follow.
    timeline = Timeline(timeline.ts, timeline.type, timeline.user, timeline.impression, rows[timeline.row],
                        timeline.watch_ms)
    order = np.argsort(impressions["request_ts"].to_numpy()[rows], kind="stable")
    return PlayedWorld(timeline, features, rows[order])
