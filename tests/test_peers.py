"""Peer models (recsys/model/peers.py, conf/replay.yaml `peers`): DLRM and DCN-v2 over the project's
lookups, and the project's model without Cross, learning the realtime stream in the replay beside
the project's model and compared with it seed by seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from data_pipelines.contract import DENSE_FEATURES
from data_pipelines.dataset import REALTIME
from recsys.data import ShardDataset
from recsys.data.batch import to_batch
from recsys.learning.learner import Learner
from recsys.model.factory import build_model, specs
from recsys.model.gbdt import GbdtSpec
from recsys.model.peers import PeerSpec, masked_means
from recsys.replay.candidates import simulated_world
from recsys.replay.ceiling import highlight_boost
from recsys.replay.job import peer_runs, run_replay
from recsys.replay.runs import WithoutRoomState
from recsys.replay.settings import replay_settings
from tests.conftest import compose_config, job_paths

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

MODELS = ["dlrm", "dcn_v2", "lightgbm", "no_cross"]  # other models
CONTROLS = ["frozen_tables", "ceiling", "no_room_state"]  # runs that measure something
PEERS = MODELS + CONTROLS


def test_masked_means_average_each_gsus_real_elements_per_slot():
    b, length, g, s, d = 3, 4, 2, 2, 5
    rng = np.random.default_rng(0)
    sequence = rng.normal(size=(b, length, g * s * d)).astype(np.float32)
    mask = rng.random((b, g, length)) < 0.6
    mask[0, 1] = False  # an empty GSU: zeros
    got = masked_means(torch.from_numpy(sequence), torch.from_numpy(mask), d).numpy()
    assert got.shape == (b, g * s, d)
    for i in range(b):
        for gi in range(g):
            for si in range(s):
                column = (gi * s + si) * d  # slot (GSU gi, field si) of each position
                rows = [sequence[i, p, column:column + d] for p in range(length) if mask[i, gi, p]]
                expected = np.mean(rows, axis=0) if rows else np.zeros(d)
                np.testing.assert_allclose(got[i, gi * s + si], expected, rtol=1e-5, atol=1e-6)


def test_peers_share_the_projects_tables_features_and_score():
    cfg = compose_config("replay", ["world=tiny"])
    own, _ = specs(cfg)
    for name, peer in peer_runs(cfg, PEERS).items():
        model = peer.model
        assert peer.role == ("peer" if name in MODELS else "control"), name
        if name == "lightgbm":  # no tables: the same GSUs' statistics
            assert isinstance(model, GbdtSpec) and peer.cross == specs(cfg)[1]
            continue
        if name in CONTROLS:
            assert (model, peer.cross) == (own, specs(cfg)[1])
            assert peer.freeze_tables == (("item", "author") if name == "frozen_tables" else ())
            assert peer.oracle_input == (name == "ceiling")
            assert peer.room_state == (name != "no_room_state")
        assert (model.pooled_tables, model.score_weights, model.embedding_dim, model.seq_len) == (
            own.pooled_tables, own.score_weights, own.embedding_dim, own.seq_len), name
        assert peer.stream == "realtime"
    assert peer_runs(cfg, PEERS)["no_cross"].cross.gsu_names == []
    assert peer_runs(cfg, PEERS)["dlrm"].cross.gsu_names == list(cfg.cross.gsu_names)
    assert not set(PEERS) & set(replay_settings(cfg.replay).streams)  # peers are asked for, never a default run


@pytest.mark.parametrize("experiment", ["peers", "attribution", "lightgbm"])
def test_the_peer_experiments_name_only_runs_that_exist(experiment):
    cfg = compose_config("replay", [f"+experiment={experiment}"])
    runs = list(cfg.replay.streams)
    peers = peer_runs(cfg, runs)
    assert set(runs) - set(peers) <= {"realtime", "frozen"} and runs[0] == "realtime"
    assert cfg.experiment_name == experiment
    if experiment == "lightgbm":  # the ablations change what they name, nothing else
        base = peer_runs(cfg, ["lightgbm"])["lightgbm"].model
        assert peers["lightgbm_refit_30s"].model == dataclasses.replace(base, refit_every_s=30)
        assert peers["lightgbm_no_ids"].model == dataclasses.replace(
            base, drop_features=["user_id", "live_item", "author_id"])


def test_a_peer_has_the_projects_embedding_tables_and_one_logit_per_task(tiny_streams):
    cfg = compose_config("replay", [*job_paths(tiny_streams)])
    manifest = tiny_streams.manifest("realtime")
    own = build_model(*specs(cfg), manifest, "cpu")
    for name, peer in peer_runs(cfg, ["dlrm", "dcn_v2"]).items():
        model = build_model(peer.model, peer.cross, manifest, "cpu")
        tables = {n: tuple(p.shape) for n, p in model.lookup.named_parameters()}
        assert tables == {n: tuple(p.shape) for n, p in own.lookup.named_parameters()}, name
        assert model.head.over_arch.model[-1].out_features == len(manifest["tasks"])
    with pytest.raises(ValueError, match="model.interaction must be one of"):
        PeerSpec(interaction="fm", seq_len=4, embedding_dim=8, dense_arch_dims=[], over_arch_dims=[8],
                 pooled_tables={}, score_weights={})


def test_the_oracle_input_is_the_multiplier_the_simulator_applied(tiny_world):
    """Against what the simulation recorded for every logged impression: its highlight segment and
    intensity (truth/live_impressions) and the segment's peak boost (truth/highlights)."""
    truth = pd.read_parquet(tiny_world.truth.live_impressions)
    peaks = pd.read_parquet(tiny_world.truth.highlights)["peak_ctr_boost"].to_numpy()
    segment = truth["highlight_segment"].to_numpy()
    expected = np.where(segment >= 0, 1 + (peaks[np.maximum(segment, 0)] - 1) * truth["highlight_intensity"], 1.0)
    got = highlight_boost(simulated_world(tiny_world), truth["live_id"].to_numpy(), truth["timestamp"].to_numpy())
    assert (segment >= 0).sum() > 50 and got.max() > 1.5
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _table(learner: Learner, name: str) -> torch.Tensor:
    for key, value in learner.task.model.state_dict().items():
        if key.endswith(f".{name}.weight"):
            local = value.local_shards()[0].tensor if hasattr(value, "local_shards") else value
            return local.detach().clone()
    raise KeyError(name)


