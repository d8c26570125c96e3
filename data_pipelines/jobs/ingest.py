"""`make ingest`: validate KuaiLive-schema logs into canonical tables, then build the history store."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from data_pipelines.ingest.reader import IngestError
from data_pipelines.jobs import describe_history, describe_ingest, run_build_history, run_ingest


@hydra.main(config_path="../../conf", config_name="ingest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        report = run_ingest(cfg)
    except IngestError as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        sys.exit(1)
    print(describe_ingest(report))
    print(describe_history(*run_build_history(cfg)))


if __name__ == "__main__":
    main()
