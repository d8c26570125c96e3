"""Candidate sets with the truth: what each model would have recommended, scored exactly.

For a seeded sample of the logged requests (user, time), every room live at that time is a
candidate. Its request-time features and GSU sequences come from the streams' own functions
(data_pipelines/streams/build.py: build_features, with the rooms' state counted from the logged
impressions only, strictly before the request); its true click probability and highlight segment
from the simulator's own function (data_pipelines/world/simulate.py: true_ctr) on the world rebuilt
from the config the data set records. Only simulated worlds have candidate sets: real logs have no
truth to score a room that was not shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_pipelines.contract import MASKED
from data_pipelines.dataset import FINAL, DataSet
from data_pipelines.history_store import HistoryStore
from data_pipelines.streams.build import build_features
from data_pipelines.streams.features import FeatureSpec
from data_pipelines.streams.shards import request_arrays, with_labels
from data_pipelines.world.config import world_config_of
from data_pipelines.world.simulate import World, fixed_world, true_ctr
from data_pipelines.micro_batch import take_rows


@dataclass
class CandidateSets:
    """C candidate rows of R requests, grouped by request, the requests in time order."""

    arrays: dict[str, np.ndarray]  # every candidate in the shard layout, every label masked (never learned)
    request_ts: np.ndarray  # [C], equal within a request
    offsets: np.ndarray  # [R + 1]: request r's candidates are rows offsets[r]:offsets[r + 1]
    user_id: np.ndarray  # [R]
    live_id: np.ndarray  # [C]
    true_ctr: np.ndarray  # [C] the simulator's click probability
    segment: np.ndarray  # [C] the room's highlight segment then (a row of truth/highlights), -1 outside

    def __len__(self) -> int:
        return len(self.request_ts)

    @property
    def requests(self) -> int:
        return len(self.offsets) - 1

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return take_rows(self.arrays, rows)


def sample_requests(impressions: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` logged requests (user_id, request_ts) drawn without replacement, in time order (all of
    them when there are fewer)."""
    requests = impressions[["user_id", "request_ts"]].drop_duplicates()
    if n < len(requests):
        requests = requests.iloc[np.sort(np.random.default_rng(seed).choice(len(requests), n, replace=False))]
    return requests.sort_values(["request_ts", "user_id"], kind="stable").reset_index(drop=True)


def live_rooms(requests: pd.DataFrame, lives: pd.DataFrame) -> pd.DataFrame:
    """One row per (request, room live at its time: start_ts <= request_ts < end_ts): request (its
    row in `requests`), user_id, request_ts, live_id, author_id; grouped by request, rooms by id."""
    t = requests["request_ts"].to_numpy()
    live = (lives["start_ts"].to_numpy()[None, :] <= t[:, None]) & (t[:, None] < lives["end_ts"].to_numpy()[None, :])
    request, room = np.nonzero(live)  # row-major: grouped by request
    rooms = lives.iloc[room]
    return pd.DataFrame({"request": request, "user_id": requests["user_id"].to_numpy()[request],
                         "request_ts": t[request],
                         "live_id": rooms["live_id"].to_numpy(), "author_id": rooms["author_id"].to_numpy()})


def simulated_world(data: DataSet) -> World:
    """The simulator's world of `data`, rebuilt from the config its truth records."""
    recorded = json.loads(data.require(data.truth.world, "make simulate").read_text())["config"]
    return fixed_world(world_config_of(recorded))


def build_candidates(data: DataSet, n_requests: int, seed: int, span: tuple[int, int] | None = None,
                     progress: bool = False) -> CandidateSets:
    """The candidate sets of `n_requests` logged requests of `data` (within `span` = [first,
    last] request time, ms, when given), their features computed as the data set's streams computed
    theirs (the feature spec their manifest records)."""
    impressions = pd.read_parquet(data.require(data.canonical.live_impressions, "make simulate"))
    lives = pd.read_parquet(data.canonical.lives)
    pool = impressions
    if span is not None:
        ts = impressions["request_ts"].to_numpy()
        pool = impressions[(ts >= span[0]) & (ts <= span[1])]
    requests = sample_requests(pool, n_requests, seed)
    candidates = live_rooms(requests, lives)
    # Ids that cannot collide with a logged impression's: the candidates are never looked up by id.
    frame = candidates.assign(impression_id=-1 - np.arange(len(candidates), dtype=np.int64))
    store = HistoryStore.load(data.require(data.history, "make simulate"))
    spec = FeatureSpec.of_manifest(data.manifest(FINAL))
    features, _ = build_features(data.canonical, frame, store, spec, progress=progress, logged=impressions)
    world = simulated_world(data)
    ctr, segment = true_ctr(world, frame["user_id"].to_numpy(), frame["live_id"].to_numpy(),
                            frame["request_ts"].to_numpy())
    counts = np.bincount(frame["request"].to_numpy(), minlength=len(requests))
    request = request_arrays(features, np.arange(len(frame)))
    n, n_tasks = len(frame), len(data.manifest(FINAL)["tasks"])
    unknown = {"report_ts": request["request_ts"], "kind": np.zeros(n, dtype=np.int8),
               "state": np.full((n, n_tasks), MASKED, dtype=np.int8)}
    return CandidateSets(arrays=with_labels(request, unknown),
                         request_ts=frame["request_ts"].to_numpy().astype(np.int64),
                         offsets=np.concatenate([[0], np.cumsum(counts)]), user_id=requests["user_id"].to_numpy(),
                         live_id=frame["live_id"].to_numpy(), true_ctr=ctr, segment=segment)
