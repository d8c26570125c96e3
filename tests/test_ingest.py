"""Ingestion of small hand-written KuaiLive-format files, bad rows included.

The expected canonical rows and quarantine entries below were worked out by hand from the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_pipelines.ingest import IngestError
from data_pipelines.jobs import data_set, describe_ingest, run_build_history, run_ingest, run_streams
from tests.conftest import compose_config

FILES = {
    "room.csv": """live_id,streamer_id,start_timestamp,end_timestamp,live_type,live_content_category,live_name_id
1,10,1000,100000,1,music,0
2,20,5000,50000,2,game,1
3,30,9000,8000,1,chat,2
1,10,1000,100000,1,music,0
""",
    "click.csv": """user_id,live_id,streamer_id,timestamp,watch_live_time
100,1,10,2000,30000
101,2,20,6000,1000
abc,1,10,3000,100
102,1,10,4000,-5
103,99,10,4000,10
104,2,20,60000,10
105,2,30,7000,10
106,1,10,4000.5,10
107,1,10,,10
100,1,10,2000,30000
108,1,10
109,3,30,9000,10
""",
    "negative.csv": """user_id,live_id,streamer_id,timestamp
200,1,10,2500
201,2,20,5500
100,1,10,2000
""",
    "like.csv": """user_id,live_id,streamer_id,timestamp
100,1,10,2500
100,1,10,40000
101,2,20,6500
""",
    "comment.csv": """user_id,live_id,streamer_id,timestamp
101,2,20,7000
""",
    "gift.csv": """user_id,live_id,streamer_id,timestamp,gift_price
