"""How a sweep compares its worlds: per world, each figure's realtime − fast_slow difference (over
model seeds); across worlds, the spread of the worlds' means and of every (world, seed) difference."""

from __future__ import annotations

import numpy as np

from recsys.replay.figures import HEADLINE_PAIR
from recsys.replay.worlds.cells import Cell

# The figures compared across worlds: the summary's paired realtime − fast_slow differences.
PAIRED = {"normalized_top1_clicks": "paired_diff_normalized_top1_clicks",
          "highlight_top1_share": "paired_diff_highlight_top1_share",
          "overall_auc_ctr": "paired_diff_overall_auc_ctr",
          "highlight_auc_ctr": "paired_diff_highlight_auc_ctr"}


def spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def compare(cells: list[Cell], summaries: list[dict]) -> dict:
    """Per cell, each figure's realtime − fast_slow difference (mean and sd over model seeds, per
    seed) and each stream's value; over all cells, the spread of the cells' means and of every
    (world, model seed) difference pooled."""
    a, b = HEADLINE_PAIR
    per_cell, across = [], {}
    for cell, summary in zip(cells, summaries):
        row = {"labels": list(cell.labels), "overrides": list(cell.overrides), "figures": {}}
        for figure, paired in PAIRED.items():
            if paired not in summary:
                continue
            values = summary[figure]
            truth = {"truth_optimal": values["truth_optimal"]} if "truth_optimal" in values else {}
            row["figures"][figure] = {"diff": summary[paired], a: values[a], b: values[b], **truth}
        per_cell.append(row)
    for figure in PAIRED:
        rows = [r["figures"][figure] for r in per_cell if figure in r["figures"]]
        if rows:
            across[figure] = {"cell_means": spread([r["diff"]["mean"] for r in rows]),
                              "pooled_seeds": spread([x for r in rows for x in r["diff"]["per_seed"]]),
                              "positive_cells": sum(r["diff"]["mean"] > 0 for r in rows),
                              "positive_seeds": sum(x > 0 for r in rows for x in r["diff"]["per_seed"])}
    return {"pair": f"{a} - {b}", "cells": per_cell, "across": across}
