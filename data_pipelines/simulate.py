"""`make simulate`: simulate a world, ingest it like real logs, build its history store."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from data_pipelines.jobs import run_build_history, run_ingest, run_simulation


@hydra.main(config_path="../conf", config_name="simulate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = run_simulation(cfg)
    s = result.summary
    print(f"\nworld '{s['world']}' (seed {s['seed']}) -> {result.raw_dir.parent}")
    print(f"  users {s['users']:,}  authors {s['authors']:,}  rooms {s['rooms']:,}  "
          f"highlight segments {s['highlight_segments']:,}")
    print(f"  exposures: short video {s['short_video_exposures']:,}  live {s['live_impressions']:,}  "
          f"(ratio {s['short_to_live_ratio']}:1)")
    print(f"  live clicks {s['live_clicks']:,}  CTR {s['ctr']:.3f}  inside highlights "
          f"{s['ctr_inside_highlights']:.3f}  outside (same rooms) {s['ctr_outside_highlights_same_rooms']:.3f}")
    print(f"  likes {s['likes']:,}  comments {s['comments']:,}  gifts {s['gifts']:,}: "
          f"<=5 min {s['gifts_within_5min']:,}  5 min-1 h {s['gifts_5min_to_1h']:,}  >1 h {s['gifts_after_1h']:,}")
    print(f"  live authors who also post short videos {s['live_authors_with_short_videos']:,}  "
          f"users with <=2 live clicks {s['users_with_at_most_2_live_clicks_share']:.0%}")
    report = run_ingest(cfg)
    print(f"\ningested -> {report.output_dir}")
    print("\n".join("  " + line for line in report.summary_lines()))
    store, path = run_build_history(cfg)
    print(f"\nhistory store -> {path}: {len(store):,} interactions of {len(store.user_ids):,} users")


if __name__ == "__main__":
    main()
