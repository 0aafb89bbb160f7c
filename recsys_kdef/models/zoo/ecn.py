"""ECN, the Exponential Cross Network of DCNv3 (Li et al., "DCNv3: Towards Next Generation Deep
Cross Network for Click-Through Rate Prediction", arXiv 2407.13349, 2024), as the authors' code
(github.com/salmon1802/DCNv3 src/ECN.py at df6da8b; FuxiCTR 0245987 has no DCNv3).

Exponential cross layer (paper eq. 3, code `ExponentialCrossNetwork`):
    c_l = W_l x_{2^{l-1}}                                   # (B, H, N/2), W_l without bias
    Mask(c_l) = [c_l, c_l * ReLU(LN(c_l))]                  # (B, H, N): the self-mask
    x_{2^l} = x_{2^{l-1}} * (Mask(c_l) + b_l) + x_{2^{l-1}} # then dropout
so each layer doubles the interaction order (the current x, not x_1, multiplies: x_1 is LCN's).
Multi-head: the D values of every field are cut into `num_heads` heads of D / H, each head's
fields become one vector [first halves of all fields, second halves of all fields] (N = F D / H)
and the heads share the layers; logit = mean over heads of fc(x_head). Our D is the authors'
`embedding_dim * num_heads`. The combined DCNv3 (ECN + LCN and its loss) is not a student here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class ECNParams:
    """The authors' ECN hyperparameters (same names and defaults)."""

    num_cross_layers: int = 3
    net_dropout: float = 0.0
    layer_norm: bool = True
    batch_norm: bool = False
    num_heads: int = 1


def multi_head_fields(e: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The authors' MultiHeadFeatureEmbedding layout: (B, F, D) -> (B, H, F D / H)."""
    heads = torch.stack(torch.tensor_split(e, num_heads, dim=-1), dim=1)  # (B, H, F, D/H)
    first, second = torch.tensor_split(heads, 2, dim=-1)  # (B, H, F, D/2H) each
    return torch.cat([first.flatten(2), second.flatten(2)], dim=-1)  # (B, H, F D / H)


class ExponentialCrossNetwork(nn.Module):
    """Exponential cross layers and the per-head linear head: (B, H, N) -> logit (B,), x (B, H, N)."""

    def __init__(self, input_dim: int, p: ECNParams) -> None:
        super().__init__()
        n, half = input_dim, input_dim // 2
        self.w = nn.ModuleList(nn.Linear(n, half, bias=False) for _ in range(p.num_cross_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.empty(n)) for _ in range(p.num_cross_layers))
        layers = range(p.num_cross_layers)
        self.layer_norm = nn.ModuleList(nn.LayerNorm(half) for _ in layers if p.layer_norm)
        self.batch_norm = nn.ModuleList(nn.BatchNorm1d(p.num_heads) for _ in layers if p.batch_norm)
        self.dropout = nn.Dropout(p.net_dropout) if p.net_dropout > 0 else nn.Identity()
        self.fc = nn.Linear(n, 1)
        xavier_init(self)
        for b in self.b:
            nn.init.uniform_(b)  # the authors' init: U(0, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            c = w(x)  # (B, H, N/2)
            if self.batch_norm:
                c = self.batch_norm[i](c)  # statistics per head
            mask = torch.relu(self.layer_norm[i](c) if self.layer_norm else c)
            c = torch.cat([c, c * mask], dim=-1)  # (B, H, N)
            x = self.dropout(x * (c + b) + x)
        return self.fc(x).mean(dim=1).squeeze(1), x  # (B,), (B, H, N)


class ECN(nn.Module):
    """One ECN student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) with H = (F + Dd) D.

    hidden is every head's last x side by side (B, heads * N): the mean of the heads' fc
    readouts is one linear readout of it.
    """

    def __init__(self, p: ECNParams, inputs: StudentInputs) -> None:
        super().__init__()
        d, heads = inputs.embedding_dim, p.num_heads
        if d % heads:
            raise ValueError(
                f"ecn: embedding_dim {d} is not divisible by num_heads {heads}; each head reads "
                "D / num_heads values of every field"
            )
        n = inputs.num_fields * d // heads
        if n % 2:
            raise ValueError(
                f"ecn: a head has an odd width {n} = fields {inputs.num_fields} x D / num_heads "
                f"{d // heads}; the self-mask splits it in halves: change embedding_dim or num_heads"
            )
        self.fields = FieldEmbeddings(inputs)
        self.num_heads = heads
        self.ecn = ExponentialCrossNetwork(n, p)
        self.output_dim = inputs.flat_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = multi_head_fields(self.fields(emb, dense), self.num_heads)  # (B, H, N)
        logit, x = self.ecn(x)
        return logit, x.flatten(1)  # (B,), (B, H N)
