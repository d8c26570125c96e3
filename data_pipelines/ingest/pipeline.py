"""Source tables -> canonical tables: validate, quarantine, attribute actions, write."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_pipelines.contract import ACTION_CODES
from data_pipelines.dataset import CanonicalTables, DataSet
from data_pipelines.ingest import checks
from data_pipelines.ingest.quarantine import Quarantine
from data_pipelines.ingest.reader import ROW, IngestError, read_source
from data_pipelines.ingest.schema import ACTION_TABLES, LIVE_EVENT_TABLES, SOURCES, TIME_FIELDS


@dataclass(frozen=True)
class TableSource:
    """Where one source table is and how its columns are named (`columns`: canonical -> source)."""

    file: str
    columns: dict[str, str]
    keep: list[str] = field(default_factory=list)  # extra source columns carried through as they are


@dataclass(frozen=True)
class EmbeddingSource:
    """A [N, E] .npy file whose row i belongs to the item whose `row_key` column equals i."""

    file: str
    row_key: str


@dataclass
class IngestReport:
    output_dir: Path
    tables: dict[str, dict] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = [f"{'table':<12}{'rows':>12}{'ok':>12}{'quarantined':>13}  checks failed; values corrected"]
        for name, t in self.tables.items():
            failed = ", ".join(f"{k}={v}" for k, v in sorted(t["checks"].items())) or "-"
            corrected = "".join(f"; {k}={v}" for k, v in sorted(t["corrected"].items()))
            lines.append(f"{name:<12}{t['rows']:>12,}{t['ok']:>12,}{t['quarantined']:>13,}  {failed}{corrected}")
        return lines


def _write(frame: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, compression="zstd")


class _Run:
    """State of one ingestion run: the sources, the quarantine, the per-table counts."""

    def __init__(self, source_dir: Path, tables: dict[str, TableSource | None], progress: bool):
        self.source_dir = source_dir
        self.tables = tables
        self.progress = tqdm(total=sum(spec is not None for spec in tables.values()), desc="ingest",
                             unit="table", disable=not progress)
        self.quarantine = Quarantine()
        self.rows_read: dict[str, int] = {}
        self.rows_kept: dict[str, int] = {}
        self.corrected: dict[str, Counter] = {}  # table -> correction -> rows kept with a corrected value

    def load(self, name: str) -> pd.DataFrame | None:
        """Read, type-check and de-duplicate one table; None when it is not configured."""
        spec = self.tables.get(name)
        if spec is None:
            if SOURCES[name].required:
                raise IngestError(f"table '{name}' is required but data.tables.{name} is not configured")
            return None
        schema = SOURCES[name]
        unmapped = [f for f in schema.fields if f not in spec.columns]
        if unmapped:
            raise IngestError(f"data.tables.{name}.columns does not map the canonical field(s) {unmapped}")
        path = self.source_dir / spec.file
        self.progress.set_postfix_str(spec.file)
        self.progress.update()
        frame = read_source(path, name, spec.columns, list(spec.keep), self.quarantine)
        self.rows_read[name] = len(frame) + self.quarantine.total(name)  # malformed CSV rows count as read
        typed = {**schema.fields, **{f: t for f, t in schema.optional_fields.items() if f in spec.columns}}
        frame, failures = checks.coerce_types(frame, typed)
        frame = self.reject(name, frame, failures)
        for time_field in (f for f in TIME_FIELDS if f in typed):
            seconds = checks.seconds_not_ms(frame, time_field)
            if seconds is not None:
                raise IngestError(f"{path}: column '{spec.columns[time_field]}' ({time_field}) has {seconds}")
        return self.reject(name, frame, [checks.duplicates(frame, schema.key)])

    def reject(self, name: str, frame: pd.DataFrame, failures: list[checks.Failure]) -> pd.DataFrame:
        spec = self.tables[name]
        record_columns = {**dict(spec.columns), **{c: c for c in spec.keep}}
        return checks.reject(frame, failures, name, str(self.source_dir / spec.file), self.quarantine,
                             record_columns)

    def correct(self, name: str, correction: str, rows: int) -> None:
        if rows:
            self.corrected.setdefault(name, Counter())[correction] += rows

    def done(self, name: str, frame: pd.DataFrame | None) -> None:
        if frame is not None:
            self.rows_kept[name] = len(frame)


def _load_embedding(source_dir: Path, spec: EmbeddingSource | None, items: pd.DataFrame, what: str, key: str
                    ) -> tuple[np.ndarray | None, np.ndarray]:
    """Embedding rows aligned with `items`; rows whose key has no embedding are zero and flagged.
    `key`: the entry of `data.embeddings` that configured them."""
    if spec is None:
        return None, np.zeros(len(items), dtype=bool)
    path = source_dir / spec.file
    if not path.exists():
        raise IngestError(f"{what} embeddings: file not found: {path} (data.embeddings.{key}.file); to ingest "
                          f"without them, pass data.embeddings.{key}=null: the GSUs that search by content "
                          f"similarity then rank by recency alone")
    try:
        matrix = np.load(path, allow_pickle=False)  # never decode pickles from data files
    except ValueError as exc:
        raise IngestError(f"{path}: not a plain numeric .npy array ({exc})") from exc
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise IngestError(f"{path}: expected a 2-D numeric array, got shape {matrix.shape} dtype {matrix.dtype}")
    if spec.row_key not in items.columns:
        raise IngestError(f"{what} embeddings: row_key '{spec.row_key}' is not a column of the {what} table "
                          f"(map it in columns or list it in keep)")
    key = pd.to_numeric(items[spec.row_key], errors="coerce").to_numpy()
    present = ~np.isnan(key) & (key >= 0) & (key < len(matrix))
    aligned = np.zeros((len(items), matrix.shape[1]), dtype=np.float32)
    aligned[present] = matrix[key[present].astype(np.int64)]
    return aligned, present


def ingest(source_dir: str | Path, data: DataSet, tables: dict[str, TableSource | None],
           embeddings: dict[str, EmbeddingSource | None] | None = None, max_bad_share: float = 0.01,
           attribution_grace_ms: int = 0, stay_overrun_tolerance_ms: int = 0, progress: bool = False
           ) -> IngestReport:
    """Validate the source tables and write the data set's canonical tables.

    Everything is written aside first and moved into `canonical/` only when the run succeeds, so a
    failed run leaves nothing a later job accepts: its quarantine and report go to
    `canonical.failed/`, which makes those jobs refuse until an ingest succeeds. Raises IngestError
    for structural problems (missing file or column), and when some table's share of bad rows
    exceeds `max_bad_share`. A click's stay may end after its room ended by up to
    `stay_overrun_tolerance_ms`: it is cut at the room's end and counted; a longer one is quarantined.
    """
    staging = data.incoming_canonical
    shutil.rmtree(staging.dir, ignore_errors=True)
    staging.dir.mkdir(parents=True)
    try:
        report, failure = _ingest_into(staging, Path(source_dir), tables, embeddings or {}, max_bad_share,
                                       attribution_grace_ms, stay_overrun_tolerance_ms, progress)
    except Exception as exc:
        _keep_failed(data, staging, {"status": "failed", "error": str(exc)})
        raise
    if failure is not None:
        _keep_failed(data, staging)
        raise IngestError(f"{failure}. Rows and reasons: {data.failed_canonical.quarantine}")
    _promote(data, staging)
    report.output_dir = data.canonical.dir
    return report


def _keep_failed(data: DataSet, staging: CanonicalTables, report: dict | None = None) -> None:
    """The failed run's files become canonical.failed/ (with `report` written, if given)."""
    shutil.rmtree(data.failed_canonical.dir, ignore_errors=True)
    if report is not None:
        staging.ingest_report.write_text(json.dumps(report, indent=2))
    staging.dir.rename(data.failed_canonical.dir)


