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
    summary = report["summary"]
    for run, auc in summary["overall_auc_ctr"].items():
        line = f"  {run:<9} CTR AUC overall {auc:.4f}"
        if "highlight_auc_ctr" in summary:
            latency, caught = summary["catch_latency_s_median"][run], summary["share_caught"][run]
            line += (f", in highlights {summary['highlight_auc_ctr'][run]:.4f}; catch latency median "
                     f"{'never' if latency is None else f'{latency:.0f} s'}, caught "
                     f"{'n/a' if caught is None else f'{caught:.0%}'}")
        print(line)


if __name__ == "__main__":
    main()
