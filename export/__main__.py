"""`make export`: python -m export [Hydra overrides], e.g. checkpoint=logs/checkpoints/<run>/<epoch dir>."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from export.job import run_export


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    report, meta = run_export(cfg)
    print(f"exported {meta['training']['checkpoint']} (run {meta['training']['run_id']})")
    print(f"  {report.model_path}  ({report.model_path.stat().st_size / 2**20:.1f} MiB)")
    print(f"  {report.meta_path}")
    print(f"  {report.model_path.parent / 'requests.jsonl'}  (sample requests for the ranker)")
    print(f"validated on {report.validated_on} samples against the eager model: max |dp| = "
          f"{report.max_abs_diff_probabilities:.2e}, max |dscore| = {report.max_abs_diff_score:.2e}")
    print(f"fbgemm operators the ranker must load: {', '.join(meta.get('fbgemm_operators', [])) or 'none'}")


if __name__ == "__main__":
    main()
