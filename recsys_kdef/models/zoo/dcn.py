"""DCN (Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017), as FuxiCTR's DCN.

Cross layer (eq. 3), rank one: x_{l+1} = x_0 (w_l^T x_l) + b_l + x_l, w_l, b_l in R^N;
with `dnn_hidden_units` a DNN runs in parallel and the output reads [x_L, h_DNN] (eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class DCNParams:
    """FuxiCTR DCN's hyperparameters (same names and defaults: no DNN, 3 cross layers)."""

    dnn_hidden_units: list[int] = field(default_factory=list)
    dnn_activations: str = "relu"
    num_cross_layers: int = 3
    net_dropout: float = 0.0
    batch_norm: bool = False


class CrossNet(nn.Module):
    """Rank-one cross layers: (B, N) -> (B, N)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_layers, input_dim))
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))
        for w in self.weight:  # FuxiCTR's Linear(N, 1, bias=False), Xavier-normal
            nn.init.normal_(w, 0.0, (2.0 / (input_dim + 1)) ** 0.5)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weight, self.bias):
            x = x0 * (x @ w).unsqueeze(1) + b + x  # (B, N): x_0 (w^T x_l) + b + x_l
        return x


class DCN(nn.Module):
    """One DCN student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the fc's input)."""

    def __init__(self, p: DCNParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.crossnet = CrossNet(n, p.num_cross_layers)
        self.dnn = None
        final_dim = n
        if p.dnn_hidden_units:
            self.dnn = MLPBlock(
                n, list(p.dnn_hidden_units), p.dnn_activations, p.net_dropout, p.batch_norm
            )
            final_dim += self.dnn.output_dim
        self.fc = nn.Linear(final_dim, 1)
        xavier_init(self.fc)
        self.output_dim = final_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.fields(emb, dense).flatten(1)  # (B, (F + Dd) * D)
        h = self.crossnet(x0)  # (B, N)
        if self.dnn is not None:
            h = torch.cat([h, self.dnn(x0)], dim=1)  # (B, N + H_dnn)
        return self.fc(h).squeeze(1), h
