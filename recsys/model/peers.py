"""The models a ranking engineer would try before Moment&Cross, as heads over the same lookups.

DLRM and DCN-v2 from TorchRec's own parts (`torchrec.models.dlrm`: DenseArch, InteractionArch,
InteractionDCNArch, OverArch; `torchrec.modules.crossnet.LowRankCrossNet`), fed by the project's
EmbeddingLookup — the same tables, the same EmbeddingBagCollections, the same fused sparse optimizer —
so that a replay comparing them differs in the layers after the lookups only:

  pooled ids --EBC--> F vectors      target live + author --EBC--> 2 vectors
  GSU elements --EBC--> per GSU the masked mean of its item and of its author embeddings: 2 G vectors
  dense counters --BatchNorm, DenseArch--> 1 vector
        |
  DLRM: the vectors' pairwise dot products beside the dense vector (InteractionArch)
  DCN-v2: a low-rank cross network over all of them concatenated (InteractionDCNArch)
        |
  OverArch: one MLP, one logit per task (a shared bottom; no CGC / PLE, no target attention)

The mean stands where the model has no attention: what a GSU retrieved is there, but not weighed
against the candidate. No contrastive terms. Replay only: the export serves MomentCrossHead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, InteractionDCNArch, OverArch
from torchrec.modules.crossnet import LowRankCrossNet

from data_pipelines.contract import SEQUENCE_ID_FIELDS, TARGET_FEATURES
from recsys.model.losses import ranking_score

INTERACTIONS = ("dlrm", "dcn_v2")


@dataclass(frozen=True)
class PeerSpec:
    """conf/model/dlrm.yaml, conf/model/dcn_v2.yaml: a peer's architecture. What depends on the data
    comes from the manifest, the GSUs from `cross` (their means only)."""

    interaction: str  # dlrm | dcn_v2
    seq_len: int  # elements per GSU averaged (<= the gsu_length the shards were written with)
    embedding_dim: int
    dense_arch_dims: list[int]  # the dense counters' MLP; a last layer of embedding_dim is added
    over_arch_dims: list[int]  # the MLP after the interaction; a last layer of one logit per task is added
    pooled_tables: dict[str, list[str]]  # pooled table -> the features sharing it (as ModelSpec's)
    score_weights: dict[str, float]  # task -> w_t in prod_t (1 + p_t) ** w_t (absent: 1)
    cross_layers: int = 3  # dcn_v2: cross layers...
    cross_low_rank: int = 64  # ...and the rank of each layer's weight
    bias_fields: list[str] = field(default_factory=list)  # none: the lookups hold no wide part

    def __post_init__(self) -> None:
        if self.interaction not in INTERACTIONS:
            raise ValueError(f"model.interaction must be one of {list(INTERACTIONS)}, got {self.interaction!r}")
        if not self.over_arch_dims:
            raise ValueError("model.over_arch_dims needs at least one layer before the logits")
        if self.bias_fields:
            raise ValueError("a peer model has no wide part: model.bias_fields must be empty")


def masked_means(sequence: torch.Tensor, mask: torch.Tensor, embedding_dim: int) -> torch.Tensor:
    """The mean of each GSU's real elements, per embedding slot: sequence [B, L, G * S * d] (S slots
    per GSU element, recsys/model/inputs.py: embedding_slots), mask [B, G, L] -> [B, G * S, d]; zeros
    for an empty GSU."""
    b, g = mask.shape[0], mask.shape[1]
    if g == 0:
        return sequence.new_zeros(b, 0, embedding_dim)
    per_slot = sequence.view(b, sequence.shape[1], g, -1, embedding_dim)  # [B, L, G, S, d]
    weights = mask.transpose(1, 2).unsqueeze(-1).unsqueeze(-1).to(sequence.dtype)  # [B, L, G, 1, 1]
    counts = mask.sum(-1).clamp(min=1).to(sequence.dtype).view(b, g, 1, 1)
    return ((per_slot * weights).sum(1) / counts).reshape(b, -1, embedding_dim)


class PeerHead(nn.Module):
    """DLRM or DCN-v2 after the lookups; the interface of MomentCrossHead (forward, score,
    contrastive_losses), so that the model, the task, the learner and the replay take it as they are."""

    def __init__(self, spec: PeerSpec, tasks: list[str], gsu_names: list[str], n_dense: int):
        super().__init__()
        self.tasks, self.gsu_names = list(tasks), list(gsu_names)
        self.pooled_features = [f for features in spec.pooled_tables.values() for f in features]
        self.seq_len, self.embedding_dim = spec.seq_len, spec.embedding_dim
        self.contrastive_weights: dict[str, float] = {}
        d = spec.embedding_dim
        n_sparse = len(self.pooled_features) + len(TARGET_FEATURES) + len(gsu_names) * len(SEQUENCE_ID_FIELDS)
        self.dense_norm = nn.BatchNorm1d(n_dense)
        self.dense_arch = DenseArch(n_dense, [*spec.dense_arch_dims, d])
        if spec.interaction == "dlrm":
            self.interaction = InteractionArch(n_sparse)
            width = d + (n_sparse + 1) * n_sparse // 2
        else:
            width = (n_sparse + 1) * d
            self.interaction = InteractionDCNArch(n_sparse, LowRankCrossNet(width, spec.cross_layers,
                                                                            spec.cross_low_rank))
        self.over_arch = OverArch(width, [*spec.over_arch_dims, len(self.tasks)])
        self.register_buffer("score_weights", torch.tensor([float(spec.score_weights.get(t, 1.0))
                                                            for t in self.tasks]))

    def forward(self, pooled: torch.Tensor, target: torch.Tensor, sequence: torch.Tensor, side: torch.Tensor,
                mask: torch.Tensor, dense: torch.Tensor, with_means: bool) -> tuple[torch.Tensor, None]:
        """Logits [B, T] (float32); no contrastive means."""
        b, d = pooled.shape[0], self.embedding_dim
        dense_vector = self.dense_arch(self.dense_norm(dense))
        sparse = torch.cat([pooled.view(b, -1, d), target.view(b, -1, d), masked_means(sequence, mask, d)],
                           dim=1).to(dense_vector.dtype)
        return self.over_arch(self.interaction(dense_vector, sparse)).float(), None

    def contrastive_losses(self, means: torch.Tensor | None, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def score(self, probabilities: torch.Tensor) -> torch.Tensor:
        return ranking_score(probabilities, self.score_weights)