def _promote(data: DataSet, staging: CanonicalTables) -> None:
    """The completed run's tables replace canonical/; a failure left by an earlier run is cleared."""
    old = data.root / ".canonical.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if data.canonical.dir.exists():
        data.canonical.dir.rename(old)
    staging.dir.rename(data.canonical.dir)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(data.failed_canonical.dir, ignore_errors=True)


def _ingest_into(out: CanonicalTables, source_dir: Path, tables: dict[str, TableSource | None],
                 embeddings: dict[str, EmbeddingSource | None], max_bad_share: float, attribution_grace_ms: int,
                 stay_overrun_tolerance_ms: int, progress: bool) -> tuple[IngestReport, str | None]:
    """Every table into `out`; (the report, the reason the run failed or None)."""
    run = _Run(source_dir, tables, progress)

    rooms = _rooms(run)
    impressions, live_events = _impressions(run, rooms, stay_overrun_tolerance_ms)
    live_actions = _attributed_actions(run, live_events, impressions[impressions["clicked"]], attribution_grace_ms)
    live_emb, live_has_emb = _load_embedding(source_dir, embeddings.get("live"), rooms, "room", "live")
    _write(rooms.drop(columns=[ROW]).assign(has_embedding=live_has_emb), out.lives)
    if live_emb is not None:
        np.save(out.embedding("live"), live_emb, allow_pickle=False)
    _write(impressions, out.live_impressions)
    _write(live_actions, out.live_actions)

    for name, canonical_name in (("user", "users"), ("streamer", "authors")):
        profiles = run.load(name)
        run.done(name, profiles)
        if profiles is not None:
            _write(profiles.drop(columns=[ROW]), out.profiles(canonical_name))

    photos, short_plays = _short_domain(run, attribution_grace_ms)
    if photos is not None:
        photo_emb, photo_has_emb = _load_embedding(source_dir, embeddings.get("photo"), photos, "photo", "photo")
        _write(photos.drop(columns=[ROW]).assign(has_embedding=photo_has_emb), out.photos)
        if photo_emb is not None:
            np.save(out.embedding("photo"), photo_emb, allow_pickle=False)
    if short_plays is not None:
        _write(short_plays, out.short_plays)
    run.progress.close()
    return _finish(run, out, max_bad_share)