100,1,10,31000,52
100,1,10,31500,-1
""",
    "user.csv": "user_id,age\n" + "".join(f"{u},20\n" for u in [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 200, 201]),
    "streamer.csv": "streamer_id,fans\n10,5\n20,7\n30,9\n",
}

EXPECTED_QUARANTINE = {
    ("room", 3, "negative_duration"), ("room", 4, "duplicate"),
    ("click", 3, "type:user_id"), ("click", 4, "negative_duration"), ("click", 5, "unknown_live_id"),
    ("click", 6, "outside_room_lifetime"), ("click", 7, "author_mismatch"), ("click", 8, "type:ts"),
    ("click", 9, "missing:ts"), ("click", 10, "duplicate"), ("click", 11, "malformed_row"),
    ("click", 12, "unknown_live_id"),
    ("negative", 3, "also_a_click"),
    ("like", 2, "no_enclosing_stay"),
    ("gift", 2, "negative:gift_price"),
}


def write_kuailive(directory: Path, files: dict[str, str] = FILES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    np.save(directory / "title_embeddings_pca128.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    return directory


def kuailive_cfg(source: Path, out: Path, *overrides: str):
    return compose_config("ingest", [f"data.source_dir={source}", f"paths.data_dir={out}", *overrides])


@pytest.fixture()
def ingested(tmp_path):
    cfg = kuailive_cfg(write_kuailive(tmp_path / "src"), tmp_path / "data", "data.max_bad_share=1.0")
    report = run_ingest(cfg)
    return cfg, report, data_set(cfg).canonical


def test_bad_rows_land_in_quarantine_with_their_reason(ingested):
    _, _, out = ingested
    quarantine = pd.read_parquet(out.quarantine)
    assert set(zip(quarantine["table"], quarantine["row"], quarantine["check"])) == EXPECTED_QUARANTINE
    reason = quarantine.set_index(["table", "row"])["reason"]
    assert reason[("click", 3)] == "user_id: not a number (abc)"
    assert reason[("click", 4)] == "negative duration: watch_ms = -5"
    assert reason[("click", 6)] == "ts 60000 outside the room's lifetime [5000, 50000]"
    assert reason[("click", 8)] == "ts: not an integer (4000.5)"
    assert reason[("click", 10)] == "duplicate of row 1 on user_id,live_id,ts"
    assert reason[("click", 11)] == "expected 5 fields, found 3"
    assert reason[("room", 3)] == "negative duration: end_ts 8000 < start_ts 9000"
    # Records keep the source's column names and the values as read.
    record = json.loads(quarantine.set_index(["table", "row"])["record"][("click", 3)])
    assert record == {"user_id": "abc", "live_id": "1", "streamer_id": "10", "timestamp": "3000",
                      "watch_live_time": "100"}
    assert all(quarantine["file"].str.endswith(".csv"))


def test_every_row_is_kept_or_quarantined(ingested):
    _, report, _ = ingested
    lines = {name: text.strip().count("\n") for name, text in FILES.items()}  # data rows, header excluded
    for table, stats in report.tables.items():
        assert stats["rows"] == lines[f"{table}.csv"], table
        assert stats["ok"] + stats["quarantined"] == stats["rows"]
    assert report.tables["click"]["ok"] == 2 and report.tables["click"]["quarantined"] == 10


def test_canonical_impressions_and_attributed_actions(ingested):
    _, _, out = ingested
    imps = pd.read_parquet(out.live_impressions)
    assert imps[["impression_id", "user_id", "live_id", "author_id", "request_ts", "exit_ts", "clicked",
                 "watch_ms"]].values.tolist() == [
        [0, 100, 1, 10, 2000, 32000, True, 30000],
        [1, 200, 1, 10, 2500, 2500, False, 0],
        [2, 201, 2, 20, 5500, 5500, False, 0],
        [3, 101, 2, 20, 6000, 7000, True, 1000],
    ]
    actions = pd.read_parquet(out.live_actions)
    assert actions[["impression_id", "user_id", "ts", "action", "gift_price"]].values.tolist() == [
        [0, 100, 2500, 0, 0.0],  # like
        [3, 101, 6500, 0, 0.0],  # like
        [3, 101, 7000, 1, 0.0],  # comment exactly at exit still belongs to the stay
        [0, 100, 31000, 2, 52.0],  # gift
    ]
    lives = pd.read_parquet(out.lives)
    assert lives["live_id"].tolist() == [1, 2]
    emb = np.load(out.embedding("live"))
    np.testing.assert_array_equal(emb, [[0, 1, 2, 3], [4, 5, 6, 7]])  # rows by live_name_id 0 and 1


def test_a_stay_past_its_room_is_cut_within_the_tolerance_and_quarantined_beyond_it(tmp_path):
    """Room 1 lives [1000, 100000]; tolerance 500 ms. Worked by hand: user 100 leaves exactly at the
    end (kept as is), 101 overruns by 500 (cut to 97000 ms), 102 by 501 and 103 by almost 2^63 ms
    (quarantined; no int64 overflow on the way)."""
    files = dict(FILES)
    files["room.csv"] = FILES["room.csv"].splitlines()[0] + "\n1,10,1000,100000,1,music,0\n"
    files["click.csv"] = FILES["click.csv"].splitlines()[0] + "\n" + "".join(
        f"{user},1,10,{ts},{watch}\n" for user, ts, watch in
        [(100, 2000, 98000), (101, 3000, 97500), (102, 4000, 96501), (103, 5000, 2**63 - 1)])
    files["negative.csv"] = "user_id,live_id,streamer_id,timestamp\n200,1,10,2500\n"
    files["like.csv"] = "user_id,live_id,streamer_id,timestamp\n101,1,10,99000\n"
    files["comment.csv"] = files["like.csv"]
    files["gift.csv"] = "user_id,live_id,streamer_id,timestamp,gift_price\n101,1,10,99500,3\n"
    cfg = kuailive_cfg(write_kuailive(tmp_path / "src", files), tmp_path / "data", "data.max_bad_share=1.0",
                       "data.stay_overrun_tolerance_ms=500")
    report = run_ingest(cfg)
    out = data_set(cfg).canonical
    imps = pd.read_parquet(out.live_impressions)
    assert imps[["user_id", "request_ts", "exit_ts", "watch_ms"]].values.tolist() == [
        [100, 2000, 100000, 98000], [200, 2500, 2500, 0], [101, 3000, 100000, 97000]]
    quarantine = pd.read_parquet(out.quarantine).set_index(["table", "row", "check"])["reason"].to_dict()
    assert quarantine == {
        ("click", 3, "stay_past_room_end"):
            "watch_ms 96501 ends the stay 501 ms after the room's end (tolerance data.stay_overrun_tolerance_ms=500)",
        ("click", 4, "stay_past_room_end"):
            f"watch_ms {2**63 - 1} ends the stay {2**63 - 1 - 95000} ms after the room's end "
            f"(tolerance data.stay_overrun_tolerance_ms=500)"}
    assert report.tables["click"]["corrected"] == {"stay_cut_at_room_end": 1}
    assert report.tables["click"]["ok"] == 2 and report.tables["click"]["quarantined"] == 2
    assert "click" in describe_ingest(report) and "; stay_cut_at_room_end=1" in describe_ingest(report)
    assert json.loads(out.ingest_report.read_text())["tables"]["click"]["corrected"] == {"stay_cut_at_room_end": 1}


def test_history_store_builds_from_live_only_logs(ingested):
    cfg, _, _ = ingested
    store, _ = run_build_history(cfg)
    assert store.item_id[store.query(100, 10**9)].tolist() == [1]  # the one stay of user 100


def test_too_many_bad_rows_fails_naming_table_and_file_after_writing_quarantine(tmp_path):
    cfg = kuailive_cfg(write_kuailive(tmp_path / "src"), tmp_path / "data", "data.max_bad_share=0.05")
    with pytest.raises(IngestError) as err:
        run_ingest(cfg)
    message = str(err.value)
    data = data_set(cfg)
    assert "click (" in message and "click.csv" in message and "10 of 12 rows bad" in message
    assert str(data.failed_canonical.quarantine) in message
    assert len(pd.read_parquet(data.failed_canonical.quarantine)) == len(EXPECTED_QUARANTINE)
    # Nothing a later job would accept: no canonical tables, and the jobs that read them refuse.
    assert not data.canonical.dir.exists()
    with pytest.raises(RuntimeError, match="the last ingest of data set 'kuailive' failed"):
        run_build_history(cfg)
    with pytest.raises(RuntimeError, match="the last ingest of data set 'kuailive' failed"):
        run_streams(compose_config("streams", [f"paths.data_dir={tmp_path / 'data'}", "data=kuailive"]))


def test_a_failed_ingest_leaves_the_last_good_tables_untouched_and_blocks_until_one_succeeds(tmp_path):
    good = kuailive_cfg(write_kuailive(tmp_path / "good"), tmp_path / "data", "data.max_bad_share=1.0")
    run_ingest(good)
    data = data_set(good)
    before = {p.name: p.read_bytes() for p in data.canonical.dir.iterdir()}
    files = dict(FILES)  # a click table of nothing but malformed rows: not one stay to attribute actions to
    files["click.csv"] = "user_id,live_id,streamer_id,timestamp,watch_live_time\n" + "1,2\n" * 10 + "100,1,10\n"
    with pytest.raises(IngestError, match=r"click \(.*click.csv\): 11 of 11 rows bad \(100.0%\), malformed_row=11"):
        run_ingest(kuailive_cfg(write_kuailive(tmp_path / "bad", files), tmp_path / "data"))
    assert {p.name: p.read_bytes() for p in data.canonical.dir.iterdir()} == before
    report = json.loads(data.failed_canonical.ingest_report.read_text())
    assert report["status"] == "failed" and report["tables"]["click"]["quarantined"] == 11
    with pytest.raises(RuntimeError, match="failed"):
        run_build_history(good)
    run_ingest(good)  # a successful ingest clears the failure
    assert not data.failed_canonical.dir.exists() and run_build_history(good)[0].user_ids.size


def test_renamed_column_needs_only_config(tmp_path):
    files = dict(FILES)
    files["click.csv"] = files["click.csv"].replace("watch_live_time", "stay_ms", 1)
    cfg = kuailive_cfg(write_kuailive(tmp_path / "src", files), tmp_path / "data", "data.max_bad_share=1.0",
                       "data.tables.click.columns.watch_ms=stay_ms")
    assert run_ingest(cfg).tables["click"]["ok"] == 2


def test_missing_column_is_named(tmp_path):
    files = dict(FILES)
    files["click.csv"] = files["click.csv"].replace("watch_live_time", "stay_ms", 1)
    cfg = kuailive_cfg(write_kuailive(tmp_path / "src", files), tmp_path / "data")
    with pytest.raises(IngestError, match=r"click.csv: missing column\(s\) 'watch_live_time' "
                                          r"\(canonical field 'watch_ms'\)"):
        run_ingest(cfg)


def test_missing_file_is_named(tmp_path):
    files = {k: v for k, v in FILES.items() if k != "gift.csv"}
    cfg = kuailive_cfg(write_kuailive(tmp_path / "src", files), tmp_path / "data")
    with pytest.raises(IngestError, match=r"gift: file not found: .*gift.csv"):
        run_ingest(cfg)


def test_pickled_embedding_file_is_refused(tmp_path):
    source = write_kuailive(tmp_path / "src")
    np.save(source / "title_embeddings_pca128.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    cfg = kuailive_cfg(source, tmp_path / "data", "data.max_bad_share=1.0")
    with pytest.raises(IngestError, match="not a plain numeric .npy array"):
        run_ingest(cfg)


def test_source_dir_must_be_given(tmp_path):
    cfg = compose_config("ingest", [f"paths.data_dir={tmp_path}"])
    with pytest.raises(ValueError, match="data.source_dir is not set"):
        run_ingest(cfg)
