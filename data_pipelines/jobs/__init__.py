"""The data jobs behind `make simulate`, `make ingest`, `make history` and `make streams`, callable
from tests. Each takes the composed Hydra config and returns what it built; the entry points beside
this module (`python -m data_pipelines.jobs.simulate`, `.ingest`, `.history`, `.streams`) only print.
A data set's files are where `DataSet` (data_pipelines/dataset.py) puts them. This package is the
top floor of data_pipelines: nothing below imports it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from data_pipelines.configured import build
from data_pipelines.dataset import DataSet
from data_pipelines.engines import LocalEngine, RayEngine
from data_pipelines.ray_engine.storage import is_uri
from data_pipelines.history_store import HistoryStore, HistoryStoreConfig
from data_pipelines.ingest import IngestReport, ingest
from data_pipelines.ingest.pipeline import EmbeddingSource, TableSource
from data_pipelines.world.config import WorldConfig
from data_pipelines.world.simulate import SimulationResult, simulate_world


def data_set(cfg: DictConfig) -> DataSet:
    """The data set the configured job reads and writes (`data.output_dir`)."""
    return DataSet(Path(cfg.data.output_dir))


def run_simulation(cfg: DictConfig) -> SimulationResult:
    world: WorldConfig = instantiate(cfg.world, _convert_="all")
    return simulate_world(world, data_set(cfg), progress=cfg.get("progress", True))


def run_ingest(cfg: DictConfig) -> IngestReport:
    data = cfg.data
    if OmegaConf.is_missing(data, "source_dir"):
        raise ValueError("data.source_dir is not set: pass it, e.g. make ingest ARGS=\"data.source_dir=/path/to/logs\"")
    source_dir = data.source_dir if data.source_dir is not None else data_set(cfg).raw  # null: the data set's raw/
    tables = {name: None if spec is None else TableSource(**OmegaConf.to_container(spec))
              for name, spec in data.tables.items()}
    embeddings = {name: None if spec is None else EmbeddingSource(**OmegaConf.to_container(spec))
                  for name, spec in (data.get("embeddings") or {}).items()}
    return ingest(source_dir, data_set(cfg), tables, embeddings, max_bad_share=data.max_bad_share,
                  attribution_grace_ms=data.attribution_grace_ms,
                  stay_overrun_tolerance_ms=data.stay_overrun_tolerance_ms, progress=cfg.get("progress", True))


def engine_of(cfg: DictConfig) -> LocalEngine | RayEngine:
    """The configured engine (conf/engine/*.yaml); local where a config has none."""
    return instantiate(cfg.engine) if cfg.get("engine") is not None else LocalEngine()


def run_build_history(cfg: DictConfig) -> tuple[HistoryStore | dict, str | Path]:
    """The history store (engine=local), or the bucket stores' index (engine=ray), and where it is."""
    engine = engine_of(cfg)
    if isinstance(engine, RayEngine):
        from data_pipelines.ray_engine.history import build_bucket_stores
        from data_pipelines.ray_engine.session import ray_session
        from data_pipelines.ray_engine.storage import Storage

        if not is_uri(cfg.data.output_dir):
            data_set(cfg).ingested()
        storage = Storage(cfg.data.output_dir)
        with ray_session(engine, cfg.get("progress", True)):
            index = build_bucket_stores(storage, instantiate(cfg.history), engine)
        return index, storage.path(storage.layout.history_buckets_index)
    data = data_set(cfg)
    canonical = data.ingested()
    impressions = pd.read_parquet(canonical.live_impressions)
    short_plays = pd.read_parquet(canonical.short_plays) if canonical.short_plays.exists() else None
    history_cfg: HistoryStoreConfig = instantiate(cfg.history)
    store = HistoryStore.build(short_plays, impressions, history_cfg)
    data.history.parent.mkdir(parents=True, exist_ok=True)
    store.save(data.history)
    return store, data.history


def run_streams(cfg: DictConfig):
    """Both (or the configured) label streams of a data set, written as shards, plus reports."""
    from data_pipelines.streams.build import build_streams

    engine = engine_of(cfg)
    rules, features = build(cfg.stream), build(cfg.features)
    if isinstance(engine, RayEngine):
        from data_pipelines.ray_engine.storage import Storage
        from data_pipelines.ray_engine.streams import build_streams_ray

        if not is_uri(cfg.data.output_dir):
            data_set(cfg).ingested()
        built = build_streams_ray(Storage(cfg.data.output_dir), reports_dir=Path(cfg.paths.reports_dir),
                                  engine=engine, rules=rules, features=features, layout=instantiate(cfg.shards),
                                  progress=cfg.get("progress", True))
        if not is_uri(cfg.data.output_dir):  # the catalog of data in object storage is written where it is served
            write_feature_catalog(data_set(cfg), instantiate(cfg.history), features)
        return built
    data = data_set(cfg)
    data.ingested()
    store = HistoryStore.load(data.require(data.history, "make simulate / make ingest"))
    built = build_streams(data, store, reports_dir=Path(cfg.paths.reports_dir), rules=rules, spec=features,
                          layout=instantiate(cfg.shards), progress=cfg.get("progress", True))
    write_feature_catalog(data, instantiate(cfg.history), features)
    return built


def write_feature_catalog(data: DataSet, history: HistoryStoreConfig, spec) -> Path:
    """The ranker's feature catalog of a data set whose streams are built (data_pipelines/streams/catalog.py)."""
    from data_pipelines.streams.catalog import catalog_inputs, write_catalog

    return write_catalog(catalog_inputs(data, history, spec), data.feature_catalog)


def describe_ingest(report: IngestReport) -> str:
    return "\n".join([f"ingested -> {report.output_dir}", *("  " + line for line in report.summary_lines())])


def describe_history(store: HistoryStore | dict, path: str | Path) -> str:
    if isinstance(store, dict):  # engine=ray: the bucket stores' index
        return (f"history stores -> {path}: {store['interactions']:,} interactions of {store['users']:,} users "
                f"in {store['user_buckets']} user buckets")
    return f"history store -> {path}: {len(store):,} interactions of {len(store.user_ids):,} users"


def describe_simulation(result: SimulationResult) -> str:
    s = result.summary
    return "\n".join([
        f"world '{s['world']}' (seed {s['seed']}) -> {result.data.root}",
        f"  users {s['users']:,}  authors {s['authors']:,}  rooms {s['rooms']:,}  "
        f"highlight segments {s['highlight_segments']:,}",
        f"  exposures: short video {s['short_video_exposures']:,}  live {s['live_impressions']:,}  "
        f"(ratio {s['short_to_live_ratio']}:1)",
        f"  live impressions per room and minute live: median {s['room_impressions_per_min']['median']}  "
        f"p90 {s['room_impressions_per_min']['p90']}; in the busiest hour median "
        f"{s['room_impressions_per_min_busiest_hour']['median']}  p90 {s['room_impressions_per_min_busiest_hour']['p90']}",
        f"  live clicks {s['live_clicks']:,}  CTR {s['ctr']:.3f}  inside highlights "
        f"{s['ctr_inside_highlights']:.3f}  outside (same rooms) {s['ctr_outside_highlights_same_rooms']:.3f}",
        f"  likes {s['likes']:,}  comments {s['comments']:,}  gifts {s['gifts']:,}: <=5 min "
        f"{s['gifts_within_5min']:,}  5 min-1 h {s['gifts_5min_to_1h']:,}  >1 h {s['gifts_after_1h']:,}",
        f"  live authors who also post short videos {s['live_authors_with_short_videos']:,}  "
        f"users with <=2 live clicks {s['users_with_at_most_2_live_clicks_share']:.0%}",
    ])


def describe_streams(build, data: DataSet) -> str:
    lines = [f"streams -> {data.streams}  ({build.impression_count:,} impressions; "
             + ", ".join(f"{k} {v:.1f}s" for k, v in build.seconds.items()) + ")"]
    for name, count in build.sample_counts.items():
        lines.append(f"  {name:<10} {count:>10,} samples")
    lines += [f"  note: {gap}" for gap in build.gaps]
    for name, per_task in build.consistency.items():
        lines.append(f"  label consistency, {name}:")
        for task, r in per_task.items():
            delay = "-" if r["delay_median_s"] is None else f"{r['delay_median_s']:.0f}s / {r['delay_p90_s']:.0f}s"
            lines.append(f"    {task:<5} coverage {r['coverage']:.3f}  false negatives first "
                         f"{r['false_negative_share']:.3f}  delay median/p90 {delay}")
    return "\n".join(lines)
