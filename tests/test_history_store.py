"""As-of queries of the interaction-log store, against hand-computed answers and a brute-force scan."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_pipelines.contract import LIVE, SHORT
from data_pipelines.history_store import HistoryStore, HistoryStoreConfig


def small_store(max_events: int = 10_000) -> HistoryStore:
    # User 7: photo 11 played [100, 200]; live 21 entered at 150, left at 400; photo 12 [300, 350].
    # User 8: photo 11 played [120, 130]. Live impression of user 9 without a click: not history.
    plays = pd.DataFrame({"user_id": [7, 7, 8], "photo_id": [11, 12, 11], "author_id": [5, 6, 5],
                          "start_ts": [100, 300, 120], "end_ts": [200, 350, 130], "watch_ms": [100, 50, 10],
                          "liked": [False, False, False]})
    impressions = pd.DataFrame({"user_id": [7, 9], "live_id": [21, 21], "author_id": [5, 5],
                                "request_ts": [150, 160], "exit_ts": [400, 160], "clicked": [True, False],
                                "watch_ms": [250, 0]})
    cfg = HistoryStoreConfig(max_events=max_events, short_long_view_ms=60, live_long_view_ms=200)
    return HistoryStore.build(plays, impressions, cfg)


@pytest.mark.parametrize("t, expected_items", [
    (200, []),  # the first play ends at 200: not strictly before
    (201, [11]),
    (350, [11]),
    (351, [11, 12]),
    (401, [11, 12, 21]),  # the live stay is known only once the user left the room
    (10**12, [11, 12, 21]),
    (-5, []),
])
def test_hand_computed_as_of_answers(t, expected_items):
    store = small_store()
    rows = store.query(7, t)
    assert store.item_id[rows].tolist() == expected_items
    begin, end = store.query_batch(np.array([7]), np.array([t]))
    assert store.item_id[begin[0]:end[0]].tolist() == expected_items


def test_side_info_is_kept():
    store = small_store()
    rows = store.query(7, 10**12)
    assert store.domain[rows].tolist() == [SHORT, SHORT, LIVE]
    assert store.author_id[rows].tolist() == [5, 6, 5]
    assert store.watch_ms[rows].tolist() == [100, 50, 250]
    assert store.long_view[rows].tolist() == [True, False, True]  # 100 >= 60, 50 < 60, 250 >= 200
    assert store.start_ts[rows].tolist() == [100, 300, 150]


def test_unknown_users_and_users_without_history_are_empty():
    store = small_store()
    assert store.query(9, 10**12) == slice(0, 0)  # only an unclicked impression
    begin, end = store.query_batch(np.array([1, 9, 1000]), np.array([10**12] * 3))
    assert (end - begin).tolist() == [0, 0, 0]


def test_max_events_keeps_the_most_recent():
    store = small_store(max_events=2)
    assert store.item_id[store.query(7, 10**12)].tolist() == [12, 21]


def test_gather_is_most_recent_first_and_padded():
    store = small_store()
    begin, end = store.query_batch(np.array([7, 8, 9]), np.array([401, 401, 401]))
    np.testing.assert_array_equal(store.gather(begin, end, 4), [[21, 12, 11, -1], [11, -1, -1, -1],
                                                                 [-1, -1, -1, -1]])
    np.testing.assert_array_equal(store.gather(begin, end, 2, "domain", pad=9), [[LIVE, SHORT], [SHORT, 9], [9, 9]])


def brute_force(events: pd.DataFrame, user: int, t: int, max_events: int) -> pd.DataFrame:
    mine = events[(events["user_id"] == user) & (events["ts"] < t)]
    return mine.sort_values(["ts", "start_ts", "domain"], kind="stable").tail(max_events)


@pytest.mark.parametrize("max_events", [10_000, 7])
def test_batched_queries_match_a_brute_force_scan(tiny_world, max_events):
    store = HistoryStore.load(tiny_world.history)
    plays = pd.read_parquet(tiny_world.canonical.short_plays)
    stays = pd.read_parquet(tiny_world.canonical.live_impressions).query("clicked")
    events = pd.concat([
        pd.DataFrame({"user_id": plays["user_id"], "ts": plays["end_ts"], "start_ts": plays["start_ts"],
                      "item_id": plays["photo_id"], "domain": SHORT}),
        pd.DataFrame({"user_id": stays["user_id"], "ts": stays["exit_ts"], "start_ts": stays["request_ts"],
                      "item_id": stays["live_id"], "domain": LIVE}),
    ], ignore_index=True)

    rng = np.random.default_rng(1)
    users = rng.choice(events["user_id"].unique(), size=150)
    # Query at random times and exactly at event times, where "strictly before" matters.
    exact = events.sample(50, random_state=1)
    users = np.concatenate([users, exact["user_id"].to_numpy()])
    times = np.concatenate([rng.integers(events["ts"].min() - 1000, events["ts"].max() + 1000, size=150),
                            exact["ts"].to_numpy()])
    begin, end = store.query_batch(users, times, max_events=max_events)
    for u, t, b, e in zip(users, times, begin, end):
        expected = brute_force(events, int(u), int(t), max_events)
        assert (store.ts[b:e] < t).all()
        assert store.ts[b:e].tolist() == expected["ts"].tolist()
        assert store.item_id[b:e].tolist() == expected["item_id"].tolist()
        single = store.query(int(u), int(t), max_events=max_events)
        assert (single.start, single.stop) == (b, e)


def test_save_and_load_round_trip(tmp_path):
    store = small_store()
    store.save(tmp_path / "store.npz")
    loaded = HistoryStore.load(tmp_path / "store.npz")
    for field in ("user_ids", "offsets", "ts", "start_ts", "item_id", "author_id", "domain", "watch_ms", "long_view"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(store, field))
    assert loaded.max_events == store.max_events


def test_a_cut_store_file_is_named(tmp_path):
    from tests.corpus import damage

    small_store().save(tmp_path / "store.npz")
    damage.cut(tmp_path / "store.npz")
    with pytest.raises(ValueError, match=r"store.npz: not a history store this code reads .*make history"):
        HistoryStore.load(tmp_path / "store.npz")
