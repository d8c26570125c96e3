"""The simulated world: deterministic by seed, and showing the phenomena Moment&Cross relies on.

Every figure here is recomputed from the written KuaiLive-schema tables and the saved highlight
segments, not taken from the simulator's own summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from data_pipelines.world.config import WorldConfig
from data_pipelines.dataset import DataSet
from tests.conftest import build_world, compose_config

SMALL = ["world=tiny", "world.n_users=300", "world.users_per_chunk=200"]


def read(world: DataSet, name: str) -> pd.DataFrame:
    return pd.read_parquet(world.raw / f"{name}.parquet")


def raw_tables_equal(a: DataSet, b: DataSet) -> bool:
    for path in sorted(a.raw.glob("*.parquet")):
        if not pd.read_parquet(path).equals(pd.read_parquet(b.raw / path.name)):
            return False
    return all(np.array_equal(np.load(p), np.load(b.raw / p.name)) for p in a.raw.glob("*.npy"))


def test_same_seed_gives_identical_world(tmp_path):
    first = build_world(tmp_path / "a", SMALL)
    second = build_world(tmp_path / "b", SMALL)
    assert raw_tables_equal(first, second)
    assert pd.read_parquet(first.truth.highlights).equals(
        pd.read_parquet(second.truth.highlights))


def test_other_seed_gives_other_world(tmp_path):
    first = build_world(tmp_path / "a", SMALL)
    other = build_world(tmp_path / "b", [*SMALL, "world.seed=1"])
    assert not read(first, "click").equals(read(other, "click"))


def impressions_with_highlight_flag(world: DataSet) -> pd.DataFrame:
    """Clicks and negatives, each flagged if its timestamp lies in a highlight segment of its room."""
    clicks = read(world, "click").assign(clicked=True)
    negatives = read(world, "negative").assign(clicked=False)
    imps = pd.concat([clicks, negatives], ignore_index=True).reset_index(names="imp")
    segments = pd.read_parquet(world.truth.highlights)
    pairs = imps[["imp", "live_id", "timestamp"]].merge(segments, on="live_id")
    inside = pairs[(pairs["timestamp"] >= pairs["start_timestamp"]) & (pairs["timestamp"] < pairs["end_timestamp"])]
    imps["in_highlight"] = imps["imp"].isin(inside["imp"])
    imps["room_has_highlight"] = imps["live_id"].isin(segments["live_id"])
    return imps


def test_ctr_inside_highlights_is_at_least_twice_outside(tiny_world):
    imps = impressions_with_highlight_flag(tiny_world)
    same_rooms = imps[imps["room_has_highlight"]]
    ctr_in = same_rooms.loc[same_rooms["in_highlight"], "clicked"].mean()
    ctr_out = same_rooms.loc[~same_rooms["in_highlight"], "clicked"].mean()
    assert same_rooms["in_highlight"].sum() > 500
    assert ctr_in >= 2.0 * ctr_out, (ctr_in, ctr_out)


def test_watch_time_rises_inside_highlights(tiny_world):
    imps = impressions_with_highlight_flag(tiny_world)
    clicks = imps[imps["clicked"] & imps["room_has_highlight"]]
    assert (clicks.loc[clicks["in_highlight"], "watch_live_time"].median()
            > clicks.loc[~clicks["in_highlight"], "watch_live_time"].median())


def test_exposures_are_about_nine_short_videos_to_one_live(tiny_world):
    n_short = len(read(tiny_world, "photo_play"))
    n_live = len(read(tiny_world, "click")) + len(read(tiny_world, "negative"))
    assert 8.0 <= n_short / n_live <= 10.5


def gift_delays_ms(world: DataSet) -> np.ndarray:
    """Delay of each gift after the entry of the click whose stay holds it."""
    clicks = read(world, "click")
    gifts = read(world, "gift").reset_index(names="gift")
    pairs = gifts.merge(clicks, on=["user_id", "live_id"], suffixes=("", "_click"))
    enclosing = pairs[(pairs["timestamp_click"] <= pairs["timestamp"])
                      & (pairs["timestamp"] <= pairs["timestamp_click"] + pairs["watch_live_time"])]
    assert enclosing["gift"].nunique() == len(gifts), "every gift lies inside a stay"
    return (enclosing["timestamp"] - enclosing["timestamp_click"]).to_numpy()


def test_some_gifts_arrive_after_five_minutes_and_after_an_hour(tiny_world):
    delays = gift_delays_ms(tiny_world)
    assert len(delays) > 100
    assert (delays > 5 * 60_000).mean() > 0.2
    assert (delays > 60 * 60_000).mean() > 0.03


def test_live_authors_also_post_short_videos(tiny_world):
    streamers = set(read(tiny_world, "room")["streamer_id"])
    photo_authors = set(read(tiny_world, "photo")["author_id"])
    assert len(streamers) > 20
    assert len(streamers & photo_authors) / len(streamers) > 0.9


def test_long_tail_of_light_users(tiny_world):
    users = read(tiny_world, "user")["user_id"]
    plays = read(tiny_world, "photo_play")["user_id"].value_counts().reindex(users, fill_value=0)
    live_clicks = read(tiny_world, "click")["user_id"].value_counts().reindex(users, fill_value=0)
    assert (live_clicks <= 2).mean() > 0.5  # most users barely touch lives
    top_decile = np.sort(plays.to_numpy())[::-1][: len(users) // 10]
    assert top_decile.sum() / plays.sum() > 0.3  # a heavy head


def test_content_embeddings_track_latent_interest(tiny_world):
    latent = np.load(tiny_world.truth.latent)
    emb = np.load(tiny_world.raw / "live_embedding.npy")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(emb), 500), rng.integers(0, len(emb), 500)
    emb_dot = np.einsum("nd,nd->n", emb[a], emb[b])
    latent_dot = np.einsum("nd,nd->n", latent["room"][a], latent["room"][b])
    assert np.corrcoef(emb_dot, latent_dot)[0, 1] > 0.8


def test_simulated_logs_pass_ingestion_untouched(tiny_world):
    report = json.loads(tiny_world.canonical.ingest_report.read_text())
    assert {name: t["quarantined"] for name, t in report["tables"].items()} == {
        name: 0 for name in report["tables"]}
    assert all(t["corrected"] == {} for t in report["tables"].values())  # no stay outlives its room
    assert report["tables"]["click"]["rows"] == len(read(tiny_world, "click"))


def room_impressions_per_minute_in_busiest_hour(world: DataSet) -> np.ndarray:
    """Per room live in the hour with the most live impressions: its impressions in that hour per
    minute it was live then (from the raw click, negative and room tables)."""
    imps = pd.concat([read(world, "click"), read(world, "negative")], ignore_index=True)
    hour = (imps["timestamp"] - imps["timestamp"].min()) // 3_600_000
    busiest = hour.value_counts().idxmax()
    lo = imps["timestamp"].min() + busiest * 3_600_000
    hi = lo + 3_600_000
    rooms = read(world, "room").set_index("live_id")
    live_ms = (rooms["end_timestamp"].clip(upper=hi) - rooms["start_timestamp"].clip(lower=lo))
    live_ms = live_ms[live_ms >= 60_000]
    in_hour = imps[(imps["timestamp"] >= lo) & (imps["timestamp"] < hi)]
    counts = in_hour["live_id"].value_counts().reindex(live_ms.index, fill_value=0)
    return (counts / (live_ms / 60_000)).to_numpy()


@pytest.mark.slow
def test_the_busy_world_gives_a_room_dozens_of_impressions_a_minute_and_keeps_the_phenomena(tmp_path):
    busy = build_world(tmp_path, ["world=busy", "progress=false"])
    assert np.median(room_impressions_per_minute_in_busiest_hour(busy)) >= 20
    n_short = len(read(busy, "photo_play"))
    n_live = len(read(busy, "click")) + len(read(busy, "negative"))
    assert 8.0 <= n_short / n_live <= 10.5
    imps = impressions_with_highlight_flag(busy)
    same_rooms = imps[imps["room_has_highlight"]]
    assert same_rooms.loc[same_rooms["in_highlight"], "clicked"].mean() >= \
        2.0 * same_rooms.loc[~same_rooms["in_highlight"], "clicked"].mean()
    assert (gift_delays_ms(busy) > 5 * 60_000).mean() > 0.2
    live_clicks = read(busy, "click")["user_id"].value_counts().reindex(read(busy, "user")["user_id"], fill_value=0)
    assert (live_clicks <= 2).mean() > 0.5


@pytest.mark.parametrize("name", ["tiny", "default", "busy", "large"])
def test_every_world_config_builds(name):
    cfg = compose_config("simulate", [f"world={name}"])
    world = instantiate(cfg.world, _convert_="all")
    assert isinstance(world, WorldConfig) and world.name == name


def test_invalid_world_config_is_named():
    cfg = compose_config("simulate", ["world=tiny", "world.live_share=1.5"])
    # Hydra wraps the constructor's ValueError; its message must still name world and field.
    with pytest.raises(InstantiationException, match="world 'tiny': live_share must be in"):
        instantiate(cfg.world, _convert_="all")


def test_the_truth_function_gives_every_logged_impression_its_recorded_click_probability(tiny_world):
    """The world rebuilt from its config alone scores each logged (user, room, time) exactly as the
    simulator drew its click: what lets any (user, room, time), logged or not, be scored."""
    from data_pipelines.world.config import world_config_of
    from data_pipelines.world.simulate import fixed_world, true_ctr

    # The config as the data set records it is the config it was simulated from.
    recorded = world_config_of(json.loads(tiny_world.truth.world.read_text())["config"])
    assert recorded == instantiate(compose_config("simulate", ["world=tiny"]).world, _convert_="all")
    world = fixed_world(recorded)
    logged = pd.read_parquet(tiny_world.truth.live_impressions)
    assert len(logged) > 1000
    computed, segment = true_ctr(world, logged["user_id"].to_numpy(), logged["live_id"].to_numpy(),
                                 logged["timestamp"].to_numpy())
    np.testing.assert_array_equal(computed, logged["true_ctr"].to_numpy())
    np.testing.assert_array_equal(segment, logged["highlight_segment"].to_numpy())
    inside = logged["highlight_segment"].to_numpy() >= 0
    assert inside.any() and (~inside).any()  # both kinds of moment are covered
