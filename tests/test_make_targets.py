"""The Makefile is the user's menu: the job targets run and pass ARGS through to Hydra."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(["make", "--no-print-directory", f"PY={sys.executable}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_targets():
    plain = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)
    listed = {line.split()[0] for line in plain.splitlines() if line.strip()}
    assert {"setup", "setup-gpu", "test", "test-full", "simulate", "ingest", "history", "bench"} <= listed


def test_simulate_and_bench_on_a_tiny_world(tmp_path):
    args = f'ARGS=world=tiny paths.data_dir={tmp_path} world.n_users=300 progress=false'
    result = make("simulate", args)
    assert result.returncode == 0, result.stderr
    assert "world 'tiny' (seed 0)" in result.stdout
    assert "CTR" in result.stdout and "gifts" in result.stdout
    for sub in ("raw/click.parquet", "truth/highlights.parquet", "canonical/live_impressions.parquet",
                "canonical/quarantine.parquet", "history/store.npz"):
        assert (tmp_path / "tiny" / sub).exists(), sub

    result = make("bench", f"ARGS=world=tiny paths.data_dir={tmp_path} bench.history_store.single_queries=100 "
                           f"bench.history_store.batch_queries=1000")
    assert result.returncode == 0, result.stderr
    assert "queries/s" in result.stdout


def test_ingest_failure_is_one_clear_line(tmp_path):
    result = make("ingest", f"ARGS=data.source_dir={tmp_path / 'nowhere'} paths.data_dir={tmp_path}")
    assert result.returncode != 0
    assert "ingest failed: room: file not found:" in result.stderr
