"""The Moment&Cross ranking model.

  pooled ids --EBC--> [B, F*d]      target live + author, GSU elements --EBC (bags of one)--> [B, 2d], [B, L, S*d]
                 \\                                  |
                  \\                    ESU target attention per GSU (eq. 7); InfoNCE mixed vs others (eq. 6)
                   \\                                |
                    +---- concat with dense features + ESU outputs ----> CGC / PLE ----> one tower per task

The embedding outputs stay in the layout the kernels write ([B, features * d]; the targets [B, 2d]
and the sequences [B, L, slots * d] from one split); nothing downstream splits them per feature
(recsys/model/cross.py says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.fx.tracer import is_fx_tracing
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.model.cross import TargetAttention, info_nce
from recsys.model.losses import ranking_score
from recsys.model.inputs import (SEQUENCE_ID_FIELDS, SIDE_FIELDS, TARGET_SEQUENCE_FEATURES, ModelInput,
                                 embedding_slots)
from recsys.model.mlp import MLP
from recsys.model.multitask import PLE

QUERY_POOLED_FEATURES = ("category", "live_type")  # live-side ids that join the ESU query
SIDE_ROWS = 18  # rows of each side-bucket table: 0 = padding, buckets 1..17


@dataclass(frozen=True)
class ContrastiveConfig:
    temperature: float = 0.1
    weights: dict[str, float] | None = None  # GSU -> weight of InfoNCE(mixed, GSU); 0 or absent = off


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T]
    contrastive: dict[str, torch.Tensor]  # GSU -> InfoNCE loss (already unweighted)


def ordered_values(embeddings: KeyedTensor, keys: list[str]) -> torch.Tensor:
    """[B, sum of dims] with the features in `keys` order. A sharded collection returns them
    grouped by sharding type and rank (two processes, table-wise: one rank's tables first); then
    they are regrouped, one copy. The export traces an unsharded collection: its order is the
    config's."""
    if is_fx_tracing() or embeddings.keys() == keys:
        return embeddings.values()
    return KeyedTensor.regroup([embeddings], [keys])[0]


def in_autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """`x` in the autocast dtype when autocast is on for its device (mixed-precision training).
    The sequence embeddings are the largest tensor the layers read, several times: one cast here
    rather than one per product, forward and backward. The export traces without autocast."""
    if is_fx_tracing() or not torch.is_autocast_enabled(x.device.type):
        return x
    # copy_ into a new tensor rather than .to(): measured here, .to() of a [1024, 64, 320] tensor
    # took 5.7 ms against 2.5 ms, and copy_ is as differentiable.
    return torch.empty(x.shape, dtype=torch.get_autocast_dtype(x.device.type), device=x.device).copy_(x)


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
        self.embedding_dim = embedding_dim
        self.pooled_features = [f for features in pooled_tables.values() for f in features]
        self.sequence_features = list(SEQUENCE_ID_FIELDS)
        device = torch.device(embedding_device)
        self.pooled_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=table, embedding_dim=embedding_dim, num_embeddings=table_sizes[table],
                               feature_names=list(features), pooling=PoolingType.SUM)
            for table, features in pooled_tables.items()], device=device)
        # The target live and every GSU element share the item table (authors likewise), as bags of one
        # feature per table (recsys/model/inputs.py).
        self.sequence_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=field, embedding_dim=embedding_dim, num_embeddings=table_sizes[field],
                               feature_names=[field], pooling=PoolingType.SUM)
            for field in SEQUENCE_ID_FIELDS], device=device)
        self.embedding_slots = embedding_slots(self.gsu_names)  # per sequence position, in lookup output order
        slot = {f: i for i, f in enumerate(self.embedding_slots)}
        query_columns = [self.pooled_features.index(f) for f in QUERY_POOLED_FEATURES]
        self.register_buffer("query_columns", torch.tensor(query_columns), persistent=False)
        query_dim = (len(TARGET_SEQUENCE_FEATURES) + len(QUERY_POOLED_FEATURES)) * embedding_dim
        # Only with some GSU: a parameter that never gets a gradient is an error under DDP.
        self.esu = TargetAttention(
            slots=[[slot[f"{g}.{field}"] for field in SEQUENCE_ID_FIELDS] for g in self.gsu_names],
            n_slots=len(slot), embedding_dim=embedding_dim, query_dim=query_dim, attention_dim=attention_dim,
            side_rows=SIDE_ROWS, n_side_fields=len(SIDE_FIELDS), side_dim=side_dim) if self.gsu_names else None
        if isinstance(contrastive, dict):
            contrastive = ContrastiveConfig(**contrastive)
        self.contrastive_temperature = contrastive.temperature
        self.contrastive_gsus = [g for g, w in (contrastive.weights or {}).items()
                                 if w and g in self.gsu_names and g != "mixed" and "mixed" in self.gsu_names]
        # Sequences whose mean item embeddings the contrastive terms compare: "mixed" first, then the others.
        contrasted = ["mixed", *self.contrastive_gsus] if self.contrastive_gsus else []
        self.register_buffer("contrasted", torch.tensor([self.gsu_names.index(g) for g in contrasted],
                                                        dtype=torch.long), persistent=False)
        input_dim = (len(self.pooled_features) + len(TARGET_SEQUENCE_FEATURES)) * embedding_dim + n_dense \
            + len(self.gsu_names) * attention_dim
        self.dense_norm = nn.BatchNorm1d(n_dense)
        self.multitask = PLE(input_dim, len(self.tasks), **(multitask or {}))
        weights = score_weights or {}
        self.register_buffer("score_weights", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))
        self.towers = nn.ModuleList(MLP(self.multitask.output_dim, list(tower_dims), output_dim=1)
                                    for _ in self.tasks)

    def forward(self, x: ModelInput) -> ModelOutput:
        pooled, target, sequence = self.lookup(x.pooled, x.sequence, len(x))
        # The contrastive terms are training losses: evaluation skips their means.
        logits, means = self.head(pooled, target, sequence, x.side, x.mask, x.dense, with_means=self.training)
        return ModelOutput(logits=logits, contrastive=self.contrastive_losses(means, x.mask))

    def lookup(self, pooled_ids: KeyedJaggedTensor, sequence_ids: KeyedJaggedTensor,
               batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> pooled [B, F * d] in `pooled_features` order, target [B, 2 * d] (live, author) and
        sequence [B, L, S * d] with S slots per position in `embedding_slots` order."""
        pooled = ordered_values(self.pooled_ebc(pooled_ids), self.pooled_features)
        # One split, not two slices: its backward writes the kernel's gradient in a single pass.
        target, elements = torch.split(ordered_values(self.sequence_ebc(sequence_ids), self.sequence_features),
                                       [batch_size, batch_size * self.seq_len * len(self.gsu_names)])
        return pooled, target, elements.view(batch_size, self.seq_len, -1)

    def logits(self, pooled: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor, side: torch.Tensor,
               mask: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Everything after the embedding lookups that serving needs: ESU, PLE/CGC, towers -> [B, T]."""
        return self.head(pooled, target, sequence, side, mask, dense, with_means=False)[0]

    def head(self, pooled: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor, side: torch.Tensor,
             mask: torch.Tensor, dense: torch.Tensor, with_means: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T] and, `with_means` and contrastive terms configured, the contrasted
        sequences' mean embeddings [B, R, 2 * d] (mixed first) from the same ESU product."""
        b, d = pooled.shape[0], self.embedding_dim
        features = [pooled, target, self.dense_norm(dense)]
        means = None
        if self.esu is not None:
            query = torch.cat([target, pooled.view(b, -1, d).index_select(1, self.query_columns).reshape(b, -1)], -1)
            mean_of = self.contrasted if with_means and self.contrastive_gsus else None
            attended, means = self.esu(query, in_autocast_dtype(sequence), side, mask, mean_of=mean_of)
            features.append(attended.reshape(b, -1))
        per_task = self.multitask(torch.cat(features, dim=-1))
        # float32 whatever the layers ran in: losses and AUC need more than bfloat16's 8 bits.
        return torch.cat([tower(h) for tower, h in zip(self.towers, per_task)], dim=-1).float(), means  # [B, T]

    def contrastive_losses(self, means: torch.Tensor | None, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """InfoNCE(mixed, GSU) of the sequences' mean item embeddings ([B, R, 2 * d] from the ESU,
        mixed first), for each GSU with a contrastive weight (training only)."""
        if not self.contrastive_gsus or means is None:
            return {}
        items = means[..., : self.embedding_dim]
        present = mask.index_select(1, self.contrasted).any(-1)  # [B, R]
        return {name: info_nce(items[:, 0], items[:, r], self.contrastive_temperature, present[:, 0] & present[:, r])
                for r, name in enumerate(self.contrastive_gsus, start=1)}

    def score(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The ranking score prod_t (1 + p_t) ** w_t of [B, T] probabilities -> [B]."""
        return ranking_score(probabilities, self.score_weights)
