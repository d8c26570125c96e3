"""`make replay-worlds`: the grid of worlds it runs and how it compares them (not the replays
themselves, which test_replay covers)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.replay.worlds.cells import cells_of
from recsys.replay.worlds.compare import compare
from recsys.replay.worlds.render import markdown, plot_heat_maps
from tests.conftest import compose_config


def test_cells_are_every_combination_of_the_axes_or_those_listed():
    axes = {"boost": {"2x": ["world.highlight.peak_ctr_boost=2"], "6x": ["world.highlight.peak_ctr_boost=6"]},
            "duration": {"1-3 min": ["world.highlight.duration_min_min=1", "world.highlight.duration_max_min=3"],
                         "2-6 min": ["world.highlight.duration_min_min=2", "world.highlight.duration_max_min=6"]}}
    cells = cells_of(axes)
    assert [c.labels for c in cells] == [("2x", "1-3 min"), ("2x", "2-6 min"), ("6x", "1-3 min"), ("6x", "2-6 min")]
    assert cells[1].overrides == ("world.highlight.peak_ctr_boost=2", "world.highlight.duration_min_min=2",
                                  "world.highlight.duration_max_min=6")
    assert cells[1].slug == "2x_2-6-min"
    assert [c.labels for c in cells_of(axes, [["6x", "1-3 min"]])] == [("6x", "1-3 min")]
    with pytest.raises(ValueError, match="do not make"):
        cells_of(axes, [["3x", "1-3 min"]])


def test_the_shipped_sweeps_name_valid_world_overrides():
    for name, n in (("seeds", 3), ("highlight_shape", 12)):
        wc = compose_config("replay_worlds", [f"worlds={name}"]).worlds
        cells = cells_of(wc.axes, None if wc.only is None else list(wc.only))
        assert len(cells) == n
        for cell in cells:  # every cell's world composes: the overrides name real keys
            compose_config("simulate", [f"world={wc.world}", *wc.overrides, *cell.overrides])


def _summary(diffs: list[float], realtime: float) -> dict:
    mean = sum(diffs) / len(diffs)
    paired = {"mean": mean, "sd": 0.0, "per_seed": diffs}
    return {"normalized_top1_clicks": {"realtime": realtime, "fast_slow": realtime - mean},
            "paired_diff_normalized_top1_clicks": paired,
            "highlight_top1_share": {"realtime": 0.2, "fast_slow": 0.1, "truth_optimal": 0.4},
            "paired_diff_highlight_top1_share": {"mean": 0.1, "sd": 0.0, "per_seed": [0.1] * len(diffs)},
            "overall_auc_ctr": {"realtime": 0.66, "fast_slow": 0.64},
            "paired_diff_overall_auc_ctr": {"mean": 0.02, "sd": 0.0, "per_seed": [0.02] * len(diffs)}}


def test_worlds_are_compared_by_their_means_and_by_every_seed_pooled(tmp_path):
    axes = {"boost": {"2x": [], "6x": []}, "duration": {"short": [], "long": []}}
    cells = cells_of(axes)
    result = compare(cells, [_summary([0.1, 0.3], 0.5), _summary([-0.2], 0.4), _summary([0.0, 0.2], 0.6),
                             _summary([0.4], 0.7)])
    across = result["across"]["normalized_top1_clicks"]
    assert across["cell_means"]["mean"] == pytest.approx((0.2 - 0.2 + 0.1 + 0.4) / 4)
    assert across["pooled_seeds"]["mean"] == pytest.approx((0.1 + 0.3 - 0.2 + 0.0 + 0.2 + 0.4) / 6)
    assert across["positive_cells"] == 3 and across["positive_seeds"] == 4
    assert "highlight_auc_ctr" not in result["across"]  # a figure no world reported is left out
    assert result["cells"][0]["figures"]["highlight_top1_share"]["truth_optimal"] == 0.4
    assert plot_heat_maps(list(axes), result, tmp_path / "grid.png").stat().st_size > 0
    from omegaconf import OmegaConf

    wc = OmegaConf.create({"name": "grid", "world": "busy", "overrides": ["world.span_hours=3"],
                           "replay": ["replay.seeds=[0]"]})
    text = markdown(wc, list(axes), result, 12.0)
    assert "Base world `busy` with `world.span_hours=3`; axes `boost`, `duration`;" in text
    assert "| 2x | short | +0.2000 ± 0.0000 | +0.1000 ± 0.0000 | +0.0200 ± 0.0000 | — |" in text
    assert "| normalized top-1 clicks | +0.1250 ± 0.2500 |" in text
    assert plot_heat_maps(["seed"], compare(cells_of({"seed": {"0": [], "1": []}}), [_summary([0.1], 0.5)] * 2),
                          tmp_path / "none.png") is None  # one axis: a table, no heat map


def test_peers_and_the_ceiling_are_compared_across_worlds():
    def with_peers(summary: dict, dlrm: list[float], gap: float) -> dict:
        return {**summary, "peer_normalized_top1_clicks": {"dlrm": 0.4},
                "paired_diff_vs_peers": {"dlrm": {"mean": float(np.mean(dlrm)), "sd": 0.0, "per_seed": dlrm}},
                "ceiling_gap_closed": {"mean": gap, "sd": 0.0, "per_seed": [gap]}}

    cells = cells_of({"world_seed": {"0": [], "1": [], "2": []}})
    result = compare(cells, [with_peers(_summary([0.1], 0.5), [0.05], 0.4),
                             with_peers(_summary([0.1], 0.5), [-0.01], 0.2), _summary([0.1], 0.5)])
    dlrm = result["across_peers"]["dlrm"]
    assert dlrm["cell_means"]["mean"] == pytest.approx(0.02) and dlrm["cell_means"]["n"] == 2  # a world without peers
    assert dlrm["positive_cells"] == 1 and dlrm["positive_seeds"] == 1
    assert result["across_ceiling_gap_closed"]["cell_means"]["mean"] == pytest.approx(0.3)
    from omegaconf import OmegaConf

    text = markdown(OmegaConf.create({"name": "seeds", "world": "busy", "overrides": [], "replay": []}),
                    ["world_seed"], result, 30.0)
    assert "| world_seed | realtime | − dlrm | ceiling closes |" in text
    assert "| 0 | 0.500 | +0.050 | 40% |" in text  # one model seed: no spread to show
    assert "| dlrm | +0.0200 ± 0.0424 |" in text
