"""DHEN (Zhang et al., "DHEN: A Deep and Hierarchical Ensemble Network for Large-Scale
Click-Through Rate Prediction", arXiv 2203.11014, 2022), written from the paper: FuxiCTR has no
DHEN and TorchRec ships none.

A DHEN layer (paper eqs. 1-2) ensembles several interaction modules over the fields X (B, F, D):
    X_{n+1} = LayerNorm(Ensemble(M_1(X_n), ..., M_k(X_n)) + X_n)
with Ensemble = concatenation of the modules' outputs per field and a linear map kD -> D, and
the identity as shortcut (every module keeps (B, F, D)). Modules (`modules`):
    "self_attention": multi-head attention over the fields (W_q, W_k, W_v: D -> D, no bias)
    "linear":         Y = W vec(X) + b over all fields' values
    "cross":          Y = X * (W vec(X) + b), DCN V2's cross without its residual (the shortcut)
`num_layers` layers are stacked (each with its own modules); logit = fc(vec(X_L)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, StudentInputs, xavier_init

Module = Literal["self_attention", "linear", "cross"]


@dataclass(kw_only=True, slots=True)
class DHENParams:
    """DHEN's hyperparameters (the paper's: layers, the modules of a layer, attention heads)."""

    num_layers: int = 2
    modules: list[Module] = field(default_factory=lambda: ["self_attention", "linear"])
    num_heads: int = 1

    def __post_init__(self) -> None:
        if not self.modules or self.num_layers < 1:
            raise ValueError("dhen: give at least one layer and one module in `modules`")


class FieldAttention(nn.Module):
    """Multi-head self-attention over the fields: (B, F, D) -> (B, F, D)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dhen: embedding_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, d = x.shape
        q, k, v = self.qkv(x).view(b, f, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (d // self.num_heads) ** 0.5  # (B, h, F, F)
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, f, d)


class FlatLinear(nn.Module):
    """A linear map of all fields' values, optionally gating the input: (B, F, D) -> (B, F, D)."""

    def __init__(self, num_fields: int, dim: int, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.linear = nn.Linear(num_fields * dim, num_fields * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.flatten(1)).view_as(x)  # (B, F, D)
        return x * y if self.cross else y


class DHENLayer(nn.Module):
    """One hierarchical ensemble layer: (B, F, D) -> (B, F, D)."""

    def __init__(self, num_fields: int, dim: int, p: DHENParams) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            FieldAttention(dim, p.num_heads)
            if m == "self_attention"
            else FlatLinear(num_fields, dim, cross=m == "cross")
            for m in p.modules
        )
        self.ensemble = nn.Linear(len(p.modules) * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ensemble = self.ensemble(torch.cat([m(x) for m in self.blocks], dim=-1))  # (B, F, D)
        return self.norm(ensemble + x)


class DHEN(nn.Module):
    """One DHEN student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, (F + Dd) D) = vec(X_L)."""

    def __init__(self, p: DHENParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        f, d = inputs.num_fields, inputs.embedding_dim
        self.layers = nn.Sequential(*(DHENLayer(f, d, p) for _ in range(p.num_layers)))
        self.fc = nn.Linear(inputs.flat_dim, 1)
        self.output_dim = inputs.flat_dim
        xavier_init(self)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layers(self.fields(emb, dense)).flatten(1)  # (B, (F + Dd) D)
        return self.fc(h).squeeze(1), h
