"""The replay the live report compares against: `make replay`'s job on the live run's own composed
config — its world, data, model, learner (conf/learner) and seed, and the replay settings the live
config takes (conf/replay_settings) — narrowed to the stream the trainer learned, its push interval
and the span the driver played. Nothing is rebuilt from override strings: the run's config is
handed to the replay whole, in a process of its own."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

EXPERIMENT = "online_compare"  # reports/replay_online_compare/: where the comparison writes


def comparison_config(cfg: DictConfig) -> DictConfig:
    """The replay of the live run: one run (the learned stream), one seed (the trainer's), one push
    interval (the trainer's), the driver's span, no candidate sets (AUC only)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.experiment_name = EXPERIMENT
    r = out.replay
    r.streams = [str(cfg.online_train.stream)]
    r.seeds = [int(cfg.online_train.seed)]
    r.push_every_s = [int(cfg.push.every_s)]
    r.until_s = cfg.online.span_s
    r.ranking.requests = 0
    r.progress = bool(cfg.online.progress)
    return out


def _replay_main(config_yaml: str) -> None:
    import warnings

    from recsys.replay.job import run_replay

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    run_replay(OmegaConf.create(config_yaml))


def comparison_predictions(cfg: DictConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """Runs the comparison replay; (impression ids, its predictions at the push interval, the file)."""
    replay_cfg = comparison_config(cfg)
    print(f"replay for comparison: {replay_cfg.replay.streams[0]}, seed {replay_cfg.replay.seeds[0]}, push every "
          f"{replay_cfg.replay.push_every_s[0]} s" + ("" if cfg.online.span_s is None else
                                                      f", the first {float(cfg.online.span_s):g} s"))
    process = multiprocessing.get_context("spawn").Process(target=_replay_main, args=(OmegaConf.to_yaml(replay_cfg),),
                                                            name="online-compare-replay")
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the comparison replay failed (exit {process.exitcode}); see its output above")
    from recsys.replay.job import predictions_path, report_name

    path = predictions_path(Path(cfg.paths.reports_dir) / report_name(replay_cfg), replay_cfg.replay.streams[0],
                            int(replay_cfg.replay.seeds[0]))
    with np.load(path, allow_pickle=False) as saved:
        return saved["impression_id"], saved[f"push_{int(cfg.push.every_s)}s"], str(path)
