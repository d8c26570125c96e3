"""Verify that the installed training stack is the pinned CPU build (run by `make setup`).

The failure this guards against is silent: torchrec declares the CUDA `fbgemm-gpu` as a
dependency, and a plain `torch` resolves to a CUDA wheel. Either one installs fine on a CPU
machine and only breaks later, at import or at the first embedding lookup.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys


def installed_distributions() -> set[str]:
    # Normalise as PEP 503 does: the CPU wheel calls itself "fbgemm_gpu-cpu".
    return {re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower()) for dist in md.distributions()}


def check_cpu_stack() -> list[str]:
    """Return a list of problems; empty when the CPU stack is correctly installed."""
    problems: list[str] = []
    import torch

    if not torch.__version__.endswith("+cpu"):
        problems.append(f"torch {torch.__version__} is not the CPU build (expected a '+cpu' version)")
    names = installed_distributions()
    if "fbgemm-gpu" in names:
        problems.append("the CUDA package 'fbgemm-gpu' is installed; only 'fbgemm-gpu-cpu' belongs on a CPU machine")
    if "fbgemm-gpu-cpu" not in names:
        problems.append("'fbgemm-gpu-cpu' is not installed")
    try:
        import fbgemm_gpu  # noqa: F401  (registers the fbgemm operators)
        import torchrec  # noqa: F401
    except Exception as exc:  # any import failure is a broken install
        problems.append(f"importing fbgemm_gpu/torchrec failed: {exc!r}")
        return problems
    if not hasattr(torch.ops.fbgemm, "asynchronous_complete_cumsum"):
        problems.append("fbgemm operators are not registered with torch")
    try:
        import lightgbm  # noqa: F401  (its wheel loads the system's libgomp.so.1)
    except OSError as exc:
        problems.append(f"LightGBM cannot load its OpenMP runtime ({exc}); on Debian: apt-get install libgomp1 "
                        "(g++, which make setup-system installs, brings it)")
    return problems


def main() -> int:
    problems = check_cpu_stack()
    if problems:
        for problem in problems:
            print(f"stack check: {problem}", file=sys.stderr)
        return 1
    import torch

    print(f"stack ok: torch {torch.__version__}, torchrec {md.version('torchrec')}, "
          f"fbgemm-gpu-cpu {md.version('fbgemm-gpu-cpu')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
