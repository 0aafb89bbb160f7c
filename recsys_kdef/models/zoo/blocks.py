"""Building blocks shared by the zoo's architectures."""

from __future__ import annotations

import torch
from torch import nn

from recsys_kdef.models.towers import ACTIVATIONS


class MLPBlock(nn.Module):
    """FuxiCTR's MLP_Block for one student: (Linear -> [BatchNorm] -> act -> [Dropout]) per layer.

    With `output_dim` a last Linear maps to it (no activation). Weights Xavier-normal, biases
    zero, as FuxiCTR initialises them.

    Example::

        mlp = MLPBlock(64, [32, 16], output_dim=1)
        y = mlp(torch.randn(8, 64))  # (8, 1)
    """

    def __init__(
        self,
        in_features: int,
        hidden_units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden_units]
        for d_in, d_out in zip(sizes, sizes[1:]):
            layers.append(nn.Linear(d_in, d_out))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(_Activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        if output_dim is not None:
            layers.append(nn.Linear(sizes[-1], output_dim))
        self.layers = nn.Sequential(*layers)
        self.output_dim = output_dim if output_dim is not None else sizes[-1]
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Activation(nn.Module):
    """An activation from towers.ACTIVATIONS by name, as a module."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name
