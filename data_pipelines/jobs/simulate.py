"""`make simulate`: simulate a world, ingest it like real logs, build its history store."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from data_pipelines.jobs import (describe_history, describe_ingest, describe_simulation, run_build_history,
                                 run_ingest, run_simulation)


@hydra.main(config_path="../../conf", config_name="simulate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(describe_simulation(run_simulation(cfg)))
    print()
    print(describe_ingest(run_ingest(cfg)))
    print()
    print(describe_history(*run_build_history(cfg)))


if __name__ == "__main__":
    main()
