"""`make replay`: python -m recsys.replay [Hydra overrides], e.g. replay.seeds=[0] world=tiny."""

from __future__ import annotations

import warnings

import hydra
from omegaconf import DictConfig

from recsys.replay.job import run_replay


@hydra.main(config_path="../../conf", config_name="replay", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")  # planner/DDP API notices
    report = run_replay(cfg)
    streams = [s for s in cfg.replay.streams]
    for group in report["impressions"]:
        cells = "  ".join(f"{s} {report[s][group]['auc']['ctr']:.4f} ± {report[s][group]['auc_std']['ctr']:.4f}"
                          for s in streams)
        print(f"  CTR AUC {group:<12} {cells}")


if __name__ == "__main__":
    main()
