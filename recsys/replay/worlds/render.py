"""A sweep's report rendered: the Markdown table of every world's differences and, for a grid of two
or more axes, a heat map per figure."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from recsys.replay.figures import HEADLINE_PAIR

LABELS = {"normalized_top1_clicks": "normalized top-1 clicks", "highlight_top1_share": "highlight top-1 share",
          "overall_auc_ctr": "CTR AUC overall", "highlight_auc_ctr": "CTR AUC in highlights"}


def markdown(wc: DictConfig, axes: list[str], result: dict, minutes: float) -> str:
    base = f"Base world `{wc.world}`" + (f" with `{' '.join(wc.overrides)}`" if wc.overrides else "")
    lines = [f"# Replay over worlds: {wc.name}", "",
             f"{base}; axes {', '.join(f'`{a}`' for a in axes)}; replay overrides "
             f"`{' '.join(wc.replay)}`. {len(result['cells'])} worlds, {minutes:.0f} min of simulating, "
             f"streaming and replaying in all; per seed in reports/{wc.name}/<cell>/replay.md."]
    if not result["across"]:  # no world ran the stream pair: the peers alone
        return "\n".join(lines + _peers(axes, result) + [""])
    lines += [f"Every figure below is {result['pair']} (mean ± sd over model seeds).", "",
              "| " + " | ".join(axes) + " | " + " | ".join(LABELS.values()) + " |",
              "|" + "---|" * (len(axes) + len(LABELS))]
    for row in result["cells"]:
        cells = [f"{row['figures'][f]['diff']['mean']:+.4f} ± {row['figures'][f]['diff']['sd']:.4f}"
                 if f in row["figures"] else "—" for f in LABELS]
        lines.append("| " + " | ".join(row["labels"]) + " | " + " | ".join(cells) + " |")
    lines += ["", "Across worlds (the spread of the worlds' means; every world × model seed pooled; how many "
              "are positive):", "", "| figure | worlds' means | pooled | positive worlds | positive seeds |",
              "|---|---|---|---|---|"]
    for f, s in result["across"].items():
        lines.append(f"| {LABELS[f]} | {s['cell_means']['mean']:+.4f} ± {s['cell_means']['sd']:.4f} | "
                     f"{s['pooled_seeds']['mean']:+.4f} ± {s['pooled_seeds']['sd']:.4f} | "
                     f"{s['positive_cells']} / {s['cell_means']['n']} | {s['positive_seeds']} / "
                     f"{s['pooled_seeds']['n']} |")
    lines += ["", "Each world's streams beside each other (mean over model seeds):", "",
              "| " + " | ".join(axes) + " | " + " | ".join(f"{LABELS[f]}: {s}" for f in
                                                       ("normalized_top1_clicks", "highlight_top1_share")
                                                       for s in (*HEADLINE_PAIR, "truth") if
                                                       not (f == "normalized_top1_clicks" and s == "truth")) + " |",
              "|" + "---|" * (len(axes) + 5)]
    for row in result["cells"]:
        f1, f2 = row["figures"].get("normalized_top1_clicks"), row["figures"].get("highlight_top1_share")
        if f1 is None or f2 is None:
            continue
        cells = [f"{f1[s]:.3f}" for s in HEADLINE_PAIR] + [f"{f2[s]:.1%}" for s in HEADLINE_PAIR] \
            + [f"{f2.get('truth_optimal', float('nan')):.1%}"]
        lines.append("| " + " | ".join(row["labels"]) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines + _peers(axes, result) + [""])


def _diff(d: dict) -> str:
    """A paired difference: mean ± sd over model seeds, or the one seed's value."""
    return f"{d['mean']:+.3f}" + (f" ± {d['sd']:.3f}" if len(d["per_seed"]) > 1 else "")


