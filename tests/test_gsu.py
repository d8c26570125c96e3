"""GSU retrieval against a brute-force scan of small random histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_pipelines.contract import GSU_NAMES, LIVE, SHORT
from data_pipelines.history_store import HistoryStore, HistoryStoreConfig
from data_pipelines.streams.features import FeatureColumns, Vocabularies, log2_bucket
from data_pipelines.streams.gsu import GsuRetriever

L, MAX_EVENTS = 4, 12


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(7)
    n_photos, n_lives, n_authors, n_users = 30, 8, 5, 6
    photos = pd.DataFrame({"photo_id": np.arange(100, 100 + n_photos), "author_id": rng.integers(0, n_authors, n_photos)})
    lives = pd.DataFrame({"live_id": np.arange(500, 500 + n_lives), "author_id": rng.integers(0, n_authors, n_lives),
                          "start_ts": 0, "end_ts": 10**9, "live_type": 1, "live_content_category": 2})
    n_plays, n_stays = 160, 40
    start = rng.integers(0, 100_000, n_plays)
    photo = rng.integers(0, n_photos, n_plays)
    plays = pd.DataFrame({"user_id": rng.integers(0, n_users, n_plays), "photo_id": photos["photo_id"].to_numpy()[photo],
                          "author_id": photos["author_id"].to_numpy()[photo], "start_ts": start,
                          "end_ts": start + rng.integers(500, 30_000, n_plays)})
    plays["watch_ms"] = plays["end_ts"] - plays["start_ts"]
    live = rng.integers(0, n_lives, n_stays)
    request = rng.integers(0, 100_000, n_stays)
    watch = rng.integers(1_000, 200_000, n_stays)
    stays = pd.DataFrame({"user_id": rng.integers(0, n_users, n_stays), "live_id": lives["live_id"].to_numpy()[live],
                          "author_id": lives["author_id"].to_numpy()[live], "request_ts": request,
                          "exit_ts": request + watch, "clicked": True, "watch_ms": watch})
    store = HistoryStore.build(plays, stays, HistoryStoreConfig(max_events=MAX_EVENTS, short_long_view_ms=10_000,
                                                                live_long_view_ms=60_000))
    vocab = Vocabularies.build(lives, stays, photos, plays, FeatureColumns("live_content_category", "live_type", 0))
    photo_emb = rng.standard_normal((n_photos, 6)).astype(np.float32)  # rows follow sorted photo ids
    live_emb = rng.standard_normal((n_lives, 6)).astype(np.float32)
    retriever = GsuRetriever.build(store, vocab, photo_emb, live_emb, length=L, max_pairs=50)  # forces chunking
    events = pd.concat([
        pd.DataFrame({"user_id": plays["user_id"], "ts": plays["end_ts"], "start_ts": plays["start_ts"],
                      "item": plays["photo_id"], "author": plays["author_id"], "domain": SHORT,
                      "watch": plays["watch_ms"], "long_view": plays["watch_ms"] >= 10_000}),
        pd.DataFrame({"user_id": stays["user_id"], "ts": stays["exit_ts"], "start_ts": stays["request_ts"],
                      "item": stays["live_id"], "author": stays["author_id"], "domain": LIVE,
                      "watch": stays["watch_ms"], "long_view": stays["watch_ms"] >= 60_000}),
    ], ignore_index=True)
    return retriever, vocab, photo_emb, live_emb, lives, events


def brute_force(events, vocab, photo_emb, live_emb, user, t0, live_id, author):
    """Each GSU as a plain Python scan: the user's last MAX_EVENTS events before t0, then filter/sort."""
    mine = events[(events["user_id"] == user) & (events["ts"] < t0)]
    mine = mine.sort_values(["ts", "start_ts", "domain"], kind="stable").tail(MAX_EVENTS)
    rows = list(mine.itertuples(index=False))  # oldest first
    recent_first = rows[::-1]
    # Scores are exact integer dot products of the embeddings quantized with one scale: the largest
    # |coordinate| of either table becomes 4095 (gsu.py, "the dot products are taken over ...").
    scale = 4095 / max(np.abs(photo_emb).max(), np.abs(live_emb).max())
    photo_q = [[int(round(float(x) * scale)) for x in row] for row in photo_emb]
    live_q = [[int(round(float(x) * scale)) for x in row] for row in live_emb]
    target = live_q[int(np.searchsorted(vocab.live.ids, live_id))]

    def score(r):
        table, ids = (photo_q, vocab.photo.ids) if r.domain == SHORT else (live_q, vocab.live.ids)
        return sum(a * b for a, b in zip(table[int(np.searchsorted(ids, r.item))], target))

    def ranked(cands):  # best score first, ties: the more recent first
        order = sorted(range(len(cands)), key=lambda k: (-score(cands[k]), k))
        return [cands[k] for k in order][:L]

    return {
        "short": [r for r in recent_first if r.domain == SHORT][:L],
        "long": ranked([r for r in recent_first if r.domain == SHORT]),
        "aidhard": [r for r in recent_first if r.domain == SHORT and r.author == author][:L],
        "livelong": ranked([r for r in recent_first if r.domain == LIVE]),
        "mixed": [r for r in recent_first if r.long_view][:L],
    }