def test_a_run_without_room_state_is_scored_on_rows_whose_counters_are_zero():
    class Rows:
        request_ts = np.arange(3)

        def __len__(self) -> int:
            return 3

        def rows(self, rows):
            return {"dense": np.arange(3 * len(DENSE_FEATURES), dtype=np.float32).reshape(3, -1)[rows] + 1,
                    "live_id": np.asarray([5, 6, 7])[rows]}

    got = WithoutRoomState(Rows()).rows(np.asarray([0, 2]))
    for j, feature in enumerate(DENSE_FEATURES):
        expected = 0.0 if feature.startswith("room_") else Rows().rows(np.asarray([0, 2]))["dense"][:, j]
        np.testing.assert_array_equal(got["dense"][:, j], expected, err_msg=feature)
    np.testing.assert_array_equal(got["live_id"], [5, 7])


def test_frozen_tables_stop_learning_and_the_others_go_on(tiny_streams):
    cfg = compose_config("replay", [*job_paths(tiny_streams)])
    learner = Learner(cfg, tiny_streams.manifest(REALTIME), seed=0)
    parts = ShardDataset(tiny_streams.stream(REALTIME), batch_size=256).micro_batches()
    batches = [to_batch(next(parts)) for _ in range(2)]
    learner.train(batches[0])
    before = {t: _table(learner, t) for t in ("item", "author", "user")}
    learner.freeze_tables({"item", "author"})
    learner.train(batches[1])
    assert torch.equal(_table(learner, "item"), before["item"])
    assert torch.equal(_table(learner, "author"), before["author"])
    assert not torch.equal(_table(learner, "user"), before["user"])  # the rest learns on
    with pytest.raises(ValueError, match=r"tables \['item'\] share a fused kernel with \['author'\]"):
        learner.freeze_tables({"item"})
    with pytest.raises(ValueError, match="no embedding table named"):
        learner.freeze_tables({"rooms"})


