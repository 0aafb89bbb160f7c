"""GDCN (Wang et al., "Towards Deeper, Lighter and Interpretable Cross Network for CTR
Prediction", CIKM 2023), as FuxiCTR's GDCN (stacked, `gdcn`) and GDCNP (parallel, `gdcnp`).

Gated cross layer (eq. 1): c_{l+1} = c_0 o (W_c c_l + b) o sigmoid(W_g c_l) + c_l over the
flat field embeddings c_0 (B, N D), W_c and W_g full (N D, N D) without bias, b drawn U(0, 1).
GDCN-S: logit = MLP(c_L); GDCN-P: logit = w^T [c_L, MLP(c_0)] + b. FuxiCTR builds no MLP for
empty `dnn_hidden_units` (and then fails); here GDCN-S is Linear(c_L) and GDCN-P reads c_L only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init
from recsys_kdef.models.zoo.head import MLPLogit


@dataclass(kw_only=True, slots=True)
class GDCNParams:
    """FuxiCTR GDCN's and GDCNP's hyperparameters (same names; DNN [1024, 512, 256] as in
    FuxiCTR's GDCN_default config, where the class default [] does not run)."""

    dnn_hidden_units: list[int] = field(default_factory=lambda: [1024, 512, 256])
    dnn_activations: str = "relu"
    num_cross_layers: int = 3
    net_dropout: float = 0.0
    batch_norm: bool = False


class GateCrossLayers(nn.Module):
    """Gated cross layers: (B, N) -> (B, N)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.w = nn.ModuleList(
            nn.Linear(input_dim, input_dim, bias=False) for _ in range(num_layers)
        )
        self.wg = nn.ModuleList(
            nn.Linear(input_dim, input_dim, bias=False) for _ in range(num_layers)
        )
        xavier_init(self)
        self.b = nn.Parameter(torch.rand(num_layers, input_dim))  # FuxiCTR: uniform_(0, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, wg, b in zip(self.w, self.wg, self.b):
            x = x0 * (w(x) + b) * torch.sigmoid(wg(x)) + x  # (B, N)
        return x


class GDCN(nn.Module):
    """One GDCN-S student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the MLP's last
    hidden layer over the cross output)."""

    def __init__(self, p: GDCNParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.cross_net = GateCrossLayers(n, p.num_cross_layers)
        self.dnn = MLPLogit(
            n, list(p.dnn_hidden_units), p.dnn_activations, p.net_dropout, p.batch_norm
        )
        self.output_dim = self.dnn.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dnn(self.cross_net(self.fields(emb, dense).flatten(1)))


class GDCNP(nn.Module):
    """One GDCN-P student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, N D + H) = [c_L, MLP(c_0)]."""

    def __init__(self, p: GDCNParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.cross_net = GateCrossLayers(n, p.num_cross_layers)
        self.dnn = None
        if p.dnn_hidden_units:
            self.dnn = MLPBlock(
                n, list(p.dnn_hidden_units), p.dnn_activations, p.net_dropout, p.batch_norm
            )
        self.output_dim = n + (self.dnn.output_dim if self.dnn is not None else 0)
        self.fc = nn.Linear(self.output_dim, 1)
        xavier_init(self.fc)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.fields(emb, dense).flatten(1)  # (B, N D)
        h = self.cross_net(x0)
        if self.dnn is not None:
            h = torch.cat([h, self.dnn(x0)], dim=1)
        return self.fc(h).squeeze(1), h
