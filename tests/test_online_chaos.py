"""`make online` as a chaos run on a tiny world named by overrides: every component SIGKILLed once and
started again, and what must hold through it (docs/online.md, "Supervision, and the faults it is
tested with"); and SIGTERM to the job. A file of its own so that the test runner can run it beside
tests/test_online.py's joiner tests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from online.trainer import sample_digest
from tests.conftest import ROOT, compose_config

SPAN_S = 5400
MALFORMED = 5


NAMED_WORLD = ["world=tiny", "world.name=tiny_w3", "world.seed=3"]  # a world no config file is named after


CHAOS_SEED = 1  # its five kills, one of each component, land between 10 % and 90 % of the span


@pytest.fixture(scope="module")
def chaos(ranker_binary, tmp_path_factory):
    """`make online` on a tiny world named by overrides (`world.name`, `world.seed`: its data folder is
    no world config's name), its first hour and a half at 150x, TorchScript only, as a chaos run: five
    malformed events first, then a SIGKILL of each component — trainer, joiner, ranker, broker,
    driver — in a seeded random order at random moments, each started again by the supervisor.
    (report, its directory, the data set)."""
    from data_pipelines.jobs import run_streams
    from tests.conftest import build_world

    out = tmp_path_factory.mktemp("online")
    data = build_world(out / "data", NAMED_WORLD)
    run_streams(compose_config("streams", [f"paths.data_dir={out / 'data'}", f"paths.reports_dir={out / 'reports'}",
                                           "progress=false", *NAMED_WORLD]))
    args = [*NAMED_WORLD, f"paths.data_dir={out / 'data'}", f"paths.reports_dir={out / 'reports'}",
            f"paths.log_dir={out / 'logs'}", f"paths.artifacts_dir={out / 'artifacts'}", f"online.span_s={SPAN_S}",
            "online.speed=150", "online.chaos=5", f"online.chaos_seed={CHAOS_SEED}", f"driver.malformed={MALFORMED}",
            "online.progress=false", "push.formats=torchscript", "online_train.checkpoint_every_s=120",
            "joiner.checkpoint_every_s=120"]
    log = out / "make_online.log"
    with log.open("w") as f:  # a file, not a pipe: a stray process holding a pipe would hang the test
        result = subprocess.run(["make", "--no-print-directory", "online", f"ARGS={' '.join(args)}"], cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT, timeout=900)
    assert result.returncode == 0, log.read_text()[-6000:]
    return json.loads((out / "reports" / "online.json").read_text()), out, data


def _expected_realtime(data, span_s: int) -> tuple[int, int]:
    """(count, digest) of make streams' realtime samples of the impressions played."""
    from recsys.data import ShardDataset
    from data_pipelines.micro_batch import concat_arrays

    shards = concat_arrays(list(ShardDataset(data.stream("realtime"), batch_size=1).micro_batches()))
    first = int(pd.read_parquet(data.canonical.live_impressions)["request_ts"].min())
    played = shards["request_ts"] < first + span_s * 1000
    return int(played.sum()), sample_digest(shards["impression_id"][played], shards["report_ts"][played],
                                            shards["kind"][played])


@pytest.mark.slow
def test_every_component_sigkilled_once_is_started_again_and_recovers(chaos):
    report, _, _ = chaos
    s = report["summary"]
    assert s["restarts"] == {c: 1 for c in ("broker", "driver", "joiner", "ranker", "trainer")}
    assert [r["cause"] for r in report["restarts"]] == ["SIGKILL (fault schedule)"] * 5 and not report["faults_skipped"]
    for component, seconds in s["recovery_s"].items():
        assert seconds["not_recovered"] == 0 and 0 < seconds["max"] < 120, component
    assert report["joiner"]["resumes"] == 1 and report["driver"]["restarts"] == 1


@pytest.mark.slow
def test_through_every_kill_each_realtime_sample_is_learned_exactly_once_and_no_event_is_lost(chaos):
    report, _, data = chaos
    count, digest = _expected_realtime(data, SPAN_S)  # from make streams' shards, by this test's own reading
    s = report["summary"]
    assert s["samples_emitted"] == s["samples_learned"] == s["samples_expected"] == count
    assert int(report["trainer"]["digest"]) == digest and s["samples_digest_matches"]
    assert report["trainer"]["resumed_after_samples"] > 0  # it resumed from a checkpoint, not from scratch
    assert s["lost_events"] == 0 and report["joiner"]["open_at_end"] == 0
    assert report["driver"]["events_published"] == report["joiner"]["events"] + MALFORMED


@pytest.mark.slow
def test_every_request_is_answered_through_the_outages_and_the_restarted_trainer_reaches_the_ranker(chaos):
    from online.record import Answers

    report, out, _ = chaos
    s = report["summary"]
    assert s["requests_lost"] == 0 and s["requests_answered"] == s["requests_sent"] > 1000
    assert s["pushes_applied"] > SPAN_S / 30 * 0.5  # pushes were applied by both rankers
    # The trainer started again wrote new bases; the ranker (started again too) loaded its last one.
    logs = json.loads((out / "logs" / "online" / "online" / "loop.json").read_text())["ranker_logs"]
    assert f"export {report['trainer']['exports'][-1]['export_id']}, push" in logs[-1]
    # The driver started again kept the answers of the one that died: those sent before its death.
    answers = Answers.load(out / "logs" / "online" / "online" / "answers.npz")
    died = next(r["died_unix_s"] for r in report["restarts"] if r["component"] == "driver")
    before = answers.sent_unix_s < died  # NaN (never sent) compares False
    assert before.sum() > 100 and answers.answered[before].all()


@pytest.mark.slow
def test_malformed_events_are_quarantined_with_their_reason_and_never_learned(chaos):
    report, _, _ = chaos
    assert report["summary"]["events_quarantined"] == MALFORMED
    reasons = sorted(q["reason"] for q in report["quarantine"])
    assert any("unknown event type 'purchase'" in r for r in reasons)
    assert any("'ts' is not an integer" in r for r in reasons)
    assert any("missing field 'live'" in r for r in reasons)
    assert any("never seen" in r for r in reasons)
    assert any("negative watch_ms" in r for r in reasons)


@pytest.mark.slow
def test_the_report_holds_the_summary_and_nothing_is_left_running(chaos):
    report, out, _ = chaos
    s = report["summary"]
    for key in ("served_auc_ctr", "replay_auc_ctr", "click_to_served_s", "samples_emitted", "samples_learned",
                "pushes_applied", "requests_sent", "requests_answered"):
        assert s[key] is not None, key
    assert 0 < s["click_to_served_s"]["p50"] <= s["click_to_served_s"]["p99"]
    assert (out / "reports" / "online.md").exists() and (out / "reports" / "online.png").exists()
    # The comparison replayed the live run's own world — named by overrides — on the span played.
    assert report["config"]["world"] == "tiny_w3" and report["replay_source"].startswith(str(out / "reports"))
    compared = json.loads((out / "reports" / "replay_online_compare.json").read_text())["config"]
    assert compared["world"] == "tiny_w3" and compared["until_s"] == SPAN_S
    assert compared["learner"] == report["config"]["learner"]
    leftover = subprocess.run(["pgrep", "-f", "online-broker-|ranker_server --model " + str(out)], capture_output=True,
                              text=True)
    assert leftover.stdout.strip() == ""


@pytest.mark.slow
def test_through_every_kill_the_ranker_serves_the_streams_features_from_events_and_samples_carry_them(chaos):
    """The ranker computed every request's features from the events it read — rebuilt after its own
    kill, fed through the broker's — and they equal make streams' recomputation (skew 0); every
    sample the trainer was given carries the features its request was served with; the requests
    are ids only."""
    report, _, _ = chaos
    s = report["summary"]
    assert s["feature_skew"]["requests"] == s["requests_answered"] and s["feature_skew_rate"] == 0.0
    assert s["samples_with_served_features"]["share"] == 1.0 and s["samples_with_served_features"]["samples"] > 1000
    assert s["request_bytes"]["p99"] < 64
    assert report["joiner"]["samples_unserved"] == 0 and report["joiner"]["served"] >= s["requests_answered"]
    assert 0 < s["event_to_state_s"]["wall"]["p50"] <= s["event_to_state_s"]["wall"]["p99"] < 5
    assert report["ranker_metrics"]['ranker_served_log_total{outcome="dropped"}'] == 0




def _descendants(pid: int) -> dict[int, str]:
    """Every live process below `pid` (by parent links in /proc), with its command line."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                try:
                    found[child] = open(f"/proc/{child}/cmdline").read().replace("\0", " ")
                except OSError:
                    continue
                frontier.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_sigterm_to_make_online_stops_every_process_it_started_and_frees_the_ports(chaos):
    """What `timeout`, systemd and Kubernetes send: the job stops its trainer, joiner, driver,
    ranker and broker, frees their ports and exits with 128 + the signal."""
    _, out, _ = chaos
    args = [*NAMED_WORLD, f"paths.data_dir={out / 'data'}", f"paths.reports_dir={out / 'reports_signal'}",
            f"paths.log_dir={out / 'logs_signal'}", f"paths.artifacts_dir={out / 'artifacts_signal'}",
            f"online.span_s={SPAN_S}", "online.speed=150", "online.progress=false", "push.formats=torchscript"]
    sig, started = signal.SIGTERM, {}
    with (out / "signal.log").open("w") as log:
        job = subprocess.Popen([sys.executable, "-m", "online.live", *args], cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any("ranker_server" in c for c in _descendants(job.pid).values()):  # every component is up
            assert job.poll() is None and time.monotonic() < deadline, (out / "signal.log").read_text()[-4000:]
            time.sleep(0.5)
        time.sleep(2)  # the joiner and the driver start right after the ranker
        started = _descendants(job.pid)
        # The ranker's --port; redis-server names its own in its process title (127.0.0.1:<port>), and
        # the ranker's --events-broker names it again.
        ports = {int(a or b) for c in started.values() for a, b in re.findall(r"--port (\d+)|127\.0\.0\.1:(\d+)", c)}
        assert any("redis-server" in c for c in started.values()) and len(ports) == 2
        assert sum("multiprocessing" in c for c in started.values()) >= 3  # trainer, joiner, driver
        job.send_signal(sig)
        assert job.wait(timeout=120) == 128 + sig
    finally:
        if job.poll() is None:  # the test failed: leave nothing behind (components have groups of their own)
            for pid in [job.pid, *_descendants(job.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10  # multiprocessing's resource tracker ends when its pipe closes
    while any(_running(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: cmd for pid, cmd in started.items() if _running(pid)}
    assert not left, left
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert f"stopped by {signal.Signals(sig).name}" in (out / "signal.log").read_text()
