"""Peak memory and wall time of a command and every process it starts (Ray's raylet, object store
and workers included): `python -m bench.tree_memory -- make streams ARGS="engine=ray"`.

Samples the process tree every `--interval` seconds and sums each process's proportional set size
(PSS: a page shared by k processes counts 1/k to each, so the object store's shared memory is
counted once) and, as an upper bound, its resident set size (RSS). Linux only (/proc)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += _children(pid)
    return seen


def _memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return int(fields["Pss"].split()[0]), int(fields["Rss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def measure(command: list[str], interval: float = 0.5) -> dict:
    """Run `command` to its end; its exit status, wall seconds and peak PSS / RSS of its tree in GiB."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak_pss = peak_rss = processes = 0
    at_peak: dict[str, float] = {}
    while process.poll() is None:
        pids = _tree(process.pid)
        sizes = [_memory_kib(pid) for pid in pids]
        if sum(p for p, _ in sizes) > peak_pss:
            peak_pss = sum(p for p, _ in sizes)
            at_peak = {}
            for pid, (pss, _) in zip(pids, sizes):
                name = _name(pid)
                at_peak[name] = at_peak.get(name, 0) + round(pss / 2**20, 2)
            at_peak["_seconds"] = round(time.perf_counter() - start, 1)
        peak_rss = max(peak_rss, sum(r for _, r in sizes))
        processes = max(processes, len(sizes))
        time.sleep(interval)
    return {"returncode": process.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "peak_pss_gib": round(peak_pss / 2**20, 2), "peak_rss_gib": round(peak_rss / 2**20, 2),
            "max_processes": processes, "pss_gib_at_peak_by_process": at_peak}


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    load = os.getloadavg()[0]
    figures = {**measure(command, args.interval), "load_before": load, "command": " ".join(command)}
    print(json.dumps(figures), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    sys.exit(figures["returncode"])


if __name__ == "__main__":
    main()
