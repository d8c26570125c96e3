"""How a sweep compares its worlds: per world, each figure's realtime − fast_slow difference (over
model seeds); across worlds, the spread of the worlds' means and of every (world, seed) difference.
Where the replays ran peers (conf/replay.yaml `peers`), the same for realtime − each peer in
normalized top-1 clicks, and the share of realtime's gap to the truth the ceiling closes."""

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
        peers = summary.get("paired_diff_vs_peers", {})
        if peers:
            row["peers"] = {p: {"diff": d, "value": summary["peer_normalized_top1_clicks"][p]} for p, d in peers.items()}
            row["realtime_normalized_top1_clicks"] = summary["normalized_top1_clicks"]["realtime"]
        if "ceiling_gap_closed" in summary:
            row["ceiling_gap_closed"] = summary["ceiling_gap_closed"]
        per_cell.append(row)
    for figure in PAIRED:
        rows = [r["figures"][figure] for r in per_cell if figure in r["figures"]]
        if rows:
            across[figure] = _across([r["diff"] for r in rows])
    peer_names = list(dict.fromkeys(p for r in per_cell for p in r.get("peers", {})))
    across_peers = {}
    for peer in peer_names:
        diffs = [r["peers"][peer]["diff"] for r in per_cell if peer in r.get("peers", {})]
        across_peers[peer] = _across(diffs)
    gaps = [r["ceiling_gap_closed"] for r in per_cell if "ceiling_gap_closed" in r]
    return {"pair": f"{a} - {b}", "cells": per_cell, "across": across,
            **({"across_peers": across_peers} if across_peers else {}),
            **({"across_ceiling_gap_closed": _across(gaps)} if gaps else {})}


def _across(diffs: list[dict]) -> dict:
    """Paired differences of several worlds ({mean, sd, per_seed} each) taken together."""
    return {"cell_means": spread([d["mean"] for d in diffs]),
            "pooled_seeds": spread([x for d in diffs for x in d["per_seed"]]),
            "positive_cells": sum(d["mean"] > 0 for d in diffs),
            "positive_seeds": sum(x > 0 for d in diffs for x in d["per_seed"])}
