"""`make export`: python -m export [Hydra overrides], e.g. checkpoint=logs/checkpoints/<run>/<epoch dir>."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from export.export_dir import ExportDir
from export.job import run_export


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    report, meta = run_export(cfg)
    print(f"exported {meta['training']['checkpoint']} (run {meta['training']['run_id']})")
    for fmt, path in report.files.items():
        print(f"  {path}  ({fmt}, {path.stat().st_size / 2**20:.1f} MiB)")
    print(f"  {report.meta_path}")
    print(f"  {ExportDir(report.out_dir).requests}  (sample requests for the ranker)")
    for fmt, (dp, ds) in report.max_abs_diff.items():
        print(f"{fmt} validated on {report.validated_on} samples against the eager model: max |dp| = {dp:.2e}, "
              f"max |dscore| = {ds:.2e}")
    print(f"fbgemm operators the ranker must load: {', '.join(meta.get('fbgemm_operators', [])) or 'none'}")


if __name__ == "__main__":
    main()
