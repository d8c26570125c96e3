"""`make ingest`: validate KuaiLive-schema logs into canonical tables, then build the history store."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from data_pipelines.ingest.reader import IngestError
from data_pipelines.jobs import run_build_history, run_ingest


@hydra.main(config_path="../../conf", config_name="ingest", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        report = run_ingest(cfg)
    except IngestError as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"ingested -> {report.output_dir}")
    print("\n".join("  " + line for line in report.summary_lines()))
    store, path = run_build_history(cfg)
    print(f"history store -> {path}: {len(store):,} interactions of {len(store.user_ids):,} users")


if __name__ == "__main__":
    main()
