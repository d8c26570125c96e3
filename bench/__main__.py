"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import warnings

import hydra
from omegaconf import DictConfig

from recsys.allocator import keep_freed_memory
from bench import history_store, online, pipeline, service, serving, streams, training

BENCHMARKS = {"history_store": history_store.run, "streams": streams.run, "pipeline": pipeline.run, "training": training.run,
              "online": online.run, "serving": serving.run, "service": service.run}


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")  # planner/DDP API notices
    keep_freed_memory()  # as the training and replay jobs run
    for name in cfg.bench.run:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark '{name}'; known: {sorted(BENCHMARKS)}")
        BENCHMARKS[name](cfg)


if __name__ == "__main__":
    main()
