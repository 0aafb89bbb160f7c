"""An MLP that ends in one logit and also returns its last hidden layer (the student's hidden
vector): FuxiCTR's MLP_Block(output_dim=1) split so the hidden layer is readable."""

from __future__ import annotations

import torch
from torch import nn

from recsys_kdef.models.zoo.base import MLPBlock, xavier_init


class MLPLogit(nn.Module):
    """MLPBlock then Linear(H, 1): (B, N) -> logit (B,), hidden (B, H); with no hidden units
    the hidden vector is the input (and the layer is FuxiCTR's Linear(N, 1)).

    Example::

        head = MLPLogit(64, [32, 16])
        logit, hidden = head(torch.randn(8, 64))  # (8,), (8, 16)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.mlp = MLPBlock(input_dim, list(hidden_units), activation, dropout, batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, 1)
        xavier_init(self.out)
        self.output_dim = self.mlp.output_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(x)  # (B, H)
        return self.out(h).squeeze(1), h
