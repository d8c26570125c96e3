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
            line += f", in highlights {summary['highlight_auc_ctr'][run]:.4f}"
        for fraction, by_run in summary.get("catch_by_fraction", {}).items():
            latency, caught = by_run[run]["catch_latency_s_median"], by_run[run]["share_caught"]
            line += (f"; caught at {float(fraction):.0%} of the rise: "
                     f"{'n/a' if caught is None else f'{caught:.0%}'}, median "
                     f"{'never' if latency is None else f'{latency:.0f} s'}")
        print(line)


if __name__ == "__main__":
    main()
