"""`make streams`: canonical tables + history store -> label streams, GSU sequences, shards, and
the label-consistency report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_pipelines.history_store import HistoryStore
from data_pipelines.streams.consistency import label_consistency, render_markdown
from data_pipelines.streams.features import DENSE_FEATURES, SPARSE_FEATURES, Vocabularies, request_features
from data_pipelines.streams.gsu import GSU_NAMES, SEQUENCE_FIELDS, GsuRetriever, Sequences
from data_pipelines.streams.labels import (STATE_NAMES, FinalLabels, Impressions, Samples, first_positive_times)
from data_pipelines.streams.shards import ImpressionFeatures, write_shards

FINAL = "final"  # the evaluation stream: every impression once, with its final labels


@dataclass(frozen=True)
class FeatureColumns:
    """Source columns of canonical `lives` that hold categorical room features (from conf/data)."""

    category_column: str = "live_content_category"
    live_type_column: str = "live_type"
    tz_offset_hours: float = 0.0


@dataclass
class StreamBuild:
    features: ImpressionFeatures
    impressions: Impressions
    samples: dict[str, Samples]
    consistency: dict[str, dict]
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds


def _aligned_embedding(canonical: Path, name: str, table: pd.DataFrame, id_column: str, vocab_ids: np.ndarray,
                       ) -> np.ndarray:
    """Embedding rows re-ordered to follow the vocabulary (row i = i-th smallest id)."""
    path = canonical / f"{name}_embedding.npy"
    if not path.exists():
        return np.zeros((len(vocab_ids), 1), dtype=np.float32)
    matrix = np.load(path, allow_pickle=False)
    aligned = np.zeros((len(vocab_ids), matrix.shape[1]), dtype=np.float32)
    rows = np.searchsorted(vocab_ids, table[id_column].to_numpy())
    aligned[rows] = matrix
    return aligned


def build_features(canonical: Path, impressions: pd.DataFrame, store: HistoryStore, columns: FeatureColumns,
                   gsu_length: int, max_pairs: int, progress: bool = True, chunk: int = 20_000,
                   ) -> tuple[ImpressionFeatures, Vocabularies]:
    """Request-time features and the five GSU sequences of canonical `impressions`."""
    lives = pd.read_parquet(canonical / "lives.parquet")
    photos_path, plays_path = canonical / "photos.parquet", canonical / "short_plays.parquet"
    photos = pd.read_parquet(photos_path) if photos_path.exists() else None
    plays = pd.read_parquet(plays_path, columns=["user_id", "photo_id"]) if plays_path.exists() else None
    vocab = Vocabularies.build(lives, impressions, photos, plays, columns.category_column, columns.live_type_column)
    sparse, dense = request_features(impressions, lives, store, vocab, columns.category_column,
                                     columns.live_type_column, columns.tz_offset_hours)
    retriever = GsuRetriever.build(
        store, vocab,
        _aligned_embedding(canonical, "photo", photos, "photo_id", vocab.photo.ids) if photos is not None
        else np.zeros((len(vocab.photo.ids), 1), dtype=np.float32),
        _aligned_embedding(canonical, "live", lives, "live_id", vocab.live.ids),
        length=gsu_length, max_pairs=max_pairs)
    users, t0 = impressions["user_id"].to_numpy(), impressions["request_ts"].to_numpy()
    live_id, author_id = impressions["live_id"].to_numpy(), impressions["author_id"].to_numpy()
    parts: dict[str, list[Sequences]] = {name: [] for name in GSU_NAMES}
    for start in tqdm(range(0, len(impressions), chunk), desc="GSU retrieval", unit="chunk", disable=not progress):
        rows = slice(start, start + chunk)
        for name, seq in retriever.retrieve(users[rows], t0[rows], live_id[rows], author_id[rows]).items():
            parts[name].append(seq)
    sequences = {name: Sequences.concat(p) for name, p in parts.items()}
    features = ImpressionFeatures(impressions["impression_id"].to_numpy(), t0, sparse, dense, sequences)
    return features, vocab


def run_engines(impressions: pd.DataFrame, actions: pd.DataFrame, engines: dict[str, object],
                tasks: tuple[str, ...], long_view_ms: int, with_final: bool = True,
                ) -> tuple[Impressions, dict[str, Samples], dict[str, dict]]:
    imps = Impressions(impressions["request_ts"].to_numpy(), impressions["exit_ts"].to_numpy(),
                       first_positive_times(impressions, actions, long_view_ms, tasks))
    samples = {name: engine.emit(imps) for name, engine in engines.items()}
    consistency = {name: label_consistency(s, imps, tasks) for name, s in samples.items()}
    if with_final:
        samples[FINAL] = FinalLabels().emit(imps)
    return imps, samples, consistency


def schema(vocab: Vocabularies, tasks: tuple[str, ...], gsu_length: int, stream: str, data_name: str) -> dict:
    return {
        "stream": stream,
        "data": data_name,
        "tasks": list(tasks),
        "label_states": {str(k): v for k, v in STATE_NAMES.items()},
        "sparse_features": list(SPARSE_FEATURES),
        "dense_features": list(DENSE_FEATURES),
        "gsu": {"names": list(GSU_NAMES), "length": gsu_length, "fields": list(SEQUENCE_FIELDS)},
        "table_sizes": vocab.table_sizes(),
        "bucket_sizes": {"domain": 2, "gap": 17, "watch": 17},
    }


def build_streams(canonical: Path, store: HistoryStore, out_dir: Path, reports_dir: Path, data_name: str,
                  engines: dict[str, object], tasks: tuple[str, ...], long_view_ms: int, columns: FeatureColumns,
                  gsu_length: int = 50, max_pairs: int = 500_000, micro_batch_size: int = 256,
                  micro_batches_per_shard: int = 200, progress: bool = True) -> StreamBuild:
    seconds = {}
    start = time.perf_counter()
    impressions = pd.read_parquet(canonical / "live_impressions.parquet")
    features, vocab = build_features(canonical, impressions, store, columns, gsu_length, max_pairs, progress)
    seconds["features_and_gsu"] = time.perf_counter() - start
    start = time.perf_counter()
    actions = pd.read_parquet(canonical / "live_actions.parquet")
    imps, samples, consistency = run_engines(impressions, actions, engines, tasks, long_view_ms)
    seconds["label_engines"] = time.perf_counter() - start

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab.save(out_dir / "vocab.npz")
    start = time.perf_counter()
    for name, stream_samples in samples.items():
        write_shards(stream_samples, features, out_dir / name, schema(vocab, tasks, gsu_length, name, data_name),
                     micro_batch_size, micro_batches_per_shard, progress)
    seconds["shards"] = time.perf_counter() - start

    reports_dir.mkdir(parents=True, exist_ok=True)
    for directory in (reports_dir, out_dir):
        with open(directory / "label_consistency.json", "w") as f:
            json.dump(consistency, f, indent=2)
        (directory / "label_consistency.md").write_text(
            render_markdown(consistency, data_name, {name: len(s) for name, s in samples.items()}))
    return StreamBuild(features, imps, samples, consistency, seconds)
