"""`make online-train`: python -m online [Hydra overrides], e.g. world=tiny online_train.pace=0.05."""

from __future__ import annotations

import warnings

import hydra
from omegaconf import DictConfig

from online.trainer import run_online_training


@hydra.main(config_path="../conf", config_name="online_train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")  # planner/DDP API notices
    run_online_training(cfg)


if __name__ == "__main__":
    main()