def test_every_gsu_matches_brute_force(world):
    retriever, vocab, photo_emb, live_emb, lives, events = world
    rng = np.random.default_rng(3)
    n = 60
    users = rng.integers(0, 7, n)  # user 6 has no history at all
    t0 = np.concatenate([rng.integers(0, 250_000, n - 10), events["ts"].to_numpy()[:10]])  # exact event times too
    pick = rng.integers(0, len(lives), n)
    live_ids, authors = lives["live_id"].to_numpy()[pick], lives["author_id"].to_numpy()[pick]
    got = retriever.retrieve(users, t0, live_ids, authors)
    for name in GSU_NAMES:
        offsets = got[name].offsets
        for i in range(n):
            expected = brute_force(events, vocab, photo_emb, live_emb, users[i], t0[i], live_ids[i], authors[i])[name]
            part = slice(offsets[i], offsets[i + 1])
            exp_items = [int(vocab.item_index(np.array([r.item]), np.array([r.domain]))[0]) for r in expected]
            assert got[name].fields["item"][part].tolist() == exp_items, (name, i)
            assert got[name].fields["domain"][part].tolist() == [r.domain for r in expected]
            assert got[name].fields["author"][part].tolist() == vocab.author.index(
                np.array([r.author for r in expected], dtype=np.int64)).tolist()
            gap = log2_bucket(np.array([(t0[i] - r.ts) / 60_000 for r in expected])) + 1
            assert got[name].fields["gap"][part].tolist() == gap.tolist()
            watch = log2_bucket(np.array([r.watch / 1000 for r in expected])) + 1
            assert got[name].fields["watch"][part].tolist() == watch.tolist()
    # Short videos and lives carry their own domain values, neither of them the padding value 0.
    assert set(got["short"].fields["domain"].tolist()) == {SHORT}
    assert set(got["livelong"].fields["domain"].tolist()) == {LIVE}
    assert 0 not in (SHORT, LIVE)


def test_an_interaction_appears_only_once_it_has_ended(world):
    retriever, vocab, *_, lives, events = world
    shorts = events[events["domain"] == SHORT].sort_values(["user_id", "ts", "start_ts"])
    for e in shorts.groupby("user_id").tail(1).itertuples(index=False):  # each user's latest short video
        own_item = int(vocab.photo.index(np.array([e.item]))[0])
        target = (np.array([lives["live_id"].iloc[0]]), np.array([e.author]))
        at = retriever.retrieve(np.array([e.user_id]), np.array([e.ts]), *target)["short"]
        after = retriever.retrieve(np.array([e.user_id]), np.array([e.ts + 1]), *target)["short"]
        before_items = shorts[(shorts["user_id"] == e.user_id) & (shorts["ts"] < e.ts)]
        assert int(after.fields["item"][0]) == own_item  # known one millisecond after it ended
        assert int(at.lengths[0]) == min(len(before_items), L)  # not at the very moment it ended
        if len(before_items):
            latest_before = before_items.sort_values(["ts", "start_ts"]).iloc[-1]["item"]
            assert int(at.fields["item"][0]) == int(vocab.photo.index(np.array([latest_before]))[0])


def test_empty_history_gives_empty_sequences(world):
    retriever, *_, lives, _ = world
    empty = retriever.retrieve(np.array([999]), np.array([10**9]), lives["live_id"].to_numpy()[:1], np.array([0]))
    assert all(int(empty[name].lengths[0]) == 0 for name in GSU_NAMES)
