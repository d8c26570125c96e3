"""Run a world and write it: KuaiLive-schema tables under `raw/`, ground truth under `truth/`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_pipelines.dataset import DataSet, TruthFiles
from data_pipelines.world.config import HOUR_MS, MINUTE_MS, WorldConfig
from data_pipelines.world.exposures import draw_exposures, live_coverage, outside_own_stays, unique_rows
from data_pipelines.world.feedback import COMMENT, GIFT, LIKE, live_outcomes, short_outcomes, true_click_probability
from data_pipelines.world.latent import Population, build_population
from data_pipelines.world.rooms import (Highlights, LiveNowIndex, Rooms, build_highlights, build_rooms, busiest_hour,
                                       impressions_per_minute)

# Sub-streams of the world's seed: entities, rooms, then one per user chunk.
_POPULATION_STREAM, _ROOM_STREAM, _CHUNK_STREAM = 0, 1, 2

Columns = dict[str, np.ndarray]  # a table as named, equally long columns


@dataclass(frozen=True)
class SimulationResult:
    data: DataSet
    summary: dict


@dataclass(frozen=True)
class World:
    """Everything fixed before users act."""

    cfg: WorldConfig
    pop: Population
    rooms: Rooms
    highlights: Highlights
    live_now: LiveNowIndex
    coverage: float


def _take(columns: Columns, index: np.ndarray) -> Columns:
    return {name: values[index] for name, values in columns.items()}


def _concat(parts: list[Columns]) -> Columns:
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _sorted_by(columns: Columns, *keys: str) -> Columns:
    """Rows ordered by `keys`, the first one primary."""
    return _take(columns, np.lexsort([columns[k] for k in reversed(keys)]))


def _write(table: Columns, path: Path) -> None:
    pq.write_table(pa.table(table), path, compression="zstd")


def _simulate_users(world: World, users: np.ndarray, rng: np.random.Generator) -> tuple[Columns, Columns, Columns]:
    """Short plays, live impressions and in-room actions of one chunk of users (simulated time)."""
    cfg, pop = world.cfg, world.pop
    exp = draw_exposures(cfg, pop, world.rooms, world.live_now, world.coverage, users, rng)

    keep = unique_rows(exp.short_user, exp.short_photo, exp.short_t)
    user, photo, t = exp.short_user[keep], exp.short_photo[keep], exp.short_t[keep]
    played = short_outcomes(cfg, pop, user, photo, t, rng)
    short = {"user": user, "photo": photo, "t": t, "leave_t": played.leave_t, "liked": played.liked,
             "like_t": played.like_t}

    keep = unique_rows(exp.live_user, exp.live_room, exp.live_t)
    user, room, t = exp.live_user[keep], exp.live_room[keep], exp.live_t[keep]
    outcome, actions = live_outcomes(cfg, pop, world.rooms, world.highlights, user, room, t, rng)
    keep = outside_own_stays(user, room, t, outcome.exit_t)
    live = _take({"user": user, "room": room, "t": t, "clicked": outcome.clicked, "exit_t": outcome.exit_t,
                  "true_ctr": outcome.true_ctr, "segment": outcome.highlight_segment,
                  "intensity": outcome.highlight_intensity}, keep)
    kept = keep[actions.impression]
    imp = actions.impression[kept]
    action = {"user": user[imp], "room": room[imp], "entry_t": t[imp], "kind": actions.kind[kept],
              "t": actions.t[kept], "gift_price": actions.gift_price[kept]}
    return short, live, action


def fixed_world(cfg: WorldConfig) -> World:
    """Everything fixed before users act — population, rooms, highlights — from the config alone
    (its own random streams of cfg.seed): a simulated world's truth can be rebuilt at any time."""
    pop = build_population(cfg, np.random.default_rng([cfg.seed, _POPULATION_STREAM]))
    room_rng = np.random.default_rng([cfg.seed, _ROOM_STREAM])
    rooms = build_rooms(cfg, pop, room_rng)
    highlights = build_highlights(cfg, rooms, room_rng)
    live_now = LiveNowIndex.build(rooms, cfg.span_ms)
    return World(cfg, pop, rooms, highlights, live_now, live_coverage(cfg, live_now))


