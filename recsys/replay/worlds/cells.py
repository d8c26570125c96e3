"""The worlds a sweep runs: every combination of one value per axis (conf/worlds/*.yaml), each value
a label and the world overrides it makes."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from omegaconf import DictConfig


@dataclass(frozen=True)
class Cell:
    labels: tuple[str, ...]  # one value label per axis
    overrides: tuple[str, ...]  # the world overrides those values make

    @property
    def slug(self) -> str:
        return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-") for label in self.labels)


def cells_of(axes: DictConfig | dict, only: list | None = None) -> list[Cell]:
    """Every combination of one value per axis (axes: name -> {label: [world overrides]}), or the
    combinations listed in `only` (label lists, axis order)."""
    axes = {name: {str(label): [str(o) for o in overrides] for label, overrides in values.items()}
            for name, values in axes.items()}
    combos = list(itertools.product(*(list(values) for values in axes.values())))
    if only is not None:
        wanted = [tuple(str(x) for x in c) for c in only]
        unknown = [c for c in wanted if c not in combos]
        if unknown:
            raise ValueError(f"worlds.only lists combinations the axes do not make: {unknown}")
        combos = [c for c in combos if c in wanted]
    return [Cell(combo, tuple(o for name, label in zip(axes, combo) for o in axes[name][label])) for combo in combos]
