"""A plain MLP block, the building piece of experts, gates' inputs and towers."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """Linear -> ReLU (-> Dropout) for each hidden size; `output_dim` adds a last linear layer.
    [B, input_dim] -> [B, self.output_dim]."""

    def __init__(self, input_dim: int, hidden_dims: list[int], output_dim: int | None = None, dropout: float = 0.0):
        layers: list[nn.Module] = []
        dim = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(dim, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = hidden
        if output_dim is not None:
            layers.append(nn.Linear(dim, output_dim))
            dim = output_dim
        super().__init__(*layers)
        self.output_dim = dim
