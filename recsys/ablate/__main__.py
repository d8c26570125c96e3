"""`make ablate`: python -m recsys.ablate [overrides]; overrides outside `ablate.` reach every run."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from data_pipelines.contract import TASKS
from recsys.ablate import report
from recsys.ablate.grid import run_grid


@hydra.main(config_path="../../conf", config_name="ablate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    passthrough = [o for o in HydraConfig.get().overrides.task if not o.startswith(("ablate.", "+ablate."))]
    runs = run_grid(cfg, passthrough)
    doc = report.compare(runs, cfg.ablate.reference)
    paths = report.write(doc, Path(cfg.paths.reports_dir), list(TASKS))
    print(Path(paths[1]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
