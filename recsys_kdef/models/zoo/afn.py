"""AFN (Cheng et al., "Adaptive Factorization Network: Learning Adaptive-Order Feature
Interactions", AAAI 2020), as FuxiCTR's AFN.

Logarithmic transformation layer (eq. 4-6): L logarithmic neurons
    y_{j,d} = exp(sum_f w_{j,f} ln|e_{f,d}|) = prod_f |e_{f,d}|^{w_{j,f}},
|e| clamped to >= 1e-5, with batch norm over the fields before the weights (on ln|e|, (B, N,
D)) and over the neurons after the exp ((B, L, D)); an MLP over the flat (B, L D) gives the
AFN logit. With `ensemble_dnn` (AFN+), an MLP over the flat embeddings adds its logit and
logit = w^T [afn, dnn] + b. FuxiCTR's AFN+ DNN reads a second embedding layer of its own (a
second set of tables, which an architecture cannot add); ours reads the student's embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, StudentInputs, xavier_init
from recsys_kdef.models.zoo.head import MLPLogit


@dataclass(kw_only=True, slots=True)
class AFNParams:
    """FuxiCTR AFN's hyperparameters (same names and defaults)."""

    ensemble_dnn: bool = True
    dnn_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    dnn_activations: str = "relu"
    dnn_dropout: float = 0.0
    afn_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    afn_activations: str = "relu"
    afn_dropout: float = 0.0
    logarithmic_neurons: int = 5
    batch_norm: bool = True


class LogarithmicNet(nn.Module):
    """(B, N, D) -> (B, L D): BN_L(exp(W BN_N(ln max(|e|, 1e-5))))."""

    def __init__(self, num_fields: int, neurons: int) -> None:
        super().__init__()
        self.coefficient_W = nn.Linear(num_fields, neurons, bias=False)
        xavier_init(self)
        self.log_batch_norm = nn.BatchNorm1d(num_fields)
        self.exp_batch_norm = nn.BatchNorm1d(neurons)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        log_e = self.log_batch_norm(torch.log(e.abs().clamp(min=1e-5)))  # (B, N, D)
        out = torch.exp(self.coefficient_W(log_e.transpose(1, 2)).transpose(1, 2))  # (B, L, D)
        return self.exp_batch_norm(out).flatten(1)


class AFN(nn.Module):
    """One AFN student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the AFN MLP's last
    hidden layer, and with `ensemble_dnn` the DNN's beside it)."""

    def __init__(self, p: AFNParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        d, bn = inputs.embedding_dim, p.batch_norm
        self.log_net = LogarithmicNet(inputs.num_fields, p.logarithmic_neurons)
        mlp = MLPLogit(
            d * p.logarithmic_neurons,
            list(p.afn_hidden_units),
            p.afn_activations,
            p.afn_dropout,
            bn,
        )
        self.dense_layer = mlp
        self.dnn = self.fc = None
        self.output_dim = mlp.output_dim
        if p.ensemble_dnn:
            self.dnn = MLPLogit(
                inputs.flat_dim, list(p.dnn_hidden_units), p.dnn_activations, p.dnn_dropout, bn
            )
            self.fc = nn.Linear(2, 1)
            xavier_init(self.fc)
            self.output_dim += self.dnn.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, N, D)
        afn, h = self.dense_layer(self.log_net(e))  # (B,), (B, H_afn)
        if self.dnn is None or self.fc is None:
            return afn, h
        dnn, h_dnn = self.dnn(e.flatten(1))
        logit = self.fc(torch.stack([afn, dnn], dim=1)).squeeze(1)
        return logit, torch.cat([h, h_dnn], dim=1)
