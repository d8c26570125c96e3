"""`make history`: rebuild the interaction-log store from a data set's canonical tables."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from data_pipelines.jobs import describe_history, run_build_history


@hydra.main(config_path="../../conf", config_name="simulate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(describe_history(*run_build_history(cfg)))


if __name__ == "__main__":
    main()
