"""`make streams`: canonical tables + history store -> label streams, GSU sequences, shards, and
the label-consistency report."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from data_pipelines.contract import GSU_NAMES
from data_pipelines.dataset import CanonicalTables, DataSet
from data_pipelines.history_store import HistoryStore
from data_pipelines.streams.consistency import label_consistency, render_markdown
from data_pipelines.streams.features import MANIFEST_KEY, FeatureSpec, Vocabularies, request_features
from data_pipelines.streams.gsu import GsuRetriever, Sequences
from data_pipelines.streams.labels import Impressions, LabelRules, Samples
from data_pipelines.manifest import contract_schema
from data_pipelines.streams.shards import ImpressionFeatures, write_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardLayout:
    """How samples are cut into shards (conf/shards/*.yaml)."""

    micro_batch_size: int  # samples per tar member
    micro_batches_per_shard: int


@dataclass
class StreamBuild:
    features: ImpressionFeatures
    impressions: Impressions
    samples: dict[str, Samples]
    consistency: dict[str, dict]
    gaps: list[str]  # what the data set lacks that some GSU needs (data_gaps)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds

    @property
    def impression_count(self) -> int:
        return len(self.impressions)

    @property
    def sample_counts(self) -> dict[str, int]:
        return {name: len(s) for name, s in self.samples.items()}


def _aligned_embedding(path: Path, table: pd.DataFrame | None, id_column: str, vocab_ids: np.ndarray) -> np.ndarray:
    matrix = np.load(path, allow_pickle=False) if path.exists() else None
    return align_embedding(matrix, table, id_column, vocab_ids)


def align_embedding(matrix: np.ndarray | None, table: pd.DataFrame | None, id_column: str,
                    vocab_ids: np.ndarray) -> np.ndarray:
    """Embedding rows (row i follows row i of `table`) re-ordered to follow the vocabulary (row i =
    i-th smallest id); zeros when the data set has none."""
    if table is None or matrix is None:
        return np.zeros((len(vocab_ids), 1), dtype=np.float32)
    aligned = np.zeros((len(vocab_ids), matrix.shape[1]), dtype=np.float32)
    aligned[np.searchsorted(vocab_ids, table[id_column].to_numpy())] = matrix
    return aligned


def _read_optional(path: Path, columns: list[str] | None = None) -> pd.DataFrame | None:
    return pd.read_parquet(path, columns=columns) if path.exists() else None


def data_gaps(canonical: CanonicalTables) -> list[str]:
    """What this data set lacks that some GSU needs: said, so that an empty or recency-only
    sequence is not mistaken for a learned one (live-only KuaiLive has no short videos at all)."""
    plays = canonical.short_plays
    return gaps_of(plays.exists() and pq.ParquetFile(plays).metadata.num_rows > 0,
                   canonical.embedding("photo").exists(), canonical.embedding("live").exists())


def gaps_of(has_plays: bool, has_photo_embedding: bool, has_live_embedding: bool) -> list[str]:
    """`data_gaps` from what the data set holds."""
    gaps = []
    if not has_plays:
        gaps.append("no short-video plays: the short, long and aidhard GSUs are empty for every request")
    elif not has_photo_embedding:
        gaps.append("no short-video content embeddings: the long GSU ranks by recency alone")
    if not has_live_embedding:
        gaps.append("no live content embeddings: the long and livelong GSUs rank by recency alone")
    return gaps


def data_set_features(data: DataSet, progress: bool = False) -> ImpressionFeatures:
    """Every impression's features as a data set's streams were built (its final manifest's feature
    spec): what `make streams` wrote, recomputed — the reference the live loop's served features are
    held to."""
    from data_pipelines.dataset import FINAL

    impressions = pd.read_parquet(data.canonical.live_impressions)
    features, _ = build_features(data.canonical, impressions, HistoryStore.load(data.history),
                                 FeatureSpec.of_manifest(data.manifest(FINAL)), progress=progress)
    return features


def build_features(canonical: CanonicalTables, impressions: pd.DataFrame, store: HistoryStore, spec: FeatureSpec,
                   progress: bool = True, chunk: int = 20_000, logged: pd.DataFrame | None = None
                   ) -> tuple[ImpressionFeatures, Vocabularies]:
    """Request-time features and the five GSU sequences of canonical `impressions`. `logged`: the
    data set's impressions, when `impressions` are requests that were never made (replay's
    candidate sets) — the vocabularies and the rooms' state then come from the logged ones, so
    that a candidate's ids and features mean what they mean in the streams."""
    lives = pd.read_parquet(canonical.lives)
    photos = _read_optional(canonical.photos)
    plays = _read_optional(canonical.short_plays, columns=["user_id", "photo_id"])
    vocab = Vocabularies.build(lives, impressions if logged is None else logged, photos, plays, spec.columns)
    sparse, dense = request_features(impressions, lives, store, vocab, spec.columns, logged)
    retriever = GsuRetriever.build(
        store, vocab, _aligned_embedding(canonical.embedding("photo"), photos, "photo_id", vocab.photo.ids),
        _aligned_embedding(canonical.embedding("live"), lives, "live_id", vocab.live.ids),
        length=spec.gsu_length, max_pairs=spec.max_pairs)
    sequences = retrieve_sequences(retriever, impressions, chunk, progress)
    return ImpressionFeatures(impressions["impression_id"].to_numpy(), impressions["request_ts"].to_numpy(),
                              sparse, dense, sequences), vocab


def retrieve_sequences(retriever: GsuRetriever, impressions: pd.DataFrame, chunk: int = 20_000,
                       progress: bool = False) -> dict[str, Sequences]:
    """The five GSU sequences of canonical `impressions`, `chunk` requests at a time."""
    users, t0 = impressions["user_id"].to_numpy(), impressions["request_ts"].to_numpy()
    live_id, author_id = impressions["live_id"].to_numpy(), impressions["author_id"].to_numpy()
    parts: dict[str, list[Sequences]] = {name: [] for name in GSU_NAMES}
    for start in tqdm(range(0, len(impressions), chunk), desc="GSU retrieval", unit="chunk", disable=not progress):
        rows = slice(start, start + chunk)
        for name, seq in retriever.retrieve(users[rows], t0[rows], live_id[rows], author_id[rows]).items():
            parts[name].append(seq)
    return {name: Sequences.concat(p) for name, p in parts.items()}


def run_engines(impressions: pd.DataFrame, actions: pd.DataFrame, rules: LabelRules, with_final: bool = True,
                ) -> tuple[Impressions, dict[str, Samples], dict[str, dict]]:
    """Every stream's samples of canonical `impressions` and the label-consistency report of each."""
    imps, samples = rules.emit(impressions, actions, with_final)
    consistency = {name: label_consistency(samples[name], imps, rules.tasks) for name in rules.engines}
    return imps, samples, consistency


def manifest_schema(vocab: Vocabularies, tasks: tuple[str, ...], spec: FeatureSpec) -> dict:
    """What a stream's manifest says beyond its shards: the tasks, the table sizes, the feature spec
    the features were computed with, and the data contract the shards were written under."""
    return {"tasks": list(tasks), MANIFEST_KEY: spec.to_dict(), "table_sizes": vocab.table_sizes(), **contract_schema()}


def write_reports(consistency: dict, sample_counts: dict[str, int], data_name: str, paths: list[Path]) -> None:
    """The report as .json and .md at each of `paths` (given without suffix)."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_name(path.name + ".json").write_text(json.dumps(consistency, indent=2))
        path.with_name(path.name + ".md").write_text(render_markdown(consistency, data_name, sample_counts))


def build_streams(data: DataSet, store: HistoryStore, reports_dir: Path, rules: LabelRules, spec: FeatureSpec,
                  layout: ShardLayout, progress: bool = True) -> StreamBuild:
    gaps = data_gaps(data.canonical)
    for gap in gaps:  # said before the long build; describe_streams repeats them in its summary
        log.warning("%s: %s", data.canonical.dir, gap)
    seconds = {}
    start = time.perf_counter()
    impressions = pd.read_parquet(data.canonical.live_impressions)
    features, vocab = build_features(data.canonical, impressions, store, spec, progress)
    seconds["features_and_gsu"] = time.perf_counter() - start
    start = time.perf_counter()
    actions = pd.read_parquet(data.canonical.live_actions)
    imps, samples, consistency = run_engines(impressions, actions, rules)
    seconds["label_engines"] = time.perf_counter() - start

    data.streams.mkdir(parents=True, exist_ok=True)
    vocab.save(data.vocab)
    start = time.perf_counter()
    for name, stream_samples in samples.items():
        write_shards(stream_samples, features, data.stream(name), manifest_schema(vocab, rules.tasks, spec),
                     micro_batch_size=layout.micro_batch_size,
                     micro_batches_per_shard=layout.micro_batches_per_shard, progress=progress)
    seconds["shards"] = time.perf_counter() - start
    write_reports(consistency, {name: len(s) for name, s in samples.items()}, data.name,
                   [reports_dir / data.label_consistency.name, data.label_consistency])
    return StreamBuild(features, imps, samples, consistency, gaps, seconds)