def _rooms(run: _Run) -> pd.DataFrame:
    rooms = run.load("room")
    rooms = run.reject("room", rooms, [checks.ends_before_start(rooms, "start_ts", "end_ts")])
    rooms = run.reject("room", rooms, [checks.overlapping_rooms(rooms)])
    run.done("room", rooms)
    return rooms


def _live_events(run: _Run, rooms: pd.DataFrame, stay_overrun_tolerance_ms: int) -> dict[str, pd.DataFrame]:
    """Every configured live event table, each event inside a known room's lifetime, each click's
    stay ending by its room's end (an overrun within the tolerance is cut there and counted)."""
    live: dict[str, pd.DataFrame] = {}
    for name in LIVE_EVENT_TABLES:
        frame = run.load(name)
        if frame is None:
            continue
        failures = checks.in_room(frame, rooms)
        if name == "click":
            failures.append(checks.negative(frame, "watch_ms", "negative duration"))
            failures.append(checks.stay_past_room_end(frame, rooms, stay_overrun_tolerance_ms))
        if name == "gift":
            failures.append(checks.negative(frame, "gift_price", "negative gift price"))
        live[name] = run.reject(name, frame, failures)
    if "click" in live:
        live["click"] = _cut_stays_at_room_end(run, live["click"], rooms)
    return live


def _cut_stays_at_room_end(run: _Run, clicks: pd.DataFrame, rooms: pd.DataFrame) -> pd.DataFrame:
    """Nobody watches a room after it ended: what is left of an overrun is cut off (and counted)."""
    _, left = checks.room_time_left(clicks, rooms)
    over = clicks["watch_ms"].to_numpy() > left
    run.correct("click", "stay_cut_at_room_end", int(over.sum()))
    return clicks.assign(watch_ms=np.where(over, left, clicks["watch_ms"].to_numpy()))


