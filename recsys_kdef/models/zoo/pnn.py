"""IPNN (Qu et al., "Product-based Neural Networks for User Response Prediction", ICDM 2016),
as FuxiCTR's PNN (product_type inner).

Product layer: l_z = the field embeddings e_1..e_N (N = F + Dd), l_p = <e_i, e_j> for every
pair i < j (inner products kept explicit, no kernel reduction, as FuxiCTR);
the DNN reads [l_z, l_p] (B, N * D + N (N - 1) / 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class PNNParams:
    """FuxiCTR PNN's hyperparameters (same names and defaults; only inner products)."""

    hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    hidden_activations: str = "relu"
    net_dropout: float = 0.0
    batch_norm: bool = False


def inner_products(e: torch.Tensor) -> torch.Tensor:
    """<e_i, e_j> for i < j in row-major order (FuxiCTR's triu mask): (B, N, D) -> (B, N(N-1)/2)."""
    i, j = torch.triu_indices(e.shape[1], e.shape[1], offset=1, device=e.device)
    return (e[:, i] * e[:, j]).sum(dim=2)


class PNN(nn.Module):
    """One IPNN student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the DNN's last
    hidden layer)."""

    def __init__(self, p: PNNParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.num_fields
        in_dim = inputs.flat_dim + n * (n - 1) // 2
        self.dnn = MLPBlock(
            in_dim, list(p.hidden_units), p.hidden_activations, p.net_dropout, p.batch_norm
        )
        self.fc = nn.Linear(self.dnn.output_dim, 1)
        xavier_init(self.fc)
        self.output_dim = self.dnn.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, N, D)
        h = self.dnn(torch.cat([e.flatten(1), inner_products(e)], dim=1))  # (B, H)
        return self.fc(h).squeeze(1), h
