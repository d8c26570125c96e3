"""`make replay-worlds`: python -m recsys.replay.worlds [Hydra overrides], e.g. worlds=highlight_shape."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from recsys.replay.worlds.sweep import passthrough_overrides, run_worlds


@hydra.main(config_path="../../../conf", config_name="replay_worlds", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_worlds(cfg, passthrough_overrides(list(HydraConfig.get().overrides.task)))


if __name__ == "__main__":
    main()