def _peers(axes: list[str], result: dict) -> list[str]:
    """realtime − each peer in normalized top-1 clicks per world and across worlds; the ceiling's
    share of the gap to the truth."""
    across = result.get("across_peers")
    if not across:
        return []
    peers = list(across)
    lines = ["", "The project's model against its peers, normalized top-1 clicks (realtime; realtime − peer, "
             "mean ± sd over model seeds where there are several)" + ("; the ceiling's share of the gap to the truth" if
                                              "across_ceiling_gap_closed" in result else "") + ":", "",
             "| " + " | ".join(axes) + " | realtime | " + " | ".join(f"− {p}" for p in peers)
             + (" | ceiling closes |" if "across_ceiling_gap_closed" in result else " |"),
             "|" + "---|" * (len(axes) + 1 + len(peers) + ("across_ceiling_gap_closed" in result))]
    for row in result["cells"]:
        if "peers" not in row:
            continue
        cells = [f"{row['realtime_normalized_top1_clicks']:.3f}"]
        cells += [_diff(row["peers"][p]["diff"]) if p in row["peers"] else "—" for p in peers]
        if "across_ceiling_gap_closed" in result:
            gap = row.get("ceiling_gap_closed")
            cells.append("—" if gap is None else f"{gap['mean']:.0%}")
        lines.append("| " + " | ".join(row["labels"]) + " | " + " | ".join(cells) + " |")
    lines += ["", "| realtime − peer | worlds' means | pooled | positive worlds | positive seeds |",
              "|---|---|---|---|---|"]
    for p, s in across.items():
        lines.append(f"| {p} | {s['cell_means']['mean']:+.4f} ± {s['cell_means']['sd']:.4f} | "
                     f"{s['pooled_seeds']['mean']:+.4f} ± {s['pooled_seeds']['sd']:.4f} | "
                     f"{s['positive_cells']} / {s['cell_means']['n']} | {s['positive_seeds']} / "
                     f"{s['pooled_seeds']['n']} |")
    gap = result.get("across_ceiling_gap_closed")
    if gap:
        lines += ["", f"The ceiling closes {gap['cell_means']['mean']:.0%} ± {gap['cell_means']['sd']:.0%} of "
                  f"realtime's gap to the truth across worlds ({gap['positive_seeds']} of {gap['pooled_seeds']['n']} "
                  "world × seed pairs above 0)."]
    return lines


def plot_heat_maps(axes: list[str], result: dict, path: Path) -> Path | None:
    """One heat map per figure (rows: the first axis with several values, columns: the second),
    one panel per value of any further axes; None with fewer than two such axes."""
    values = [list(dict.fromkeys(r["labels"][i] for r in result["cells"])) for i in range(len(axes))]
    varying = [i for i, v in enumerate(values) if len(v) > 1]
    if len(varying) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_axis, cols_axis, rest = varying[0], varying[1], [i for i in range(len(axes)) if i not in varying[:2]]
    facets = list(itertools.product(*(values[i] for i in rest))) or [()]
    figures = ["normalized_top1_clicks", "highlight_top1_share"]
    fig, grid = plt.subplots(len(figures), len(facets), figsize=(4.2 * len(facets), 3.6 * len(figures)), squeeze=False)
    for fi, figure in enumerate(figures):
        limit = max([abs(r["figures"][figure]["diff"]["mean"]) for r in result["cells"] if figure in r["figures"]]
                    + [1e-6])
        for ci, facet in enumerate(facets):
            ax = grid[fi][ci]
            table = np.full((len(values[rows_axis]), len(values[cols_axis])), np.nan)
            for r in result["cells"]:
                if figure in r["figures"] and tuple(r["labels"][i] for i in rest) == facet:
                    table[values[rows_axis].index(r["labels"][rows_axis]),
                          values[cols_axis].index(r["labels"][cols_axis])] = r["figures"][figure]["diff"]["mean"]
            image = ax.imshow(table, cmap="RdBu", vmin=-limit, vmax=limit)
            for (y, x), v in np.ndenumerate(table):
                ax.text(x, y, "—" if np.isnan(v) else f"{v:+.3f}", ha="center", va="center", fontsize=9)
            ax.set_xticks(range(len(values[cols_axis])), values[cols_axis])
            ax.set_yticks(range(len(values[rows_axis])), values[rows_axis])
            ax.set_xlabel(axes[cols_axis])
            ax.set_ylabel(axes[rows_axis])
            where = ", ".join(f"{axes[i]} {v}" for i, v in zip(rest, facet))
            ax.set_title(f"{result['pair']}: {LABELS[figure]}" + (f"\n{where}" if where else ""), fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
