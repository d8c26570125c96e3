"""`make bench`: run every benchmark and print its figures."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recsys.allocator import keep_freed_memory
from recsys.machine import describe
from bench import broker, features, history_store, online, pipeline, push, service, serving, streams, training

BENCHMARKS = {"history_store": history_store.run, "streams": streams.run, "pipeline": pipeline.run, "training": training.run,
              "online": online.run, "broker": broker.run, "serving": serving.run, "features": features.run, "service": service.run,
              "push": push.run}


@hydra.main(config_path="../conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")  # planner/DDP API notices
    keep_freed_memory()  # as the training and replay jobs run
    unknown = [name for name in cfg.bench.run if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    machine = describe()
    print("\n".join(machine.lines()), flush=True)  # figures belong to the machine they were taken on
    figures = {}
    for name in cfg.bench.run:
        print(f"[bench] {name}: load average {os.getloadavg()[0]:.2f} at its start", flush=True)
        figures[name] = BENCHMARKS[name](cfg)
    end = os.getloadavg()
    print(f"load average at the end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    if cfg.bench.get("output"):
        write_figures(Path(cfg.bench.output), machine, end, figures)


def write_figures(path: Path, machine, load_end: tuple[float, float, float], figures: dict) -> None:
    """The run as JSON, for comparing machines (`python -m bench.compare A.json B.json`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine.as_dict(), "load_end": list(load_end), "figures": figures},
                               indent=2, default=lambda value: value.item() if hasattr(value, "item") else str(value)))
    print(f"figures -> {path}")


if __name__ == "__main__":
    main()
