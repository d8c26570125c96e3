"""`python -m online.report [Hydra overrides]`: the live report of the run conf/online.yaml names
(`online.name`, `paths.*`), written again from its record; the comparison replay runs again."""

from __future__ import annotations

import warnings

import hydra
from omegaconf import DictConfig

from online.record import LiveRun
from online.report import write_report


@hydra.main(config_path="../../conf", config_name="online", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    run = LiveRun.of(cfg.paths, cfg.online.name)
    write_report(run)
    print(f"wrote {run.report_path('.{json,md,png}')}")


if __name__ == "__main__":
    main()
