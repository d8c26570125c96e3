"""The ranker's feature stage alone (serving/ranker/build/ranker_features): assembling an ids-only
request's features at `candidates` candidates for a user with a `history_events`-event history —
p50 / p99 in total and per GSU — and the state's resident memory per history event and per 100,000
users. The world gives the catalog (its vocabularies and content embeddings); the history and the
room traffic are synthetic, at the sizes the targets name (docs/serving.md, "Live feature state").
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from bench.data import ensure_shards
from bench.serving import ensure_ranker
from data_pipelines.configured import build
from data_pipelines.dataset import FINAL, DataSet
from data_pipelines.streams.features import FeatureSpec, Vocabularies
from serving.binaries import FEATURE_TOOL


def ensure_catalog(cfg: DictConfig, data: DataSet) -> Path:
    """The data set's feature catalog, written from its streams' vocabularies when missing."""
    if not (data.feature_catalog / "catalog.json").exists():
        from data_pipelines.jobs import write_feature_catalog

        write_feature_catalog(data, instantiate(cfg.history), build(cfg.features))
    return data.feature_catalog


def synthetic_feed(data: DataSet, history_events: int, candidates: int, queries: int, seed: int = 0
                   ) -> tuple[list[dict], list[dict], int]:
    """(state events, ids-only requests, the requests' time): every room of the world started an
    hour before, one user with `history_events` interactions (a fifth of them live stays) spread
    over the days before, 5,000 impressions and 500 clicks of other users in the last ten minutes,
    and `queries` requests of that user, each for `candidates` rooms drawn at random (with repeats
    where the world has fewer rooms)."""
    rng = np.random.default_rng(seed)
    vocab = Vocabularies.load(data.vocab)
    lives = pd.read_parquet(data.canonical.lives)
    lives = lives[lives["live_id"].isin(vocab.live.ids)]
    if not data.canonical.photos.exists():
        raise SystemExit(f"{data.canonical.dir}: no short videos to build the benchmark's history from")
    photos = pd.read_parquet(data.canonical.photos)
    t = 1_800_000_000_000
    events = [{"type": "room_start", "ts": t - 3_600_000, "live": int(r.live_id), "author": int(r.author_id),
               "category": str(r.live_content_category), "live_type": str(r.live_type)} for r in lives.itertuples()]
    user = 1
    gaps = np.sort(rng.integers(60_000, 30 * 86_400_000, history_events))[::-1]
    for k, gap in enumerate(gaps):
        end = t - int(gap)
        if k % 5 == 4:
            room = lives.iloc[int(rng.integers(len(lives)))]
            events.append({"type": "click", "ts": end - 90_000, "user": user, "live": int(room.live_id)})
            events.append({"type": "exit", "ts": end, "user": user, "live": int(room.live_id),
                           "author": int(room.author_id), "start_ts": end - 90_000, "watch_ms": 90_000, "clicked": 1})
        else:
            photo = photos.iloc[int(rng.integers(len(photos)))]
            events.append({"type": "play", "ts": end, "user": user,
                           "photo": int(photo.photo_id), "author": int(photo.author_id),
                           "start_ts": end - 20_000, "watch_ms": int(rng.integers(1_000, 40_000))})
    for k in range(5_000):
        ts = t - 600_000 + k * 120
        live = int(lives["live_id"].iloc[k % len(lives)])
        events.append({"type": "impression", "ts": ts, "user": 2 + k, "live": live})
        if k % 10 == 0:
            events.append({"type": "click", "ts": ts, "user": 2 + k, "live": live})
    events.sort(key=lambda e: e["ts"])
    requests = [{"request_id": f"ids-{q}", "ids": {"user_id": user, "request_ts": t + q,
                                                   "live_ids": [int(x) for x in rng.choice(lives["live_id"].to_numpy(),
                                                                                           candidates)]}}
                for q in range(queries)]
    return events, requests, t


def _bench_json(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("BENCH_JSON "))[len("BENCH_JSON "):])


def run(cfg: DictConfig) -> dict:
    bc = cfg.bench.features
    data = ensure_shards(cfg)
    ensure_ranker()
    catalog = ensure_catalog(cfg, data)
    print(f"feature stage ({cfg.world.name} world's catalog; one core, {bc.core})")
    figures: dict = {"assembly": {}, "memory": {}}
    for history in bc.history_events:
        events, requests, _ = synthetic_feed(data, int(history), int(bc.candidates), int(bc.queries))
        lines = [json.dumps({"event": e}) for e in events] + [
            json.dumps({"query": {"request_id": r["request_id"], "user_id": r["ids"]["user_id"],
                                  "request_ts": r["ids"]["request_ts"], "live_ids": r["ids"]["live_ids"]}})
            for r in requests]
        with tempfile.TemporaryDirectory() as tmp:
            feed = Path(tmp) / "feed.jsonl"
            feed.write_text("\n".join(lines) + "\n")
            result = subprocess.run(["taskset", "-c", str(bc.core), str(FEATURE_TOOL), "--catalog", str(catalog),
                                     "--bench", str(feed), "--repeat", str(bc.repeat)],
                                    capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise SystemExit(f"ranker_features --bench failed:\n{result.stderr[-2000:]}")
        print("\n".join("  " + line for line in result.stdout.splitlines() if not line.startswith("BENCH_JSON")))
        figures["assembly"][int(history)] = _bench_json(result.stdout)
    for users, per_user in bc.memory:
        memory = subprocess.run([str(FEATURE_TOOL), "--catalog", str(catalog), "--memory-users", str(users),
                                 "--memory-events", str(per_user)], capture_output=True, text=True, timeout=1800)
        if memory.returncode != 0:
            raise SystemExit(f"ranker_features --memory-users failed:\n{memory.stderr[-2000:]}")
        print("  " + memory.stdout.splitlines()[0])
        figures["memory"][f"{users}x{per_user}"] = _bench_json(memory.stdout)
    if bc.rebuild_partitions:
        figures["rebuild"] = rebuild_world(data, catalog, int(bc.rebuild_partitions))
    return figures


def rebuild_world(data: DataSet, catalog: Path, partitions: int) -> dict:
    """Every state event of the world (its rooms, plays and live impressions) on a broker, then the
    state rebuilt from it as a starting ranker rebuilds it: the restart's cost per million events."""
    from online.broker import BrokerServer, Producer, connect
    from online.state_events import world_state_events

    spec = FeatureSpec.of_manifest(data.manifest(FINAL))  # what the world's streams were computed with
    events = world_state_events(pd.read_parquet(data.canonical.lives), pd.read_parquet(data.canonical.live_impressions),
                                pd.read_parquet(data.canonical.short_plays) if data.canonical.short_plays.exists() else None,
                                spec.columns)
    with BrokerServer(fsync="everysec") as broker:
        producer = Producer(connect(broker.url))
        for start in range(0, len(events), 100_000):  # pipelined rounds of bounded size
            producer.send_keyed(events.broker_entries(partitions, np.arange(start, min(start + 100_000, len(events)))))
        result = subprocess.run([str(FEATURE_TOOL), "--catalog", str(catalog), "--events-broker",
                                 f"127.0.0.1:{broker.port}", "--event-partitions", str(partitions)],
                                capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"ranker_features --events-broker failed:\n{result.stderr[-2000:]}")
    print("  " + result.stdout.splitlines()[0] + f" ({partitions} partitions, the whole world)")
    return _bench_json(result.stdout)

