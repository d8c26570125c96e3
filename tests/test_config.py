"""Config is mapped one-to-one onto constructor arguments, and each fact shared between jobs has one
home: the settings nodes' keys are their classes' fields, and the learner the replay and the live
trainer use is one config group."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from data_pipelines.configured import build
from tests.conftest import compose_config

PRIMARY = ("simulate", "ingest", "streams", "train", "replay", "replay_worlds", "online_train", "online", "export",
           "bench", "ablate")
PROJECT = ("data_pipelines.", "recsys.", "export.", "serving.", "online.", "bench.")


def _target_nodes(node, path: str = ""):
    """(path, node) of every `_target_` node naming one of the project's classes."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        if isinstance(target, str) and target.startswith(PROJECT):
            yield path, node
        for key in node:
            yield from _target_nodes(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from _target_nodes(item, f"{path}[{i}]")


def test_every_settings_node_holds_exactly_its_classes_fields():
    """No key a class ignores, none it needs that the config leaves to a default nobody sees."""
    checked = set()
    for name in PRIMARY:
        cfg = compose_config(name, [])
        for path, node in _target_nodes(cfg):
            module, _, cls_name = node["_target_"].rpartition(".")
            target = getattr(importlib.import_module(module), cls_name)
            if not dataclasses.is_dataclass(target):
                continue  # model parts and engines take built objects; the settings are dataclasses
            keys = {k for k in node if not str(k).startswith("_")}
            fields = {f.name for f in dataclasses.fields(target)}
            required = {f.name for f in dataclasses.fields(target)
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
            assert keys <= fields, f"{name}: {path} has keys {sorted(keys - fields)} that {cls_name} has no field for"
            assert required <= keys, f"{name}: {path} leaves {cls_name}'s {sorted(required - keys)} unset"
            checked.add(cls_name)
    assert {"LiveSettings", "DriverSettings", "JoinerSettings", "OnlineTrainSettings", "PushSettings",
            "ReplaySettings", "RankingSettings", "FrozenRun", "CatchWindows", "LearnerSpec", "LabelRules",
            "FeatureSpec", "FeatureColumns"} <= checked


def test_the_learner_is_one_group_the_replay_the_live_trainer_and_the_comparison_share():
    """Changing the batch size in one place (conf/learner) changes it for make replay, for the live
    loop's trainer and for the replay the live report compares against; neither job has its own."""
    from online.report.compare import comparison_config
    from recsys.replay.settings import replay_settings

    overrides = ["learner.batch_size=64", "learner.max_wait_s=12"]
    replay = replay_settings(compose_config("replay", overrides).replay)
    trainer = build(compose_config("online_train", overrides).online_train)
    live = compose_config("online", overrides)
    compared = comparison_config(live)
    for learner in (replay.learner, trainer.learner, build(live.online_train).learner,
                    replay_settings(compared.replay).learner):
        assert (learner.batch_size, learner.max_wait_ms) == (64, 12_000)
    for name, node in (("replay", "replay"), ("online_train", "online_train")):
        own = compose_config(name, []).get(node)
        assert not {"batch_size", "max_wait_s", "batch_norm_min_batch"} & set(own), f"{node} has its own batch rules"


def test_the_comparison_replays_the_live_runs_own_world_stream_seed_and_span():
    """A world named by overrides (a data folder no world config is named after) is the comparison's
    world too: the live run's config is handed over whole, not rebuilt from a world group's name."""
    from online.report.compare import comparison_config
    from recsys.replay.settings import replay_settings

    live = compose_config("online", ["world=tiny", "world.name=w7", "world.seed=7", "online.span_s=7200",
                                     "online_train.seed=3", "push.every_s=60"])
    compared = comparison_config(live)
    assert compared.world.name == "w7" and compared.world.seed == 7
    assert compared.data.output_dir == OmegaConf.to_container(live, resolve=True)["data"]["output_dir"]
    s = replay_settings(compared.replay)
    assert (s.streams, s.seeds, s.push_every_s, s.until_s, s.ranking.requests) == (("realtime",), (3,), (60,), 7200, 0)


def test_a_bad_setting_is_refused_with_its_own_words():
    with pytest.raises(ValueError, match="push.dense_every must be at least 1"):
        build(compose_config("online_train", ["push.dense_every=0"]).push)
    with pytest.raises(ValueError, match="online.ranker_format must be auto, torchscript or aoti"):
        build(compose_config("online", ["online.ranker_format=onnx"]).online)
    with pytest.raises(TypeError, match="unexpected keyword argument 'speeed'"):
        build(compose_config("online", ["+driver.speeed=3"]).driver)