@pytest.mark.slow
def test_peers_learn_the_realtime_stream_and_are_paired_with_the_projects_model(tiny_streams, tmp_path):
    cfg = compose_config("replay", [*job_paths(tiny_streams), f"paths.reports_dir={tmp_path}", "replay.seeds=[0,1]",
                                    "replay.progress=false", f"replay.streams=[realtime,{','.join(PEERS)}]",
                                    "replay.push_every_s=[300]", "replay.ranking.requests=300",
                                    "peers.lightgbm.model.params.num_threads=1",
                                    f"replay.until_s={60 * 60}"])
    report = run_replay(cfg)
    summary = report["summary"]
    # Every peer learned the same samples as the project's model (the realtime stream's, same batches).
    learned = report["config"]["samples_per_s"]
    assert set(learned) == {"realtime", *PEERS} and all(v > 0 for v in learned.values())
    assert {p: report["config"]["peers"][p]["stream"] for p in PEERS} == dict.fromkeys(PEERS, "realtime")
    for run in ["realtime", *PEERS]:
        assert 0.3 < summary["overall_auc_ctr"][run] < 1.0
        assert -1.0 <= summary["normalized_top1_clicks"][run] <= 1.0
    assert set(summary["peer_normalized_top1_clicks"]) == set(MODELS)
    assert set(summary["paired_diff_vs_controls"]) == set(CONTROLS)
    per_seed = {r: [report["runs"][r]["per_seed"][s]["normalized_top1_clicks"] for s in ("0", "1")]
                for r in ["realtime", *PEERS]}
    for peer in PEERS:
        expected = np.subtract(per_seed["realtime"], per_seed[peer])
        got = (summary["paired_diff_vs_peers"][peer] if peer in MODELS
               else summary["paired_diff_vs_controls"][peer]["normalized_top1_clicks"])
        np.testing.assert_allclose(got["per_seed"], expected)
        assert got["mean"] == pytest.approx(np.mean(expected))
        assert got["sd"] == pytest.approx(np.std(expected, ddof=1))
    # The ceiling's share of realtime's gap to the truth (which scores 1), seed by seed.
    gap = (np.subtract(per_seed["ceiling"], per_seed["realtime"])) / (1 - np.asarray(per_seed["realtime"]))
    np.testing.assert_allclose(summary["ceiling_gap_closed"]["per_seed"], gap)
    assert report["config"]["peers"]["lightgbm"]["refits"]["per_run"] >= 10  # a refit per 300-s push of 1 h
    # Two peers with different models do not give the same predictions.
    dlrm = np.load(tmp_path / "replay" / "dlrm-seed0.npz")["push_300s"]
    dcn = np.load(tmp_path / "replay" / "dcn_v2-seed0.npz")["push_300s"]
    assert np.nanmax(np.abs(dlrm - dcn)) > 1e-3
    # Frozen tables: the same model as realtime up to the last push before the freeze, another after it.
    impressions = np.load(tmp_path / "replay" / "realtime-seed0.npz")
    realtime = impressions["push_300s"][:, 0]
    frozen = np.load(tmp_path / "replay" / "frozen_tables-seed0.npz")["push_300s"][:, 0]
    request_ts = pd.read_parquet(tiny_streams.canonical.live_impressions).set_index("impression_id").loc[
        impressions["impression_id"], "request_ts"].to_numpy()
    freeze_at = report["config"]["peers"]["frozen_tables"]["freeze_at_ms"]
    last_push_before = freeze_at - freeze_at % 300_000
    before, after = request_ts < last_push_before, request_ts >= last_push_before + 300_000
    assert before.sum() > 100 and after.sum() > 100
    np.testing.assert_allclose(frozen[before], realtime[before], atol=1e-5)
    assert np.nanmax(np.abs(frozen[after] - realtime[after])) > 1e-3
    # The ceiling learned with its oracle input: another model again.
    assert report["config"]["peers"]["ceiling"]["oracle_input"]
    ceiling = np.load(tmp_path / "replay" / "ceiling-seed0.npz")["push_300s"][:, 0]
    assert np.nanmax(np.abs(ceiling - realtime)) > 1e-3