def _impressions(run: _Run, rooms: pd.DataFrame, stay_overrun_tolerance_ms: int
                 ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(impressions: clicks and negatives with their exit times, by request time; the live event
    tables). A negative that is also a click is quarantined."""
    live = _live_events(run, rooms, stay_overrun_tolerance_ms)
    clicks, negatives = live["click"], live["negative"]
    also_click = negatives.merge(clicks[["user_id", "live_id", "ts"]], how="left", indicator=True,
                                 on=["user_id", "live_id", "ts"])["_merge"].eq("both").to_numpy()
    negatives = run.reject("negative", negatives, [checks.Failure(
        "also_a_click", also_click, "the same impression (user, live, ts) is also in the click table")])
    run.done("click", clicks)
    run.done("negative", negatives)
    impressions = pd.concat([
        clicks.assign(clicked=True, exit_ts=clicks["ts"] + clicks["watch_ms"]),
        negatives.assign(clicked=False, exit_ts=negatives["ts"], watch_ms=0),
    ], ignore_index=True).rename(columns={"ts": "request_ts"})
    impressions = impressions.sort_values(["request_ts", "user_id", "live_id"], kind="stable").reset_index(drop=True)
    impressions.insert(0, "impression_id", np.arange(len(impressions), dtype=np.int64))
    return impressions[["impression_id", "user_id", "live_id", "author_id", "request_ts", "exit_ts", "clicked",
                        "watch_ms"]], live


def _attributed_actions(run: _Run, live: dict[str, pd.DataFrame], stays: pd.DataFrame, grace_ms: int
                        ) -> pd.DataFrame:
    """Likes, comments and gifts, each attributed to the stay (clicked impression) that encloses it."""
    actions = []
    for name in ACTION_TABLES:
        frame = live.get(name)
        if frame is None:
            continue
        stay, failure = checks.attribute(frame, stays, ["user_id", "live_id"], "request_ts", "exit_ts",
                                         grace_ms, "click's stay by this user in this room")
        impression_id = np.full(len(frame), -1, dtype=np.int64)  # there may be no stay at all
        impression_id[stay >= 0] = stays["impression_id"].to_numpy()[stay[stay >= 0]]
        frame = run.reject(name, frame.assign(impression_id=impression_id), [failure])
        run.done(name, frame)
        actions.append(frame.assign(action=np.int8(ACTION_CODES[name]),
                                    gift_price=frame["gift_price"] if "gift_price" in frame else 0.0))
    columns = ["impression_id", "user_id", "live_id", "author_id", "ts", "action", "gift_price"]
    live_actions = (pd.concat(actions, ignore_index=True)[columns] if actions
                    else pd.DataFrame({c: pd.Series(dtype="int64") for c in columns}))
    return live_actions.sort_values(["ts", "impression_id"], kind="stable").reset_index(drop=True)


def _short_domain(run: _Run, grace_ms: int) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Photos, and plays with their author, watch time and whether a like fell inside them."""
    photos = run.load("photo")
    run.done("photo", photos)
    plays = run.load("photo_play")
    if plays is None:
        return photos, None
    failures = [checks.ends_before_start(plays, "start_ts", "end_ts")]
    if photos is not None:
        failures.append(checks.known_ids(plays, "photo_id", photos["photo_id"], "photo"))
    plays = run.reject("photo_play", plays, failures)
    run.done("photo_play", plays)
    plays = plays.sort_values(["start_ts", "user_id"], kind="stable").reset_index(drop=True)
    if photos is not None:  # the photo table is the authority on authorship
        plays["author_id"] = photos.set_index("photo_id")["author_id"].reindex(plays["photo_id"]).to_numpy()
    elif "author_id" not in plays:
        plays["author_id"] = -1
    plays["watch_ms"] = plays["end_ts"] - plays["start_ts"]
    plays["liked"] = False
    likes = run.load("photo_like")
    if likes is not None:
        play, failure = checks.attribute(likes, plays, ["user_id", "photo_id"], "start_ts", "end_ts", grace_ms,
                                         "play of this photo by this user")
        run.done("photo_like", run.reject("photo_like", likes, [failure]))
        plays.loc[np.unique(play[play >= 0]), "liked"] = True
    return photos, plays[["user_id", "photo_id", "author_id", "start_ts", "end_ts", "watch_ms", "liked"]]


def _finish(run: _Run, out: CanonicalTables, max_bad_share: float) -> tuple[IngestReport, str | None]:
    """Write the quarantine and the report (last: its status says the run completed); (the report,
    why the run failed, if some table has too many bad rows)."""
    report = IngestReport(output_dir=out.dir)
    for name, rows in run.rows_read.items():
        bad = run.quarantine.total(name)
        report.tables[name] = {"file": str(run.source_dir / run.tables[name].file), "rows": rows, "ok": rows - bad,
                               "quarantined": bad, "bad_share": bad / rows if rows else 0.0,
                               "checks": dict(run.quarantine.counts.get(name, {})),
                               "corrected": dict(run.corrected.get(name, {}))}
        if run.rows_kept[name] != rows - bad:  # every row read is either kept or quarantined
            raise AssertionError(f"{name}: {rows} rows read, {run.rows_kept[name]} kept, {bad} quarantined")
    run.quarantine.write(out.quarantine)
    too_bad = {n: t for n, t in report.tables.items() if t["bad_share"] > max_bad_share}
    failure = None
    if too_bad:
        failure = f"too many bad rows (limit data.max_bad_share={max_bad_share:.1%}): " + "; ".join(
            f"{n} ({t['file']}): {t['quarantined']:,} of {t['rows']:,} rows bad ({t['bad_share']:.1%}), "
            + ", ".join(f"{k}={v}" for k, v in sorted(t["checks"].items(), key=lambda kv: -kv[1])[:3])
            for n, t in too_bad.items())
    with open(out.ingest_report, "w") as f:
        json.dump({"status": "failed" if failure else "ok", "error": failure, "max_bad_share": max_bad_share,
                   "tables": report.tables}, f, indent=2)
    return report, failure
