"""The package stack: each floor imports only floors below it (or its own), and no module imports
itself back through others. Read from the sources (ast), so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top. A module belongs to the longest prefix listed.
FLOORS = [
    # data_pipelines: the contract and the data set's layout, then what makes data, then the engines
    # that run it on Ray, then the jobs that users call
    ["data_pipelines.contract", "data_pipelines.ragged", "data_pipelines.engines", "data_pipelines.configured",
     "data_pipelines.manifest", "data_pipelines.dataset", "data_pipelines.micro_batch"],
    ["data_pipelines.history_store", "data_pipelines.world", "data_pipelines.ingest", "data_pipelines.streams"],
    ["data_pipelines.ray_engine"],
    ["data_pipelines.jobs"],
    ["recsys"],  # the model, training, learning and the replay
    ["export"],  # model files, model.json, pushes
    ["serving"],  # the ranker that serves them, its proto and client
    ["online"],  # the live loop
    ["bench"],
]
PACKAGES = ("data_pipelines", "recsys", "export", "serving", "online", "bench")


def _floor(module: str) -> int:
    best, floor = -1, None
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), i
    assert floor is not None, f"{module} is on no floor: add it to tests/test_layers.py FLOORS"
    return floor


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "build" in path.relative_to(ROOT).parts or path.name.endswith("_pb2.py") or "_pb2_" in path.name:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The project's modules `path` imports (`from a import b` counts a.b when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
    return out


def test_no_module_imports_a_floor_above_its_own():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        for target in _imports(path, modules, top_level_only=False):
            if _floor(target) > _floor(module):
                upward.append(f"{module} -> {target}")
    assert upward == [], "imports that run up the stack:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {m: {t for t in _imports(p, modules, top_level_only=True) if t in modules and t != m}
             for m, p in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of those modules.
    for m in graph:
        graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and t in modules)}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module not in state and visit(module, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)
