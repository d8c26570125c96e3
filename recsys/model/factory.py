"""Building the model: the architecture (conf/model), the GSUs and contrastive terms (conf/cross)
and the shards' manifest (tasks, table sizes, side bucket rows, dense width) -> MomentCrossModel.
A peer architecture (conf/model/dlrm.yaml, dcn_v2.yaml: recsys/model/peers.py) gets the same lookups
with its own head.

Training, replay, export, the benchmarks and the tests all build it here, and whether a contrastive
term is on is decided here only (`ContrastiveSpec.weights_for`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from data_pipelines.contract import SIDE_FIELDS
from data_pipelines.streams.features import gsu_length_of
from recsys.model.moment_cross import EmbeddingLookup, MomentCrossHead, MomentCrossModel
from recsys.model.peers import PeerHead, PeerSpec

ANCHOR = "mixed"  # every contrastive term aligns another GSU with this one (eq. 6)


@dataclass(frozen=True)
class ContrastiveSpec:
    """conf/cross/*.yaml `contrastive`."""

    enabled: bool
    temperature: float
    weights: dict[str, float]  # GSU -> weight of InfoNCE(mixed, GSU)

    def weights_for(self, gsu_names: list[str]) -> dict[str, float]:
        """The terms that are on for a model with `gsu_names`: enabled, a nonzero weight, both the
        GSU and the anchor present."""
        if not self.enabled or ANCHOR not in gsu_names:
            return {}
        return {g: float(w) for g, w in self.weights.items() if w and g in gsu_names and g != ANCHOR}


@dataclass(frozen=True)
class CrossSpec:
    """conf/cross/*.yaml: the GSUs the model uses (ablations remove some) and the contrastive terms."""

    gsu_names: list[str]
    contrastive: ContrastiveSpec

    def contrastive_weights(self) -> dict[str, float]:
        return self.contrastive.weights_for(list(self.gsu_names))


@dataclass(frozen=True)
class ModelSpec:
    """conf/model/*.yaml: the architecture. What depends on the data comes from the manifest."""

    seq_len: int  # elements per GSU used (<= the gsu_length the shards were written with)
    embedding_dim: int
    side_dim: int
    attention_dim: int
    tower_dims: list[int]
    multitask: dict  # PLE arguments: n_levels (1 = CGC), n_shared_experts, n_task_experts, expert_dims, dropout
    pooled_tables: dict[str, list[str]]  # pooled table -> the features sharing it
    score_weights: dict[str, float]  # task -> w_t in prod_t (1 + p_t) ** w_t (absent: 1)
    # The wide part: a bias per task on the logits for each target item / author row ([]: none).
    bias_fields: list[str] = field(default_factory=list)


def build_head(spec: ModelSpec | PeerSpec, cross: CrossSpec, manifest: Mapping) -> MomentCrossHead | PeerHead:
    if spec.seq_len > gsu_length_of(manifest):
        raise ValueError(f"model.seq_len={spec.seq_len} exceeds the {gsu_length_of(manifest)} elements per GSU "
                         f"the shards hold; lower it or rebuild the shards with a larger features.gsu_length")
    if isinstance(spec, PeerSpec):
        return PeerHead(spec, list(manifest["tasks"]), list(cross.gsu_names), len(manifest["dense_features"]))
    return MomentCrossHead(
        tasks=list(manifest["tasks"]), pooled_features=[f for fs in spec.pooled_tables.values() for f in fs],
        gsu_names=list(cross.gsu_names), seq_len=spec.seq_len, n_dense=len(manifest["dense_features"]),
        embedding_dim=spec.embedding_dim, side_rows=[manifest["side_rows"][f] for f in SIDE_FIELDS],
        side_dim=spec.side_dim, attention_dim=spec.attention_dim, multitask=dict(spec.multitask),
        tower_dims=list(spec.tower_dims), contrastive_weights=cross.contrastive_weights(),
        contrastive_temperature=cross.contrastive.temperature, score_weights=dict(spec.score_weights))


def build_model(spec: ModelSpec | PeerSpec, cross: CrossSpec, manifest: Mapping,
                embedding_device: torch.device | str = "meta") -> MomentCrossModel:
    """Tables on `embedding_device` (meta: DistributedModelParallel materialises them)."""
    lookup = EmbeddingLookup(manifest["table_sizes"], {t: list(fs) for t, fs in spec.pooled_tables.items()},
                             spec.embedding_dim, spec.seq_len, len(cross.gsu_names), embedding_device,
                             bias_fields=tuple(spec.bias_fields), n_tasks=len(manifest["tasks"]))
    return MomentCrossModel(lookup, build_head(spec, cross, manifest))


def specs(cfg: DictConfig) -> tuple[ModelSpec | PeerSpec, CrossSpec]:
    """The `model` and `cross` nodes of a job's config as specs."""
    return instantiate(cfg.model, _convert_="all"), instantiate(cfg.cross, _convert_="all")


def model_from_config(cfg: DictConfig, manifest: Mapping, embedding_device: torch.device | str = "meta"
                      ) -> MomentCrossModel:
    return build_model(*specs(cfg), manifest, embedding_device)
