"""The Moment&Cross ranking model.

  pooled ids --EBC--> [B, F*d]      target live + author, GSU elements --EBC (position bags)--> [B, L, d]
                 \\                                  |
                  \\                    ESU target attention per GSU (eq. 7); InfoNCE mixed vs others (eq. 6)
                   \\                                |
                    +---- concat with dense features + ESU outputs ----> CGC / PLE ----> one tower per task
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.model.cross import TargetAttention, info_nce, masked_mean
from recsys.model.losses import ranking_score
from recsys.model.inputs import SIDE_FIELDS, TARGET_SEQUENCE_FEATURES, ModelInput
from recsys.model.mlp import MLP
from recsys.model.multitask import PLE

QUERY_POOLED_FEATURES = ("category", "live_type")  # live-side ids that join the ESU query


@dataclass(frozen=True)
class ContrastiveConfig:
    temperature: float = 0.1
    weights: dict[str, float] | None = None  # GSU -> weight of InfoNCE(mixed, GSU); 0 or absent = off


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T]
    contrastive: dict[str, torch.Tensor]  # GSU -> InfoNCE loss (already unweighted)


class MomentCrossModel(nn.Module):
    def __init__(
        self,
        tasks: list[str],
        table_sizes: dict[str, int],
        pooled_tables: dict[str, list[str]],  # table -> pooled features that share it
        gsu_names: list[str],  # the GSUs the model uses (ablations remove some)
        seq_len: int,
        n_dense: int,
        embedding_dim: int = 32,
        side_dim: int = 8,
        attention_dim: int = 32,
        multitask: dict | None = None,  # PLE arguments: n_levels (1 = CGC), experts, dims, dropout
        tower_dims: list[int] = (64,),
        contrastive: ContrastiveConfig | dict = ContrastiveConfig(),
        score_weights: dict[str, float] | None = None,  # task -> w_t in prod_t (1 + p_t) ** w_t (default 1)
        embedding_device: torch.device | str = "cpu",
    ):
        super().__init__()
        self.tasks, self.gsu_names, self.seq_len = list(tasks), list(gsu_names), seq_len
        self.pooled_features = [f for features in pooled_tables.values() for f in features]
        self.sequence_features = [*TARGET_SEQUENCE_FEATURES, *(f"{g}.{f}" for g in self.gsu_names for f in ("item", "author"))]
        device = torch.device(embedding_device)
        self.pooled_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=table, embedding_dim=embedding_dim, num_embeddings=table_sizes[table],
                               feature_names=list(features), pooling=PoolingType.SUM)
            for table, features in pooled_tables.items()], device=device)
        # Target ids and every GSU element share the item and author tables.
        self.sequence_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="item", embedding_dim=embedding_dim, num_embeddings=table_sizes["item"],
                               feature_names=["live_item", *(f"{g}.item" for g in self.gsu_names)],
                               pooling=PoolingType.SUM),
            EmbeddingBagConfig(name="author", embedding_dim=embedding_dim, num_embeddings=table_sizes["author"],
                               feature_names=["author_id", *(f"{g}.author" for g in self.gsu_names)],
                               pooling=PoolingType.SUM)], device=device)
        # Only with some GSU: a parameter that never gets a gradient is an error under DDP.
        self.side_embeddings = nn.ModuleList(nn.Embedding(18, side_dim, padding_idx=0) for _ in SIDE_FIELDS
                                             if self.gsu_names)
        element_dim = 2 * embedding_dim + len(SIDE_FIELDS) * side_dim
        query_dim = (len(TARGET_SEQUENCE_FEATURES) + len(QUERY_POOLED_FEATURES)) * embedding_dim
        part_dims = [embedding_dim, embedding_dim, *(side_dim for _ in SIDE_FIELDS)]  # item, author, side info
        self.attention = nn.ModuleDict({g: TargetAttention(query_dim, element_dim, attention_dim, part_dims)
                                        for g in self.gsu_names})
        if isinstance(contrastive, dict):
            contrastive = ContrastiveConfig(**contrastive)
        self.contrastive_temperature = contrastive.temperature
        self.contrastive_gsus = [g for g, w in (contrastive.weights or {}).items()
                                 if w and g in self.gsu_names and g != "mixed" and "mixed" in self.gsu_names]
        input_dim = (len(self.pooled_features) + len(TARGET_SEQUENCE_FEATURES)) * embedding_dim + n_dense \
            + len(self.gsu_names) * attention_dim
        self.dense_norm = nn.BatchNorm1d(n_dense)
        self.multitask = PLE(input_dim, len(self.tasks), **(multitask or {}))
        weights = score_weights or {}
        self.register_buffer("score_weights", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))
        self.towers = nn.ModuleList(MLP(self.multitask.output_dim, list(tower_dims), output_dim=1)
                                    for _ in self.tasks)

    def forward(self, x: ModelInput) -> ModelOutput:
        pooled, seq = self.embed(x)
        return ModelOutput(logits=self.logits(pooled, seq, side=x.side, mask=x.mask, dense=x.dense),
                           contrastive=self.contrastive_losses(seq, x.mask))

    def embed(self, x: ModelInput) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return self.lookup(x.pooled, x.sequence, x.dense.shape[0])

    def lookup(self, pooled_ids: KeyedJaggedTensor, sequence_ids: KeyedJaggedTensor,
               batch_size: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Pooled features -> [B, d]; target ids and GSU elements -> [B, L, d] (target at position 0)."""
        pooled = self.pooled_ebc(pooled_ids).to_dict()
        # Keys from the model, not from the dict: the export traces this with torch.fx.
        by_key = self.sequence_ebc(sequence_ids).to_dict()
        seq = {k: by_key[k].view(batch_size, self.seq_len, -1) for k in self.sequence_features}
        return pooled, seq

    def logits(self, pooled: dict[str, torch.Tensor], seq: dict[str, torch.Tensor], side: torch.Tensor,
               mask: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Everything after the embedding lookups that serving needs: ESU, PLE/CGC, towers -> [B, T]."""
        target = [seq[name][:, 0] for name in TARGET_SEQUENCE_FEATURES]  # position 0 holds the target
        query = torch.cat(target + [pooled[f] for f in QUERY_POOLED_FEATURES], dim=-1)
        side_all = [emb(side[..., j]) for j, emb in enumerate(self.side_embeddings)]  # each [B, G, L, s]
        esu = []
        for g, name in enumerate(self.gsu_names):
            elements = [seq[f"{name}.item"], seq[f"{name}.author"], *(e[:, g] for e in side_all)]  # [B, L, *]
            esu.append(self.attention[name](query, elements, mask[:, g]))
        features = torch.cat([pooled[f] for f in self.pooled_features] + target
                             + [self.dense_norm(dense)] + esu, dim=-1)
        per_task = self.multitask(features)
        return torch.cat([tower(h) for tower, h in zip(self.towers, per_task)], dim=-1)  # [B, T]

    def contrastive_losses(self, seq: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """InfoNCE(mixed, GSU) for each GSU with a contrastive weight (training only)."""
        if not self.contrastive_gsus:
            return {}
        mixed = self.gsu_names.index("mixed")
        has_mixed = mask[:, mixed].any(-1)
        mixed_mean = masked_mean(seq["mixed.item"], mask[:, mixed])
        losses = {}
        for name in self.contrastive_gsus:
            g = self.gsu_names.index(name)
            both = has_mixed & mask[:, g].any(-1)
            losses[name] = info_nce(mixed_mean, masked_mean(seq[f"{name}.item"], mask[:, g]),
                                    self.contrastive_temperature, both)
        return losses

    def score(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The ranking score prod_t (1 + p_t) ** w_t of [B, T] probabilities -> [B]."""
        return ranking_score(probabilities, self.score_weights)
