"""`make streams`: label streams, GSU sequences, shards and the label-consistency report."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from data_pipelines.jobs import data_set, describe_streams, run_streams


@hydra.main(config_path="../../conf", config_name="streams", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(describe_streams(run_streams(cfg), data_set(cfg)))
    print(f"label-consistency report -> {Path(cfg.paths.reports_dir) / 'label_consistency.md'}")


if __name__ == "__main__":
    main()
