"""The Makefile is the user's menu: the job targets run and pass ARGS through to Hydra."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recsys.machine import describe

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(["make", "--no-print-directory", f"PY={sys.executable}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_targets():
    plain = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)
    listed = {line.split()[0] for line in plain.splitlines() if line.strip()}
    assert {"setup", "setup-gpu", "test", "test-fast", "simulate", "ingest", "history", "streams", "train", "export",
            "ranker", "online", "online-train", "bench"} <= listed


@pytest.mark.slow
def test_simulate_streams_and_bench_on_a_tiny_world(tmp_path):
    base = f"world=tiny paths.data_dir={tmp_path} paths.reports_dir={tmp_path}/reports progress=false"
    result = make("simulate", f"ARGS={base} world.n_users=300")
    assert result.returncode == 0, result.stderr
    assert "world 'tiny' (seed 0)" in result.stdout
    assert "CTR" in result.stdout and "gifts" in result.stdout
    for sub in ("raw/click.parquet", "truth/highlights.parquet", "canonical/live_impressions.parquet",
                "canonical/quarantine.parquet", "history/store.npz"):
        assert (tmp_path / "tiny" / sub).exists(), sub

    result = make("streams", f"ARGS={base}")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "reports" / "label_consistency.json").read_text())
    assert set(report) == {"realtime", "fast_slow"}
    assert set(report["realtime"]) == {"ctr", "lvtr", "ltr", "cmtr", "gtr"}
    assert report["realtime"]["ctr"]["delay_median_s"] == 30.0  # a click lands at the end of its first tick
    assert report["fast_slow"]["ctr"]["delay_median_s"] == 300.0
    assert all(r["coverage"] == 1.0 for r in report["realtime"].values())
    assert report["realtime"]["gtr"]["coverage"] >= report["fast_slow"]["gtr"]["coverage"]
    assert (tmp_path / "reports" / "label_consistency.md").read_text().startswith("# Label consistency")
    for stream in ("realtime", "fast_slow", "final"):
        manifest = json.loads((tmp_path / "tiny" / "streams" / stream / "manifest.json").read_text())
        assert manifest["samples"] == sum(s["samples"] for s in manifest["shards"])
    impressions = pd.read_parquet(tmp_path / "tiny" / "canonical" / "live_impressions.parquet")
    final = json.loads((tmp_path / "tiny" / "streams" / "final" / "manifest.json").read_text())
    assert final["samples"] == len(impressions)

    result = make("streams", f"ARGS={base} stream=realtime")
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "reports" / "label_consistency.json").read_text())) == {"realtime"}

    result = make("bench", f"ARGS={base} bench.history_store.single_queries=100 "
                           f"bench.history_store.batch_queries=1000 bench.streams.loader_batches=5 "
                           f"bench.training.batch_size=64 bench.training.steps=1 bench.training.warmup_steps=1 "
                           f"bench.training.profile_steps=1 bench.training.item_rows=1000 "
                           f"bench.training.author_rows=100 bench.training.more_item_rows=[] "
                           f"bench.serving.candidates=[5,20] bench.serving.repeat=2 bench.serving.warmup=1 "
                           f"bench.serving.formats=[torchscript] bench.service.formats=[torchscript] "
                           f"bench.service.candidates=20 bench.service.distinct_requests=2 bench.service.clients=[2] "
                           f"bench.service.requests_per_client=20 bench.service.seconds=2 bench.service.reload_clients=0 "
                           f"bench.service.peers=[] bench.service.ids_only.history_events=[500] "
                           f"bench.features.history_events=[500] bench.features.queries=3 bench.features.repeat=2 "
                           f"'bench.features.memory=[[1000,10]]' bench.features.rebuild_partitions=0 "
                           f"bench.pipeline.ray_workers=[] bench.push.world=tiny bench.push.data_seconds=600 "
                           f"bench.push.formats=[torchscript] bench.push.seconds=2 "
                           f"'bench.push.rates=[{{every_s:0.2,pushes:3}}]' bench.push.live_data_seconds=120 "
                           f"bench.push.live_pace=0.01 bench.broker.events=3000 bench.broker.round_sizes=[500] "
                           f"bench.output={tmp_path}/bench.json")
    assert result.returncode == 0, result.stderr
    machine = describe()  # the figures name their machine first, and the load before and after
    first = result.stdout.splitlines()[1]  # after make's echo of the command
    assert first.startswith(f"machine: {machine.cpu}, {machine.cores} cores") and "bfloat16 products " in first
    assert result.stdout.splitlines()[2].startswith("load average: ") and "load average at the end: " in result.stdout
    run = json.loads((tmp_path / "bench.json").read_text())
    assert run["machine"]["cpu"] == machine.cpu and run["machine"]["features"] == machine.features
    assert set(run["figures"]) == {"history_store", "streams", "pipeline", "training", "online", "broker", "serving",
                                   "features", "service", "push"}
    compared = subprocess.run([sys.executable, "-m", "bench.compare", str(tmp_path / "bench.json"),
                               str(tmp_path / "bench.json")], cwd=ROOT, capture_output=True, text=True, check=True)
    ratios = [line.split()[-1] for line in compared.stdout.splitlines()[3:] if line.split()[-1] != "-"]
    assert len(ratios) > 20 and set(ratios) == {"1.00"}  # a run against itself
    assert "queries/s" in result.stdout and "impressions/s" in result.stdout and "samples/s" in result.stdout
    assert "TorchRec (DMP, fused RowWiseAdagrad)" in result.stdout and "speed-up" in result.stdout
    assert "layers after the lookups alone" in result.stdout
    assert "precision 32-true" in result.stdout and "precision bf16-mixed" in result.stdout
    assert "C++ ranker" in result.stdout and "model cost" in result.stdout and "bound ms" in result.stdout
    assert "service load test" in result.stdout  # a reload under load: tests/test_ranker_service.py
    assert "ids-only, 500-event history" in result.stdout and run["figures"]["service"]["ids_only"]["request_bytes"]
    assert "feature assembly: 3 queries x 2, 200 candidates, 500 history events searched" in result.stdout
    assert run["figures"]["features"]["memory"]["1000x10"]["history_events"] == 1000 * 10
    assert "appendfsync always" in result.stdout and "appendfsync everysec" in result.stdout
    joiner = run["figures"]["broker"]["joiner"]
    assert joiner["K=1"]["partitions"] == 4 and joiner["K=2"]["partitions"] == 2
    assert 0 < joiner["K=2"]["events"] < joiner["K=1"]["events"] and "joiner, process 0 of 2" in result.stdout
    assert "history + streams (tiny" in result.stdout and "local    history" in result.stdout
    push = run["figures"]["push"]
    assert push["trainer"]["pushes"] == 600 // 30 and push["torchscript"]["rates"][0]["pushes_applied"] == 3
    assert push["live"]["pushes_applied"] > 0 and "newest learned batch -> serving" in result.stdout


def test_ingest_failure_is_one_clear_line(tmp_path):
    result = make("ingest", f"ARGS=data.source_dir={tmp_path / 'nowhere'} paths.data_dir={tmp_path}")
    assert result.returncode != 0
    assert "ingest failed: room: file not found:" in result.stderr


@pytest.mark.slow
def test_the_service_bench_measures_the_peers_beside_the_ranker(tmp_path):
    """Ray Serve and PyTriton serve the same export (PyTriton from its own environment, made by
    `make setup-peers` when missing), answer the first request as the ranker does (the bench refuses
    otherwise), and get a row and a ratio each."""
    base = f"world=tiny paths.data_dir={tmp_path} paths.reports_dir={tmp_path}/reports progress=false"
    result = make("bench", f"ARGS={base} bench.run=[service] bench.service.formats=[torchscript] "
                           f"bench.service.peer_format=torchscript bench.service.candidates=20 "
                           f"bench.service.distinct_requests=2 bench.service.clients=[2] "
                           f"bench.service.requests_per_client=10 bench.service.seconds=2 bench.service.reload_clients=0 "
                           f"bench.service.ids_only.clients=[]")  # the ids-only rows: the tiny-world bench test
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "C++ ranker (torchscript)" in result.stdout
    assert "Ray Serve (torchscript)" in result.stdout and "PyTriton (torchscript)" in result.stdout
    assert "ray_serve: x" in result.stdout and "pytriton: x" in result.stdout