def true_ctr(world: World, user_id: np.ndarray, live_id: np.ndarray,
             timestamp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the simulator's click probability, the highlight segment — a row of truth/highlights — or
    -1) of live impressions given as the raw tables name them (user_id and live_id are the
    simulator's user and room indices, timestamps epoch ms)."""
    return true_click_probability(world.cfg, world.pop, world.rooms, world.highlights, np.asarray(user_id),
                                  np.asarray(live_id), np.asarray(timestamp) - np.int64(world.cfg.start_ms))


def simulate_world(cfg: WorldConfig, data: DataSet, progress: bool = True) -> SimulationResult:
    """Simulate `cfg` and write its raw tables and ground truth into `data`. Deterministic in cfg.seed."""
    data.raw.mkdir(parents=True, exist_ok=True)
    data.truth.dir.mkdir(parents=True, exist_ok=True)

    world = fixed_world(cfg)

    shorts, lives, actions = [], [], []
    chunks = range(0, cfg.n_users, cfg.users_per_chunk)
    for index, first_user in enumerate(tqdm(chunks, desc=f"simulate {cfg.name}", unit="chunk", disable=not progress)):
        users = np.arange(first_user, min(first_user + cfg.users_per_chunk, cfg.n_users))
        short, live, action = _simulate_users(world, users, np.random.default_rng([cfg.seed, _CHUNK_STREAM, index]))
        shorts.append(short)
        lives.append(live)
        actions.append(action)
    short = _sorted_by(_concat(shorts), "t", "user")
    live = _sorted_by(_concat(lives), "t", "user")
    action = _concat(actions)
    # Two actions of one kind by one user in one room in the same millisecond are one event.
    action = _sorted_by(_take(action, unique_rows(action["user"], action["room"], action["kind"], action["t"])),
                        "t", "user")

    _write_raw(world, data.raw, short, live, action)
    _write_truth(world, data.truth, live)
    summary = summarize(world, short, live, action)
    with open(data.truth.world, "w") as f:
        json.dump({"config": asdict(cfg), "summary": summary}, f, indent=2)
    return SimulationResult(data=data, summary=summary)


def _write_raw(world: World, raw_dir: Path, short: Columns, live: Columns, action: Columns) -> None:
    """The KuaiLive schema: ids, epoch-ms timestamps, ms durations."""
    cfg, pop, rooms = world.cfg, world.pop, world.rooms
    t0 = np.int64(cfg.start_ms)
    _write({"user_id": np.arange(cfg.n_users), "age_group": pop.user_age_group, "gender": pop.user_gender,
            "activity_level": np.digitize(pop.user_activity, [0.25, 0.5, 1.0, 2.0, 4.0])}, raw_dir / "user.parquet")
    _write({"streamer_id": np.arange(cfg.n_authors), "category": pop.author_category,
            "goes_live": np.arange(cfg.n_authors) < cfg.n_live_authors}, raw_dir / "streamer.parquet")
    room_ids = np.arange(len(rooms))
    _write({"live_id": room_ids, "streamer_id": rooms.author, "start_timestamp": t0 + rooms.start,
            "end_timestamp": t0 + rooms.end, "live_type": rooms.live_type,
            "live_content_category": rooms.category, "live_name_id": room_ids}, raw_dir / "room.parquet")
    np.save(raw_dir / "live_embedding.npy", rooms.embedding, allow_pickle=False)

    click = live["clicked"]
    _write({"user_id": live["user"][click], "live_id": live["room"][click],
            "streamer_id": rooms.author[live["room"][click]], "timestamp": t0 + live["t"][click],
            "watch_live_time": (live["exit_t"] - live["t"])[click]}, raw_dir / "click.parquet")
    _write({"user_id": live["user"][~click], "live_id": live["room"][~click],
            "streamer_id": rooms.author[live["room"][~click]], "timestamp": t0 + live["t"][~click]},
           raw_dir / "negative.parquet")
    for kind, name in ((LIKE, "like"), (COMMENT, "comment"), (GIFT, "gift")):
        rows = action["kind"] == kind
        table = {"user_id": action["user"][rows], "live_id": action["room"][rows],
                 "streamer_id": rooms.author[action["room"][rows]], "timestamp": t0 + action["t"][rows]}
        if kind == GIFT:
            table["gift_price"] = action["gift_price"][rows]
        _write(table, raw_dir / f"{name}.parquet")

    _write({"photo_id": np.arange(len(pop.photo_author)), "author_id": pop.photo_author,
            "duration_ms": pop.photo_duration_ms, "category": pop.author_category[pop.photo_author]},
           raw_dir / "photo.parquet")
    np.save(raw_dir / "photo_embedding.npy", pop.photo_embedding, allow_pickle=False)
    _write({"user_id": short["user"], "photo_id": short["photo"], "author_id": pop.photo_author[short["photo"]],
            "enter_timestamp": t0 + short["t"], "leave_timestamp": t0 + short["leave_t"]},
           raw_dir / "photo_play.parquet")
    liked = short["liked"]
    _write({"user_id": short["user"][liked], "photo_id": short["photo"][liked],
            "author_id": pop.photo_author[short["photo"][liked]], "timestamp": t0 + short["like_t"][liked]},
           raw_dir / "photo_like.parquet")


def _write_truth(world: World, truth: TruthFiles, live: Columns) -> None:
    """What real logs never tell: highlight segments, true click probabilities, latent vectors."""
    t0, hl, pop = np.int64(world.cfg.start_ms), world.highlights, world.pop
    _write({"live_id": hl.room, "start_timestamp": t0 + hl.start, "end_timestamp": t0 + hl.end,
            "peak_ctr_boost": hl.peak_ctr_boost, "peak_watch_boost": hl.peak_watch_boost}, truth.highlights)
    _write({"user_id": live["user"], "live_id": live["room"], "timestamp": t0 + live["t"],
            "true_ctr": live["true_ctr"], "clicked": live["clicked"], "highlight_segment": live["segment"],
            "highlight_intensity": live["intensity"]}, truth.live_impressions)
    np.savez(truth.latent, user=pop.user_latent, room=world.rooms.latent, photo=pop.photo_latent,
             author=pop.author_latent, category_centers=pop.category_centers)


def summarize(world: World, short: Columns, live: Columns, action: Columns) -> dict:
    """The figures `make simulate` prints: sizes, the exposure mix, highlight lift, gift delays."""
    cfg = world.cfg
    clicked, in_highlight = live["clicked"], live["segment"] >= 0
    in_rooms_with_highlights = np.isin(live["room"], world.highlights.room)
    inside = clicked[in_highlight]
    outside = clicked[in_rooms_with_highlights & ~in_highlight]
    live_clicks_per_user = np.bincount(live["user"][clicked], minlength=cfg.n_users)
    gift_delay = (action["t"] - action["entry_t"])[action["kind"] == GIFT]
    n_short, n_live = len(short["user"]), len(live["user"])
    per_room = impressions_per_minute(world.rooms, live["room"], live["t"])
    per_room_peak = impressions_per_minute(world.rooms, live["room"], live["t"], busiest_hour(live["t"], cfg.span_ms))

    def median_p90(values: np.ndarray) -> dict:
        return {"median": round(float(np.median(values)), 2) if len(values) else 0.0,
                "p90": round(float(np.quantile(values, 0.9)), 2) if len(values) else 0.0}

    return {
        "world": cfg.name,
        "seed": cfg.seed,
        "users": cfg.n_users,
        "authors": cfg.n_authors,
        "live_authors_with_short_videos": int(np.isin(np.arange(cfg.n_live_authors), world.pop.photo_author).sum()),
        "rooms": len(world.rooms),
        "highlight_segments": len(world.highlights),
        "short_video_exposures": n_short,
        "live_impressions": n_live,
        "short_to_live_ratio": round(n_short / max(n_live, 1), 2),
        # Per room and minute it is live: how much a room's real-time state has to go on.
        "room_impressions_per_min": median_p90(per_room),
        "room_impressions_per_min_busiest_hour": median_p90(per_room_peak),
        "live_clicks": int(clicked.sum()),
        "ctr": round(float(clicked.mean()) if n_live else 0.0, 4),
        "ctr_inside_highlights": round(float(inside.mean()) if len(inside) else 0.0, 4),
        "ctr_outside_highlights_same_rooms": round(float(outside.mean()) if len(outside) else 0.0, 4),
        "likes": int((action["kind"] == LIKE).sum()),
        "comments": int((action["kind"] == COMMENT).sum()),
        "gifts": int(len(gift_delay)),
        "gifts_within_5min": int((gift_delay <= 5 * MINUTE_MS).sum()),
        "gifts_5min_to_1h": int(((gift_delay > 5 * MINUTE_MS) & (gift_delay <= HOUR_MS)).sum()),
        "gifts_after_1h": int((gift_delay > HOUR_MS).sum()),
        "users_with_at_most_2_live_clicks_share": round(float((live_clicks_per_user <= 2).mean()), 3),
    }
