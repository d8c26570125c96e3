"""Where each file of a data set lives. Every job and test reaches a data set's files through
`DataSet`; no other module spells a file or folder name of it (the raw tables excepted: their names
are the KuaiLive schema's, in conf/data/*.yaml, and the simulator writes that schema).

    data/<name>/
      raw/        source tables in the KuaiLive schema (the simulator writes them here; real logs
                  live wherever `data.source_dir` points)
      truth/      the simulator's ground truth: highlight segments, true click probabilities
      canonical/  validated tables, quarantine.parquet, ingest_report.json: only ever a whole,
                  successful ingest (written aside in .canonical.incoming/, then moved into place)
      canonical.failed/  what the last ingest wrote if it failed (its quarantine and report); while
                  it exists, the jobs that read canonical tables refuse to run
      history/    store.npz, the interaction-log store; user_buckets/ the same per user bucket
                  (engine=ray) and their buckets.json
      streams/    one shard folder per stream (manifest.json + shard-NNNNNN.tar), vocab.npz,
                  label_consistency.{json,md}, feature_catalog/ (the ranker's feature stage)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from data_pipelines.manifest import MANIFEST, read_manifest

REALTIME, FAST_SLOW = "realtime", "fast_slow"  # the training streams (conf/stream/*.yaml engines)
FINAL = "final"  # not for training: every impression once with its final labels, for evaluation


@dataclass(frozen=True)
class CanonicalTables:
    """canonical/: what ingestion writes and every later job reads."""

    dir: Path

    @property
    def lives(self) -> Path:
        return self.dir / "lives.parquet"

    @property
    def live_impressions(self) -> Path:
        return self.dir / "live_impressions.parquet"

    @property
    def live_actions(self) -> Path:
        return self.dir / "live_actions.parquet"

    @property
    def short_plays(self) -> Path:
        return self.dir / "short_plays.parquet"

    @property
    def photos(self) -> Path:
        return self.dir / "photos.parquet"

    def profiles(self, kind: str) -> Path:
        """`users` or `authors`."""
        return self.dir / f"{kind}.parquet"

    def embedding(self, kind: str) -> Path:
        """Content embeddings of `live` (rows follow lives) or `photo` (rows follow photos)."""
        return self.dir / f"{kind}_embedding.npy"

    @property
    def quarantine(self) -> Path:
        return self.dir / "quarantine.parquet"

    @property
    def ingest_report(self) -> Path:
        return self.dir / "ingest_report.json"


@dataclass(frozen=True)
class TruthFiles:
    """truth/: what real logs never tell (simulated worlds only)."""

    dir: Path

    @property
    def highlights(self) -> Path:
        return self.dir / "highlights.parquet"

    @property
    def live_impressions(self) -> Path:
        """Per impression (user_id, live_id, timestamp): true_ctr, clicked, highlight_segment, intensity."""
        return self.dir / "live_impressions.parquet"

    @property
    def latent(self) -> Path:
        return self.dir / "latent.npz"

    @property
    def world(self) -> Path:
        """The world's config and summary."""
        return self.dir / "world.json"


@dataclass(frozen=True)
class DataSet:
    root: Path  # data/<name>

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def truth(self) -> TruthFiles:
        return TruthFiles(self.root / "truth")

    @property
    def canonical(self) -> CanonicalTables:
        return CanonicalTables(self.root / "canonical")

    @property
    def incoming_canonical(self) -> CanonicalTables:
        """Where an ingest writes until it has succeeded."""
        return CanonicalTables(self.root / ".canonical.incoming")

    @property
    def failed_canonical(self) -> CanonicalTables:
        """What the last ingest wrote if it failed."""
        return CanonicalTables(self.root / "canonical.failed")

    def ingested(self) -> CanonicalTables:
        """The canonical tables, or an error that says why there are none a job may read: no
        ingest yet, or the last one failed."""
        failed = self.failed_canonical
        if failed.dir.exists():
            raise RuntimeError(f"the last ingest of data set '{self.name}' failed (report: {failed.ingest_report}); "
                               f"fix the source and run make ingest (or make simulate) again")
        report = self.canonical.ingest_report
        if not report.exists():
            raise FileNotFoundError(f"{report} not found: ingest the data first (make simulate / make ingest)")
        try:
            status = json.loads(report.read_text()).get("status")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise RuntimeError(f"{report}: not a readable ingest report ({exc}); run make ingest again") from None
        if status != "ok":
            raise RuntimeError(f"{report}: not a completed ingest; run make ingest (or make simulate) again")
        return self.canonical

    @property
    def history(self) -> Path:
        return self.root / "history" / "store.npz"

    def history_bucket(self, bucket: int, buckets: int) -> Path:
        """The history store of the users in one of `buckets` user buckets (engine=ray)."""
        return self.root / "history" / "user_buckets" / f"{bucket:05d}-of-{buckets:05d}.npz"

    @property
    def history_buckets_index(self) -> Path:
        """What the bucket stores hold (written after them: they are complete once it exists)."""
        return self.root / "history" / "user_buckets" / "buckets.json"

    @property
    def streams(self) -> Path:
        return self.root / "streams"

    def stream(self, name: str) -> Path:
        """The shard folder of one stream."""
        return self.streams / name

    def has_stream(self, name: str) -> bool:
        """Whether one stream's shards are written (their manifest comes last)."""
        return (self.stream(name) / MANIFEST).exists()

    def require_streams(self, names: list[str] | set[str] | tuple[str, ...]) -> None:
        """Raises FileNotFoundError naming the streams not written yet and how to write them."""
        missing = sorted(n for n in set(names) if not self.has_stream(n))
        if missing:
            raise FileNotFoundError(
                f"{self.streams}: no shards for {missing}; run make simulate (or make ingest) and make streams for "
                f"data set '{self.name}' first, with the same world and data settings as this job (a world named "
                f"by overrides: the same overrides)")

    def manifest(self, name: str) -> dict:
        """The manifest of one stream's shards (checked against this code's data contract)."""
        return read_manifest(self.stream(name))

    @property
    def vocab(self) -> Path:
        return self.streams / "vocab.npz"

    @property
    def feature_catalog(self) -> Path:
        """The ranker's feature catalog (data_pipelines/streams/catalog.py), written by `make streams`."""
        return self.streams / "feature_catalog"

    @property
    def label_consistency(self) -> Path:
        """The label-consistency report beside the shards, as .json and .md (add the suffix)."""
        return self.streams / "label_consistency"

    def require(self, path: Path, make: str) -> Path:
        """`path`, or a FileNotFoundError that says which job writes it."""
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run {make} for data set '{self.name}' first")
        return path
