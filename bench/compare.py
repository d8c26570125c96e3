"""python -m bench.compare A.json B.json: two `make bench ARGS="bench.output=..."` runs side by side —
each machine's description, then every figure both runs have, with B / A.

Figures of one run are comparable with each other (one machine, one load); across machines, compare
the ratios each run measured within itself (the ranker against its peers, after against before,
TorchRec against plain PyTorch) before the absolute figures: a ratio travels, a millisecond does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def leaves(figures, path: str = "") -> dict[str, float]:
    """Every number of a nested run, by its path ("service/aoti/1/p99_ms")."""
    if isinstance(figures, dict):
        out: dict[str, float] = {}
        for key, value in figures.items():
            out |= leaves(value, f"{path}/{key}" if path else str(key))
        return out
    if isinstance(figures, (int, float)) and not isinstance(figures, bool):
        return {path: float(figures)}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in (args.a, args.b)]
    for name, run in zip("AB", runs):
        m = run["machine"]
        isa = ", ".join(f for f, present in m["features"].items() if present) or "none of the listed"
        print(f"{name}: {m['cpu']}, {m['cores']} cores, torch {m['torch_capability']}, {isa}; load "
              f"{m['load'][0]:.2f} -> {run['load_end'][0]:.2f}")
    a, b = (leaves(run["figures"]) for run in runs)
    shared = [k for k in a if k in b]
    width = max((len(k) for k in shared), default=10)
    print(f"{'figure':<{width}} {'A':>14} {'B':>14} {'B / A':>8}")
    for key in shared:
        ratio = f"{b[key] / a[key]:>8.2f}" if a[key] else f"{'-':>8}"
        print(f"{key:<{width}} {a[key]:>14.4g} {b[key]:>14.4g} {ratio}")
    only = len(a) + len(b) - 2 * len(shared)
    if only:
        print(f"({only} figures are in one run only)")


if __name__ == "__main__":
    main()
