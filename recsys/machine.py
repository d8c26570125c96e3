"""The machine a job runs on, as much as its figures depend on it: the CPU, the instruction sets that
decide how fast float32 and bfloat16 products run here, the cores, torch's threads and CPU kernel
level, and the load. Benchmarks print it before their figures; `make train` and the replay read it
to warn about bfloat16 on a CPU that would emulate it. One reader of /proc/cpuinfo for all of them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
# Instruction sets by the names a figure's reader looks for -> the /proc/cpuinfo flags that give them
# (x86 `flags`, Arm `Features`).
FEATURES = {"AVX2": ("avx2",), "AVX-512F": ("avx512f",), "AVX-512 BF16": ("avx512_bf16",),
            "AMX": ("amx_bf16", "amx_tile")}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # bfloat16 products in hardware, not emulated


def cpu_flags(cpuinfo: str) -> set[str]:
    """Every flag of the `flags` / `Features` lines of a /proc/cpuinfo text."""
    return {f for line in cpuinfo.splitlines() if line.startswith(("flags", "Features"))
            for f in line.split(":", 1)[-1].split()}


def multiplies_bf16_natively(flags: set[str]) -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (without, oneDNN converts to float32 and a
    bf16-mixed step runs slower than a 32-true one: 5x, measured on an AVX2 EPYC)."""
    return any(f in flags for f in NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int  # online
    usable_cores: int  # this process may run on (affinity)
    features: dict[str, bool]
    native_bf16: bool  # multiplies_bf16_natively
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): the kernels torch picked
    torch_threads: int
    load: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))  # 1, 5, 15 minutes

    def lines(self) -> list[str]:
        """Two lines for the top of a benchmark's output."""
        isa = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in self.features.items())
        return [f"machine: {self.cpu}, {self.cores} cores ({self.usable_cores} usable), torch CPU capability "
                f"{self.torch_capability}, {self.torch_threads} torch threads; {isa}; bfloat16 products "
                f"{'native' if self.native_bf16 else 'emulated'}",
                f"load average: {self.load[0]:.2f} {self.load[1]:.2f} {self.load[2]:.2f}"]

    def as_dict(self) -> dict:
        return asdict(self)


def describe(cpuinfo_path: Path = CPUINFO) -> Machine:
    """This machine, now. Without /proc/cpuinfo (not Linux) the CPU is 'unknown' and no feature is claimed."""
    text = cpuinfo_path.read_text() if cpuinfo_path.exists() else ""
    flags = cpu_flags(text)
    models = [line.split(":", 1)[1].strip() for line in text.splitlines()
              if line.startswith(("model name", "CPU part", "Hardware"))]
    return Machine(cpu=models[0] if models else "unknown", cores=os.cpu_count() or 1,
                   usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                   features={name: any(f in flags for f in wanted) for name, wanted in FEATURES.items()},
                   native_bf16=multiplies_bf16_natively(flags),
                   torch_capability=torch.backends.cpu.get_cpu_capability(), torch_threads=torch.get_num_threads(),
                   load=os.getloadavg())
