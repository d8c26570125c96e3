"""Multi-task extraction: CGC (one level of shared + task-specific experts with per-task gates) and
PLE (stacked CGC levels), after Tang et al., "Progressive Layered Extraction", RecSys 2020."""

from __future__ import annotations

import torch
from torch import nn

from recsys.model.mlp import MLP


class CGCLayer(nn.Module):
    """One extraction level.

    Inputs: one [B, D_in] tensor per task, plus one for the shared branch (last).
    Task t mixes its own experts and the shared experts with a softmax gate computed from its
    input; the shared branch (kept when `with_shared_output`, i.e. below the top of a PLE stack)
    mixes every expert with its own gate.
    Outputs: one [B, D_out] tensor per task (+ the shared one when `with_shared_output`).
    """

    def __init__(self, input_dim: int, n_tasks: int, n_shared_experts: int, n_task_experts: int,
                 expert_dims: list[int], with_shared_output: bool, dropout: float = 0.0):
        super().__init__()
        self.n_tasks, self.n_shared, self.n_task_experts = n_tasks, n_shared_experts, n_task_experts
        self.with_shared_output = with_shared_output
        self.task_experts = nn.ModuleList(
            nn.ModuleList(MLP(input_dim, expert_dims, dropout=dropout) for _ in range(n_task_experts))
            for _ in range(n_tasks))
        self.shared_experts = nn.ModuleList(MLP(input_dim, expert_dims, dropout=dropout)
                                            for _ in range(n_shared_experts))
        self.task_gates = nn.ModuleList(nn.Linear(input_dim, n_task_experts + n_shared_experts)
                                        for _ in range(n_tasks))
        self.shared_gate = (nn.Linear(input_dim, n_tasks * n_task_experts + n_shared_experts)
                            if with_shared_output else None)
        self.output_dim = expert_dims[-1]

    def gate_weights(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Softmax gate weights per task ([B, own + shared experts]) and for the shared branch."""
        weights = [torch.softmax(gate(inputs[t]), dim=-1) for t, gate in enumerate(self.task_gates)]
        if self.shared_gate is not None:
            weights.append(torch.softmax(self.shared_gate(inputs[-1]), dim=-1))
        return weights

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        shared = [expert(inputs[-1]) for expert in self.shared_experts]  # each [B, D_out]
        own = [[expert(inputs[t]) for expert in experts] for t, experts in enumerate(self.task_experts)]
        return self.mix(own, shared, self.gate_weights(inputs))

    def mix(self, own: list[list[torch.Tensor]], shared: list[torch.Tensor],
            weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """The gated mixtures of the experts' outputs (own: per task, its experts' [B, D_out];
        shared: the shared experts'; weights: `gate_weights`). The export computes the experts of
        the first level its own way (export/request_scorer.py) and mixes them here."""
        outputs = []
        for t in range(self.n_tasks):
            experts = torch.stack(own[t] + shared, dim=1)  # [B, E_t + E_s, D_out]
            outputs.append(torch.einsum("be,bed->bd", weights[t], experts))
        if self.shared_gate is not None:
            everything = torch.stack([e for task in own for e in task] + shared, dim=1)
            outputs.append(torch.einsum("be,bed->bd", weights[-1], everything))
        return outputs


class PLE(nn.Module):
    """`n_levels` stacked CGC levels; with n_levels=1 this is CGC (conf/model/cgc.yaml). Returns
    one [B, D] per task."""

    def __init__(self, input_dim: int, n_tasks: int, n_levels: int, n_shared_experts: int, n_task_experts: int,
                 expert_dims: list[int], dropout: float = 0.0):
        super().__init__()
        if n_levels < 1:
            raise ValueError("PLE needs at least one level")
        self.n_tasks = n_tasks
        self.levels = nn.ModuleList()
        dim = input_dim
        for level in range(n_levels):
            layer = CGCLayer(dim, n_tasks, n_shared_experts, n_task_experts, list(expert_dims),
                             with_shared_output=level < n_levels - 1, dropout=dropout)
            self.levels.append(layer)
            dim = layer.output_dim
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # [B, D_in] -> n_tasks x [B, D]
        inputs = [x] * (self.n_tasks + 1)
        for level in self.levels:
            inputs = level(inputs)
        return inputs[: self.n_tasks]
