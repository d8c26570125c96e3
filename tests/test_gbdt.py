"""The gradient-boosted trees peer (recsys/model/gbdt.py, recsys/learning/gbdt.py): its flat
features against hand-counted GSUs, its refit schedule, and LightGBM's rule for ids it never saw."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data_pipelines.contract import (DENSE_FEATURES, GSU_NAMES, LIVE, NEG, POS, MASKED, SEQUENCE_FIELDS,
                                     SHORT, SPARSE_FEATURES, TASKS, lengths_key, sequence_key, sparse_key)
from data_pipelines.dataset import REALTIME
from recsys.data import ShardDataset
from recsys.data.batch import to_batch
from recsys.learning.gbdt import GbdtLearner
from recsys.model.gbdt import CATEGORICAL, GbdtSpec, feature_names, features
from recsys.replay.job import peer_runs
from tests.conftest import compose_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _hand_batch(n: int, item: list[int], author: list[int], elements: dict[str, list[list[tuple]]],
                states: np.ndarray | None = None, request_ts: list[int] | None = None) -> dict[str, np.ndarray]:
    """A micro-batch of n samples: target rooms `item` by `author`; per GSU, per sample, elements
    (item, author, gap, watch, domain); every other GSU empty."""
    arrays: dict[str, np.ndarray] = {
        "impression_id": np.arange(n), "request_ts": np.asarray(request_ts or [0] * n, dtype=np.int64),
        "report_ts": np.zeros(n, dtype=np.int64), "kind": np.zeros(n, dtype=np.int8),
        "state": np.full((n, len(TASKS)), NEG, dtype=np.int8) if states is None else states,
        "dense": np.arange(n * len(DENSE_FEATURES), dtype=np.float32).reshape(n, -1)}
    for f in SPARSE_FEATURES:
        arrays[sparse_key(f)] = np.full(n, 3)
    arrays[sparse_key("live_item")], arrays[sparse_key("author_id")] = np.asarray(item), np.asarray(author)
    for gsu in GSU_NAMES:
        per_sample = elements.get(gsu, [[] for _ in range(n)])
        arrays[lengths_key(gsu)] = np.asarray([len(e) for e in per_sample], dtype=np.int32)
        for i, name in enumerate(SEQUENCE_FIELDS):
            arrays[sequence_key(gsu, name)] = np.asarray([e[i] for s in per_sample for e in s], dtype=np.int64)
    return arrays


def test_features_count_each_gsus_elements_against_the_candidate():
    # (item, author, gap, watch, domain)
    long = [[(7, 2, 1, 4, SHORT), (9, 2, 3, 2, LIVE), (7, 5, 5, 6, LIVE)],  # sample 0: room 7 by author 2
            []]  # sample 1: nothing retrieved
    short = [[(1, 1, 2, 2, SHORT)], [(8, 4, 0, 0, LIVE), (1, 4, 2, 8, LIVE)]]  # sample 1: room 8 by author 4
    batch = to_batch(_hand_batch(2, item=[7, 8], author=[2, 4], elements={"long": long, "short": short}))
    x = features(batch, ["short", "long"])
    names = feature_names(["short", "long"])
    row = {name: x[:, j] for j, name in enumerate(names)}
    assert x.shape == (2, len(SPARSE_FEATURES) + len(DENSE_FEATURES) + 2 * 6)
    np.testing.assert_array_equal(row["live_item"], [7, 8])
    np.testing.assert_array_equal(row["room_viewers_now"], [0, len(DENSE_FEATURES)])
    np.testing.assert_allclose(row["long.length"], [3, 0])
    np.testing.assert_allclose(row["long.same_author"], [2 / 3, 0])
    np.testing.assert_allclose(row["long.same_room"], [2 / 3, 0])
    np.testing.assert_allclose(row["long.live_share"], [2 / 3, 0])
    np.testing.assert_allclose(row["long.mean_gap"], [3, 0])
    np.testing.assert_allclose(row["long.mean_watch"], [4, 0])
    np.testing.assert_allclose(row["short.length"], [1, 2])
    np.testing.assert_allclose(row["short.same_author"], [0, 1])
    np.testing.assert_allclose(row["short.same_room"], [0, 0.5])
    np.testing.assert_allclose(row["short.live_share"], [0, 1])
    np.testing.assert_allclose(row["short.mean_watch"], [2, 4])


def _spec(**changes) -> GbdtSpec:
    return GbdtSpec(**{"num_boost_round": 20, "refit_every_s": 300,
                       "params": {"num_leaves": 7, "min_data_in_leaf": 5, "num_threads": 1}, **changes})


def _labelled(rng: np.random.Generator, n: int, ts: int) -> dict[str, np.ndarray]:
    """Rooms 1..20; rooms 1..10 are clicked, rooms 11..20 not; the like task masked throughout."""
    item = rng.integers(1, 21, n)
    states = np.full((n, len(TASKS)), NEG, dtype=np.int8)
    states[:, 0] = np.where(item <= 10, POS, NEG)
    states[:, TASKS.index("ltr")] = MASKED
    return _hand_batch(n, item=list(item), author=list(item), elements={}, states=states, request_ts=[ts] * n)


def test_refits_at_most_once_per_interval_and_only_on_new_samples():
    rng = np.random.default_rng(0)
    learner = GbdtLearner(_spec(), list(TASKS), [], seed=0)
    probe = to_batch(_labelled(rng, 4, 0))
    assert learner.predict(probe).abs().sum() == 0  # nothing learned: the priors, all 0
    learner.train(to_batch(_labelled(rng, 400, 0)))
    learner.predict(to_batch(_labelled(rng, 4, 10_000)))  # window 0: refit
    learner.train(to_batch(_labelled(rng, 400, 0)))
    learner.predict(to_batch(_labelled(rng, 4, 290_000)))  # still window 0: the same boosters
    learner.predict(to_batch(_labelled(rng, 4, 310_000)))  # window 1: refit on 800
    learner.predict(to_batch(_labelled(rng, 4, 620_000)))  # window 2, nothing new: no refit
    assert [(r.at_ms, r.samples) for r in learner.refits] == [(10_000, 400), (310_000, 800)]
    assert learner.steps == 2
    # Clicked rooms rank above the others; the masked task predicts its prior (none seen: 0).
    p = learner.predict(to_batch(_hand_batch(2, item=[3, 15], author=[3, 15], elements={}, request_ts=[620_000] * 2)))
    assert p[0, 0] > 0.8 and p[1, 0] < 0.2  # twenty trees at rate 0.1 approach 1 and 0
    assert p[:, TASKS.index("ltr")].tolist() == [0.0, 0.0]
    assert p[:, TASKS.index("lvtr")].tolist() == [0.0, 0.0]  # never positive: the share of positives, 0


def test_an_id_never_fitted_takes_the_missing_values_side_of_every_split():
    """LightGBM sends the categories a split names one way and every other category (unseen ones
    included) the way of a missing value: an unseen room scores as a room with no id."""
    rng = np.random.default_rng(1)
    learner = GbdtLearner(_spec(), list(TASKS), [], seed=0)
    learner.train(to_batch(_labelled(rng, 2000, 0)))
    unseen = to_batch(_hand_batch(3, item=[999, 123_456, 21], author=[3, 3, 3], elements={}, request_ts=[0] * 3))
    got = learner.predict(unseen)[:, 0].numpy()
    x = features(unseen, [])
    x[:, SPARSE_FEATURES.index("live_item")] = np.nan
    missing = learner._boosters[0].predict(x)
    np.testing.assert_allclose(got, missing, rtol=1e-6)  # served as float32
    assert got[0] == got[1] == got[2]
    seen = learner.predict(to_batch(_hand_batch(2, item=[3, 15], author=[3, 3], elements={})))[:, 0].numpy()
    assert seen[0] - seen[1] > 0.5  # the id itself is what the trees learned
    # ...because the id is a category: its splits name sets of rooms (LightGBM's "=="), not thresholds.
    splits = []

    def walk(node: dict) -> None:
        if "split_feature" in node:
            splits.append((node["split_feature"], node["decision_type"]))
            walk(node["left_child"]), walk(node["right_child"])

    for tree in learner._boosters[0].dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    live_item = SPARSE_FEATURES.index("live_item")
    assert (live_item, "==") in splits and (live_item, "<=") not in splits
    gain = learner.importance("ctr")  # the room (or its author, the same here) carries the clicks
    assert list(gain)[0] in ("live_item", "author_id") and sum(gain.values()) == pytest.approx(1.0)
    assert set(CATEGORICAL) <= set(SPARSE_FEATURES)

def test_dropped_features_are_never_seen_by_the_trees():
    rng = np.random.default_rng(2)
    learner = GbdtLearner(_spec(drop_features=["live_item", "author_id", "long.*"]), list(TASKS), ["short", "long"],
                          seed=0)
    assert "live_item" not in learner.names and not any(n.startswith("long.") for n in learner.names)
    assert "short.length" in learner.names and len(learner.names) == len(feature_names(["short", "long"])) - 8
    learner.train(to_batch(_labelled(rng, 2000, 0)))
    # Without the room and its author, two rows that differ only in them score the same.
    probe = _hand_batch(2, item=[3, 15], author=[3, 15], elements={})
    probe["dense"][:] = probe["dense"][0]
    p = learner.predict(to_batch(probe))[:, 0].numpy()
    assert p[0] == p[1]
    kept = GbdtLearner(_spec(), list(TASKS), ["short", "long"], seed=0)  # with them, they do not
    kept.train(to_batch(_labelled(np.random.default_rng(2), 2000, 0)))
    p = kept.predict(to_batch(probe))[:, 0].numpy()
    assert p[0] - p[1] > 0.5
    with pytest.raises(ValueError, match=r"drop_features names no feature: \['rooms'\]"):
        _spec(drop_features=["rooms"]).columns([])


def test_the_spec_refuses_what_the_learner_sets():
    with pytest.raises(ValueError, match=r"may not set \['objective'\]"):
        _spec(params={"objective": "regression"})
    with pytest.raises(ValueError, match="refit_every_s must be > 0"):
        _spec(refit_every_s=0)
    ceiling = peer_runs(compose_config("replay", []), ["ceiling"])["ceiling"]
    with pytest.raises(ValueError, match="has no tables to freeze"):
        dataclasses.replace(ceiling, model=_spec(), oracle_input=False, freeze_tables=["item"])
    with pytest.raises(ValueError, match="oracle_input needs room_state true"):
        dataclasses.replace(ceiling, room_state=False)


def test_the_lightgbm_peer_learns_the_realtime_stream_of_the_tiny_world(tiny_streams):
    cfg = compose_config("replay", [f"paths.data_dir={tiny_streams.root.parent}", f"world={tiny_streams.name}",
                                    "peers.lightgbm.model.params.num_threads=1"])
    peer = peer_runs(cfg, ["lightgbm"])["lightgbm"]
    assert peer.stream == REALTIME and peer.cross.gsu_names == list(cfg.cross.gsu_names)
    learner = GbdtLearner(peer.model, list(TASKS), peer.cross.gsu_names, seed=0)
    parts = ShardDataset(tiny_streams.stream(REALTIME), batch_size=256).micro_batches()
    batches = [to_batch(next(parts)) for _ in range(6)]
    for b in batches[:5]:
        learner.train(b)
    p = learner.predict(batches[5]).numpy()
    assert p.shape == (len(batches[5]), len(TASKS)) and np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert learner.refits[0].samples == sum(len(b) for b in batches[:5])
