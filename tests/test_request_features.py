"""Request-time room state counts only what happened strictly before the request."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_pipelines.contract import DENSE_FEATURES
from data_pipelines.history_store import HistoryStore, HistoryStoreConfig
from data_pipelines.streams.features import FeatureColumns, Vocabularies, log2_bucket, request_features


def test_room_state_uses_only_earlier_events():
    # One room. i0 click at 0 s (leaves at 100 s); i1 click at 10 s (leaves at 20 s); i2 a negative
    # and i3 a click both at 20 s; i4 a negative at 50 s.
    impressions = pd.DataFrame({
        "impression_id": [0, 1, 2, 3, 4], "user_id": [1, 2, 3, 4, 5], "live_id": 7, "author_id": 70,
        "request_ts": [0, 10_000, 20_000, 20_000, 50_000],
        "exit_ts": [100_000, 20_000, 20_000, 400_000, 50_000],
        "clicked": [True, True, False, True, False], "watch_ms": [100_000, 10_000, 0, 380_000, 0]})
    lives = pd.DataFrame({"live_id": [7], "author_id": [70], "start_ts": [-60_000], "end_ts": [10**6],
                          "live_type": ["a"], "live_content_category": ["dance"]})
    store = HistoryStore.build(None, impressions, HistoryStoreConfig(10_000, 15_000, 60_000))
    columns = FeatureColumns("live_content_category", "live_type", tz_offset_hours=0)
    vocab = Vocabularies.build(lives, impressions, None, None, columns)
    sparse, dense = request_features(impressions, lives, store, vocab, columns)
    f = {name: dense[:, j] for j, name in enumerate(DENSE_FEATURES)}
    count = {k: np.rint(np.expm1(v)).astype(int).tolist() for k, v in f.items() if k != "room_ctr_5min"}
    # i3 at 20 s: i0 and i1 entered, i1's exit at exactly 20 s is not yet "before"; i2 and i3 itself
    # (same millisecond) are not counted.
    assert count["room_viewers_now"] == [0, 1, 2, 2, 2]  # i4 at 50 s: i0, i1, i3 entered, i1 left
    assert count["room_clicks_30s"] == [0, 1, 2, 2, 1]  # i4: clicks in [20 s, 50 s) -> i3 only
    assert count["room_clicks_5min"] == [0, 1, 2, 2, 3]
    assert count["room_impressions_5min"] == [0, 1, 2, 2, 4]
    np.testing.assert_allclose(f["room_ctr_5min"], [0, 1, 1, 1, 0.75])
    assert count["room_age_min"] == [1, 1, 1, 1, 2]  # log1p(minutes since start), rounded
    # User history: user 1's stay ended at 100 s, after every request here.
    assert count["user_history_len"] == [0, 0, 0, 0, 0]
    assert sparse["hour"].tolist() == [1] * 5  # hour 0 (UTC) -> row 1; row 0 is padding
    assert sparse["category"].tolist() == [1] * 5 and sparse["live_item"].tolist() == [1] * 5


def test_log2_buckets():
    assert log2_bucket(np.array([0, 0.5, 1, 2, 3, 4, 1e9])).tolist() == [0, 0, 1, 2, 2, 3, 15]
