"""Run a world and write it: KuaiLive-schema tables under `raw/`, ground truth under `truth/`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_pipelines.world.config import HOUR_MS, MINUTE_MS, WorldConfig
from data_pipelines.world.exposures import draw_exposures, live_coverage, outside_own_stays, unique_rows
from data_pipelines.world.feedback import COMMENT, GIFT, LIKE, live_outcomes, short_outcomes
from data_pipelines.world.latent import build_population
from data_pipelines.world.rooms import LiveNowIndex, build_highlights, build_rooms

# Sub-streams of the world's seed: entities, rooms, then one per user chunk.
_POPULATION_STREAM, _ROOM_STREAM, _CHUNK_STREAM = 0, 1, 2


@dataclass(frozen=True)
class SimulationResult:
    raw_dir: Path
    truth_dir: Path
    summary: dict


def _write(table: dict[str, np.ndarray], path: Path) -> None:
    pq.write_table(pa.table(table), path, compression="zstd")


def simulate_world(cfg: WorldConfig, out_dir: Path, progress: bool = True) -> SimulationResult:
    """Simulate `cfg` and write it under `out_dir` (`raw/` and `truth/`). Deterministic in cfg.seed."""
    raw_dir, truth_dir = Path(out_dir) / "raw", Path(out_dir) / "truth"
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    pop = build_population(cfg, np.random.default_rng([cfg.seed, _POPULATION_STREAM]))
    room_rng = np.random.default_rng([cfg.seed, _ROOM_STREAM])
    rooms = build_rooms(cfg, pop, room_rng)
    highlights = build_highlights(cfg, rooms, room_rng)
    live_now = LiveNowIndex.build(rooms, cfg.span_ms)
    coverage = live_coverage(cfg, live_now)

    parts: dict[str, list] = {name: [] for name in ("short", "live", "action")}
    chunks = range(0, cfg.n_users, cfg.users_per_chunk)
    for chunk_index, first_user in enumerate(tqdm(chunks, desc=f"simulate {cfg.name}", unit="chunk",
                                                  disable=not progress)):
        rng = np.random.default_rng([cfg.seed, _CHUNK_STREAM, chunk_index])
        users = np.arange(first_user, min(first_user + cfg.users_per_chunk, cfg.n_users))
        exp = draw_exposures(cfg, pop, rooms, live_now, coverage, users, rng)

        keep = unique_rows(exp.short_user, exp.short_photo, exp.short_t)
        su, sp, st = exp.short_user[keep], exp.short_photo[keep], exp.short_t[keep]
        short = short_outcomes(cfg, pop, su, sp, st, rng)
        parts["short"].append((su, sp, st, short))

        keep = unique_rows(exp.live_user, exp.live_room, exp.live_t)
        lu, lr, lt = exp.live_user[keep], exp.live_room[keep], exp.live_t[keep]
        live, actions = live_outcomes(cfg, pop, rooms, highlights, lu, lr, lt, rng)
        keep = outside_own_stays(lu, lr, lt, live.exit_t)
        parts["live"].append((lu[keep], lr[keep], lt[keep], live.select(keep)))
        kept_actions = keep[actions.impression]
        ai = actions.impression[kept_actions]
        parts["action"].append((lu[ai], lr[ai], lt[ai], actions.select(kept_actions)))

    t0 = np.int64(cfg.start_ms)
    su = np.concatenate([p[0] for p in parts["short"]])
    sp = np.concatenate([p[1] for p in parts["short"]])
    st = np.concatenate([p[2] for p in parts["short"]])
    leave = np.concatenate([p[3].leave_t for p in parts["short"]])
    liked = np.concatenate([p[3].liked for p in parts["short"]])
    like_t = np.concatenate([p[3].like_t for p in parts["short"]])

    lu = np.concatenate([p[0] for p in parts["live"]])
    lr = np.concatenate([p[1] for p in parts["live"]])
    lt = np.concatenate([p[2] for p in parts["live"]])
    clicked = np.concatenate([p[3].clicked for p in parts["live"]])
    exit_t = np.concatenate([p[3].exit_t for p in parts["live"]])
    true_ctr = np.concatenate([p[3].true_ctr for p in parts["live"]])
    segment = np.concatenate([p[3].highlight_segment for p in parts["live"]])
    intensity = np.concatenate([p[3].highlight_intensity for p in parts["live"]])

    au = np.concatenate([p[0] for p in parts["action"]])
    ar = np.concatenate([p[1] for p in parts["action"]])
    a_entry = np.concatenate([p[2] for p in parts["action"]])
    a_kind = np.concatenate([p[3].kind for p in parts["action"]])
    a_t = np.concatenate([p[3].t for p in parts["action"]])
    a_price = np.concatenate([p[3].gift_price for p in parts["action"]])
    # Two actions of one kind by one user in one room in the same millisecond are one event.
    keep = unique_rows(au, ar, a_kind, a_t)
    au, ar, a_entry, a_kind, a_t, a_price = au[keep], ar[keep], a_entry[keep], a_kind[keep], a_t[keep], a_price[keep]

    author_of_room = rooms.author
    users = np.arange(cfg.n_users)
    _write({"user_id": users, "age_group": pop.user_age_group, "gender": pop.user_gender,
            "activity_level": np.digitize(pop.user_activity, [0.25, 0.5, 1.0, 2.0, 4.0])}, raw_dir / "user.parquet")
    _write({"streamer_id": np.arange(cfg.n_authors), "category": pop.author_category,
            "goes_live": np.arange(cfg.n_authors) < cfg.n_live_authors}, raw_dir / "streamer.parquet")
    room_ids = np.arange(len(rooms))
    _write({"live_id": room_ids, "streamer_id": author_of_room, "start_timestamp": t0 + rooms.start,
            "end_timestamp": t0 + rooms.end, "live_type": rooms.live_type,
            "live_content_category": rooms.category, "live_name_id": room_ids}, raw_dir / "room.parquet")
    np.save(raw_dir / "live_embedding.npy", rooms.embedding, allow_pickle=False)

    order = np.lexsort((lu, lt))
    lu, lr, lt, clicked, exit_t, true_ctr, segment, intensity = (
        a[order] for a in (lu, lr, lt, clicked, exit_t, true_ctr, segment, intensity))
    click_mask = clicked
    _write({"user_id": lu[click_mask], "live_id": lr[click_mask], "streamer_id": author_of_room[lr[click_mask]],
            "timestamp": t0 + lt[click_mask], "watch_live_time": (exit_t - lt)[click_mask]}, raw_dir / "click.parquet")
    _write({"user_id": lu[~click_mask], "live_id": lr[~click_mask], "streamer_id": author_of_room[lr[~click_mask]],
            "timestamp": t0 + lt[~click_mask]}, raw_dir / "negative.parquet")
    order = np.lexsort((au, a_t))
    au, ar, a_entry, a_kind, a_t, a_price = (a[order] for a in (au, ar, a_entry, a_kind, a_t, a_price))
    for kind, name in ((LIKE, "like"), (COMMENT, "comment"), (GIFT, "gift")):
        m = a_kind == kind
        table = {"user_id": au[m], "live_id": ar[m], "streamer_id": author_of_room[ar[m]], "timestamp": t0 + a_t[m]}
        if kind == GIFT:
            table["gift_price"] = a_price[m]
        _write(table, raw_dir / f"{name}.parquet")

    _write({"photo_id": np.arange(len(pop.photo_author)), "author_id": pop.photo_author,
            "duration_ms": pop.photo_duration_ms, "category": pop.author_category[pop.photo_author]},
           raw_dir / "photo.parquet")
    np.save(raw_dir / "photo_embedding.npy", pop.photo_embedding, allow_pickle=False)
    order = np.lexsort((su, st))
    su, sp, st, leave, liked, like_t = (a[order] for a in (su, sp, st, leave, liked, like_t))
    _write({"user_id": su, "photo_id": sp, "author_id": pop.photo_author[sp],
            "enter_timestamp": t0 + st, "leave_timestamp": t0 + leave}, raw_dir / "photo_play.parquet")
    _write({"user_id": su[liked], "photo_id": sp[liked], "author_id": pop.photo_author[sp[liked]],
            "timestamp": t0 + like_t[liked]}, raw_dir / "photo_like.parquet")

    _write({"live_id": highlights.room, "start_timestamp": t0 + highlights.start, "end_timestamp": t0 + highlights.end,
            "peak_ctr_boost": highlights.peak_ctr_boost, "peak_watch_boost": highlights.peak_watch_boost},
           truth_dir / "highlights.parquet")
    _write({"user_id": lu, "live_id": lr, "timestamp": t0 + lt, "true_ctr": true_ctr, "clicked": clicked,
            "highlight_segment": segment, "highlight_intensity": intensity}, truth_dir / "live_impressions.parquet")
    np.savez(truth_dir / "latent.npz", user=pop.user_latent, room=rooms.latent, photo=pop.photo_latent,
             author=pop.author_latent, category_centers=pop.category_centers)

    summary = summarize(
        cfg, n_rooms=len(rooms), n_highlights=len(highlights), room_has_highlight=np.isin(room_ids, highlights.room),
        short_user=su, live_user=lu, live_room=lr, clicked=clicked, in_highlight=segment >= 0,
        photo_author=pop.photo_author, gift_delay_ms=(a_t - a_entry)[a_kind == GIFT],
        n_likes=int((a_kind == LIKE).sum()), n_comments=int((a_kind == COMMENT).sum()),
    )
    with open(truth_dir / "world.json", "w") as f:
        json.dump({"config": asdict(cfg), "summary": summary}, f, indent=2)
    return SimulationResult(raw_dir=raw_dir, truth_dir=truth_dir, summary=summary)


def summarize(
    cfg: WorldConfig, *, n_rooms: int, n_highlights: int, room_has_highlight: np.ndarray, short_user: np.ndarray,
    live_user: np.ndarray, live_room: np.ndarray, clicked: np.ndarray, in_highlight: np.ndarray,
    photo_author: np.ndarray, gift_delay_ms: np.ndarray, n_likes: int, n_comments: int,
) -> dict:
    """The figures `make simulate` prints: sizes, the exposure mix, highlight lift, gift delays."""
    in_rooms_with_highlights = room_has_highlight[live_room]
    inside = clicked[in_highlight]
    outside = clicked[in_rooms_with_highlights & ~in_highlight]
    live_clicks_per_user = np.bincount(live_user[clicked], minlength=cfg.n_users)
    live_authors = np.arange(cfg.n_live_authors)
    return {
        "world": cfg.name,
        "seed": cfg.seed,
        "users": cfg.n_users,
        "authors": cfg.n_authors,
        "live_authors_with_short_videos": int(np.isin(live_authors, photo_author).sum()),
        "rooms": n_rooms,
        "highlight_segments": n_highlights,
        "short_video_exposures": int(len(short_user)),
        "live_impressions": int(len(live_user)),
        "short_to_live_ratio": round(len(short_user) / max(len(live_user), 1), 2),
        "live_clicks": int(clicked.sum()),
        "ctr": round(float(clicked.mean()) if len(clicked) else 0.0, 4),
        "ctr_inside_highlights": round(float(inside.mean()) if len(inside) else 0.0, 4),
        "ctr_outside_highlights_same_rooms": round(float(outside.mean()) if len(outside) else 0.0, 4),
        "likes": n_likes,
        "comments": n_comments,
        "gifts": int(len(gift_delay_ms)),
        "gifts_within_5min": int((gift_delay_ms <= 5 * MINUTE_MS).sum()),
        "gifts_5min_to_1h": int(((gift_delay_ms > 5 * MINUTE_MS) & (gift_delay_ms <= HOUR_MS)).sum()),
        "gifts_after_1h": int((gift_delay_ms > HOUR_MS).sum()),
        "users_with_at_most_2_live_clicks_share": round(float((live_clicks_per_user <= 2).mean()), 3),
    }
