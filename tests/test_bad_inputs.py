"""Every KuaiLive-schema source folder of the bad-input corpus (tests/corpus/kuailive.py) ingested:
the exact error, and nothing left that a later job accepts; or success with the exact quarantine."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from data_pipelines.ingest import IngestError
from data_pipelines.jobs import data_set, describe_streams, run_build_history, run_ingest, run_streams
from tests.conftest import compose_config
from tests.corpus.kuailive import ingest_cases
from tests.corpus.requests import request_cases


@pytest.mark.parametrize("case", ingest_cases(), ids=lambda c: c.name)
def test_each_source_folder_gives_its_exact_outcome(case, tmp_path):
    source = case.write(tmp_path / "src")
    cfg = compose_config("ingest", ["data=kuailive", f"data.source_dir={source}", f"paths.data_dir={tmp_path / 'data'}",
                                    "progress=false", *case.overrides])
    data = data_set(cfg)
    if case.error is not None:
        with pytest.raises(IngestError) as err:
            run_ingest(cfg)
        expected = case.error.format(src=source, data=data.root)
        assert str(err.value).startswith(expected) if case.error_is_prefix else str(err.value) == expected
        assert not data.canonical.dir.exists()
        with pytest.raises(RuntimeError, match="the last ingest .* failed"):
            run_build_history(cfg)
        return
    report = run_ingest(cfg)
    quarantine = pd.read_parquet(data.canonical.quarantine)
    got = {(t, int(r), c): reason for t, r, c, reason in
           zip(quarantine["table"], quarantine["row"], quarantine["check"], quarantine["reason"])}
    assert got == case.quarantine
    assert {(t, c): n for t, table in report.tables.items() for c, n in table["corrected"].items()} == case.corrected
    assert all(t["ok"] + t["quarantined"] == t["rows"] for t in report.tables.values())
    store, _ = run_build_history(cfg)
    assert len(store) > 0


def test_each_request_is_refused_by_the_python_validator_in_the_words_the_ranker_uses(untrained):
    """The Python side of tests/corpus/requests.py (the C++ side: tests/test_export.py)."""
    from data_pipelines.contract import SEQUENCE_FIELDS
    from export.requests import RequestError, RequestSchema, parse_request, requests_from_inputs

    _, meta, inputs = untrained
    schema = RequestSchema(meta)
    request = requests_from_inputs(inputs, schema, 8)[0]
    request["candidates"][0]["sequences"]["long"] = {f: [1, 1] for f in SEQUENCE_FIELDS}
    parse_request(json.dumps(request), schema)  # the base request is valid
    for case in request_cases(request, meta):
        if not case.python_too:
            continue
        with pytest.raises(RequestError) as err:
            parse_request(case.text, schema)
        message = str(err.value)
        assert message.startswith(case.error) if case.error.startswith("bad JSON") else message == case.error, case.name


def test_a_live_only_data_set_is_told_which_gsus_it_cannot_fill(tmp_path):
    """KuaiLive without short videos: the streams job says the short-video GSUs stay empty (and,
    without embeddings, that the dot-product GSUs rank by recency) instead of training on zeros silently."""
    source = next(c for c in ingest_cases() if c.name == "no_title_embeddings").write(tmp_path / "src")
    paths = [f"paths.data_dir={tmp_path / 'data'}", f"paths.reports_dir={tmp_path / 'reports'}", "progress=false"]
    cfg = compose_config("ingest", ["data=kuailive", f"data.source_dir={source}", "data.embeddings.live=null", *paths])
    run_ingest(cfg)
    run_build_history(cfg)
    build = run_streams(compose_config("streams", ["data=kuailive", "shards.micro_batches_per_shard=1", *paths]))
    assert build.gaps == ["no short-video plays: the short, long and aidhard GSUs are empty for every request",
                          "no live content embeddings: the long and livelong GSUs rank by recency alone"]
    assert "note: no short-video plays" in describe_streams(build, data_set(cfg))
