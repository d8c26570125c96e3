"""The Moment&Cross ranking model, in TorchRec's DLRM shape: a lookup part that holds every
embedding table (the SparseArch) and a head that holds every layer after the lookups.

  pooled ids --EBC--> [B, F*d]      target live + author, GSU elements --EBC (bags of one)--> [B, 2d], [B, L, S*d]
                 \\                                  |
                  \\                    ESU target attention per GSU (eq. 7); InfoNCE mixed vs others (eq. 6)
                   \\                                |
                    +---- concat with dense features + ESU outputs ----> CGC / PLE ----> one tower per task

The embedding outputs stay in the layout the kernels write ([B, features * d]; the targets [B, 2d]
and the sequences [B, L, slots * d] from one split); nothing downstream splits them per feature
(recsys/model/cross.py says why). `recsys/model/factory.py` builds both parts from the config and
the shards' manifest; a benchmark or a serving path can hold the head alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType
from torchrec.fx.tracer import is_fx_tracing
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from data_pipelines.contract import SEQUENCE_ID_FIELDS, TARGET_FEATURES
from recsys.model.cross import TargetAttention, info_nce
from recsys.model.inputs import ModelInput, embedding_slots
from recsys.model.losses import ranking_score
from recsys.model.mlp import MLP
from recsys.model.multitask import PLE

QUERY_POOLED_FEATURES = ("category", "live_type")  # live-side ids that join the ESU query


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, T]
    contrastive: dict[str, torch.Tensor]  # GSU -> InfoNCE(mixed, GSU), unweighted (training only)


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


class EmbeddingLookup(nn.Module):
    """Every embedding table, in two EmbeddingBagCollections built on `device` (meta: materialised
    by DistributedModelParallel).

    pooled: one table per entry of `pooled_tables` (table -> the pooled features sharing it).
    sequences: one table per SEQUENCE_ID_FIELDS entry (item: short videos and lives; author), each
    with a single feature; the target live and its author look up the same tables as every GSU
    element, as bags of one (recsys/model/inputs.py has the bag order).
    """

    def __init__(self, table_sizes: dict[str, int], pooled_tables: dict[str, list[str]], embedding_dim: int,
                 seq_len: int, n_gsus: int, device: torch.device | str = "meta",
                 bias_fields: tuple[str, ...] = (), n_tasks: int = 0):
        super().__init__()
        self.pooled_features = [f for features in pooled_tables.values() for f in features]
        self.sequence_features = list(SEQUENCE_ID_FIELDS)
        self.seq_len, self.n_gsus = seq_len, n_gsus
        self.sequence_width = n_gsus * len(SEQUENCE_ID_FIELDS) * embedding_dim  # S * d
        device = torch.device(device)
        self.pooled_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=table, embedding_dim=embedding_dim, num_embeddings=table_sizes[table],
                               feature_names=list(features), pooling=PoolingType.SUM)
            for table, features in pooled_tables.items()], device=device)
        self.sequence_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=field, embedding_dim=embedding_dim, num_embeddings=table_sizes[field],
                               feature_names=[field], pooling=PoolingType.SUM)
            for field in SEQUENCE_ID_FIELDS], device=device)
        # The wide part: per target room / author, one bias per task on the logits (zero at the start).
        # fbgemm's kernels take widths in multiples of 4: the rows are padded, the padding unused.
        self.bias_fields, self.n_tasks = tuple(bias_fields), n_tasks
        unknown = [f for f in self.bias_fields if f not in SEQUENCE_ID_FIELDS]
        if unknown:
            raise ValueError(f"bias fields {unknown} are not target id fields {list(SEQUENCE_ID_FIELDS)}")
        self.bias_ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=f"{field}_bias", embedding_dim=-(-n_tasks // 4) * 4,
                               num_embeddings=table_sizes[field], feature_names=[f"{field}_bias"],
                               pooling=PoolingType.SUM, init_fn=nn.init.zeros_)
            for field in self.bias_fields], device=device) if self.bias_fields else None

    def bias(self, target_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] the summed biases of the targets (target_ids [B, len(SEQUENCE_ID_FIELDS)] rows)."""
        b = target_ids.shape[0]
        columns = [SEQUENCE_ID_FIELDS.index(f) for f in self.bias_fields]
        ids = KeyedJaggedTensor(keys=[f"{f}_bias" for f in self.bias_fields],
                                values=target_ids[:, columns].t().reshape(-1),
                                lengths=torch.ones(b * len(columns), dtype=torch.int32, device=target_ids.device))
        values = ordered_values(self.bias_ebc(ids), [f"{f}_bias" for f in self.bias_fields])
        return values.view(b, len(columns), -1).sum(1)[:, : self.n_tasks]

    def forward(self, pooled_ids: KeyedJaggedTensor, sequence_ids: KeyedJaggedTensor,
                batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> pooled [B, F * d] in `pooled_features` order, target [B, 2 * d] (live, author) and
        sequence [B, L, S * d] with S slots per position in `embedding_slots` order. L is read off
        the bags: `seq_len` in training; serving may send fewer positions (export/scorer.py)."""
        pooled = ordered_values(self.pooled_ebc(pooled_ids), self.pooled_features)
        looked_up = ordered_values(self.sequence_ebc(sequence_ids), self.sequence_features)
        # One split, not two slices: its backward writes the kernel's gradient in a single pass.
        target, elements = torch.split(looked_up, [batch_size, looked_up.shape[0] - batch_size])
        if not self.sequence_width:  # no GSU (cross=none): nothing to view, and L cannot be read off
            return pooled, target, elements.new_zeros(batch_size, 0, 0)
        return pooled, target, elements.view(batch_size, -1, self.sequence_width)


class MomentCrossHead(nn.Module):
    """Everything after the lookups: the ESU over the GSUs, the contrastive terms, CGC / PLE, one
    tower per task, and the ranking score.

    `contrastive_weights`: GSU -> weight of InfoNCE(mixed, GSU) in the loss, only for the terms
    that are on (factory.ContrastiveSpec decides which). `side_rows`: rows of each side field's
    bucket table, in SIDE_FIELDS order.
    """

    def __init__(self, tasks: list[str], pooled_features: list[str], gsu_names: list[str], seq_len: int,
                 n_dense: int, embedding_dim: int, side_rows: list[int], side_dim: int, attention_dim: int,
                 multitask: dict, tower_dims: list[int], contrastive_weights: dict[str, float],
                 contrastive_temperature: float, score_weights: dict[str, float]):
        super().__init__()
        self.tasks, self.pooled_features, self.gsu_names = list(tasks), list(pooled_features), list(gsu_names)
        self.seq_len, self.embedding_dim = seq_len, embedding_dim
        slot = {f: i for i, f in enumerate(embedding_slots(self.gsu_names))}
        self.register_buffer("query_columns", torch.tensor([self.pooled_features.index(f)
                                                            for f in QUERY_POOLED_FEATURES]), persistent=False)
        query_dim = (len(TARGET_FEATURES) + len(QUERY_POOLED_FEATURES)) * embedding_dim
        # Only with some GSU: a parameter that never gets a gradient is an error under DDP.
        self.esu = TargetAttention(
            slots=[[slot[f"{g}.{field}"] for field in SEQUENCE_ID_FIELDS] for g in self.gsu_names],
            n_slots=len(slot), embedding_dim=embedding_dim, query_dim=query_dim, attention_dim=attention_dim,
            side_rows=list(side_rows), side_dim=side_dim) if self.gsu_names else None
        self.contrastive_weights = dict(contrastive_weights)
        self.contrastive_temperature = contrastive_temperature
        # Sequences whose mean item embeddings the contrastive terms compare: "mixed" first, then the others.
        contrasted = ["mixed", *self.contrastive_weights] if self.contrastive_weights else []
        self.register_buffer("contrasted", torch.tensor([self.gsu_names.index(g) for g in contrasted],
                                                        dtype=torch.long), persistent=False)
        input_dim = (len(self.pooled_features) + len(TARGET_FEATURES)) * embedding_dim + n_dense \
            + len(self.gsu_names) * attention_dim
        self.dense_norm = nn.BatchNorm1d(n_dense)
        self.multitask = PLE(input_dim, len(self.tasks), **multitask)
        self.register_buffer("score_weights", torch.tensor([float(score_weights.get(t, 1.0)) for t in self.tasks]))
        self.towers = nn.ModuleList(MLP(self.multitask.output_dim, list(tower_dims), output_dim=1)
                                    for _ in self.tasks)

    def forward(self, pooled: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor, side: torch.Tensor,
                mask: torch.Tensor, dense: torch.Tensor, with_means: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T] and, `with_means` and contrastive terms on, the contrasted sequences' mean
        embeddings [B, R, 2 * d] (mixed first) from the same ESU product."""
        b, d = pooled.shape[0], self.embedding_dim
        features = [pooled, target, self.dense_norm(dense)]
        means = None
        if self.esu is not None:
            query = torch.cat([target, pooled.view(b, -1, d).index_select(1, self.query_columns).reshape(b, -1)], -1)
            mean_of = self.contrasted if with_means and self.contrastive_weights else None
            attended, means = self.esu(query, in_autocast_dtype(sequence), side, mask, mean_of=mean_of)
            features.append(attended.reshape(b, -1))
        per_task = self.multitask(torch.cat(features, dim=-1))
        # float32 whatever the layers ran in: losses and AUC need more than bfloat16's 8 bits.
        return torch.cat([tower(h) for tower, h in zip(self.towers, per_task)], dim=-1).float(), means  # [B, T]

    def contrastive_losses(self, means: torch.Tensor | None, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """InfoNCE(mixed, GSU) of the sequences' mean item embeddings ([B, R, 2 * d] from the ESU,
        mixed first), for each GSU with a contrastive term (training only)."""
        if not self.contrastive_weights or means is None:
            return {}
        items = means[..., : self.embedding_dim]
        present = mask.index_select(1, self.contrasted).any(-1)  # [B, R]
        return {name: info_nce(items[:, 0], items[:, r], self.contrastive_temperature, present[:, 0] & present[:, r])
                for r, name in enumerate(self.contrastive_weights, start=1)}

    def score(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The ranking score prod_t (1 + p_t) ** w_t of [B, T] probabilities -> [B]."""
        return ranking_score(probabilities, self.score_weights)


class MomentCrossModel(nn.Module):
    """The lookups, then the head (MomentCrossHead, or a peer's: recsys/model/peers.py): ModelInput ->
    ModelOutput."""

    def __init__(self, lookup: EmbeddingLookup, head: MomentCrossHead):
        super().__init__()
        if lookup.pooled_features != head.pooled_features or lookup.seq_len != head.seq_len \
                or lookup.n_gsus != len(head.gsu_names):
            raise ValueError("the lookup's features, sequence length or GSU count differ from the head's")
        self.lookup, self.head = lookup, head

    @property
    def tasks(self) -> list[str]:
        return self.head.tasks

    @property
    def gsu_names(self) -> list[str]:
        return self.head.gsu_names

    @property
    def seq_len(self) -> int:
        return self.head.seq_len

    @property
    def pooled_features(self) -> list[str]:
        return self.head.pooled_features

    def forward(self, x: ModelInput) -> ModelOutput:
        pooled, target, sequence = self.lookup(x.pooled, x.sequence, len(x))
        # The contrastive terms are training losses: evaluation skips their means.
        logits, means = self.head(pooled, target, sequence, x.side, x.mask, x.dense, with_means=self.training)
        if self.lookup.bias_ebc is not None:
            logits = logits + self.lookup.bias(x.targets)
        return ModelOutput(logits=logits, contrastive=self.head.contrastive_losses(means, x.mask))
