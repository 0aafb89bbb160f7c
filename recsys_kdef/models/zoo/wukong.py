"""Wukong (Zhang et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation", ICML
2024), as FuxiCTR's WuKong (model_zoo/WuKong/src/WuKong.py).

A stack of Wukong layers over the field embeddings X_0 (B, N, D), N = F + Dd:
    X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + residual(X_i))
FMB (factorization machine block): MLP(LN(flatten(X X^T Y))) reshaped to (B, n_F, D), with the
FM matrix X X^T (B, n, n) projected by a learned Y (n, k) to rank k ("optimized FM"; vanilla
X X^T when `fmp_rank_k` is None) and an MLP with a ReLU on its output; LCB (linear compression
block): W X_i, W (n_L, n); residual: X_i, or a Linear(n, n_F + n_L) over the features when the
widths differ. An MLP over the flattened last layer gives the logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import Activation, FieldEmbeddings, MLPBlock, StudentInputs
from recsys_kdef.models.zoo.head import MLPLogit


@dataclass(kw_only=True, slots=True)
class WukongParams:
    """FuxiCTR WuKong's hyperparameters (same names and defaults)."""

    num_wukong_layers: int = 3
    lcb_features: int = 40
    fmb_features: int = 40
    fmb_mlp_units: list[int] = field(default_factory=lambda: [32, 32])
    fmb_mlp_activations: str = "relu"
    fmp_rank_k: int | None = 8
    mlp_hidden_units: list[int] = field(default_factory=lambda: [32, 32])
    mlp_hidden_activations: str = "relu"
    mlp_batch_norm: bool = True
    layer_norm: bool = True
    net_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.num_wukong_layers < 1 or self.lcb_features + self.fmb_features < 1:
            raise ValueError(
                f"wukong: num_wukong_layers={self.num_wukong_layers} must be >= 1 and "
                f"lcb_features + fmb_features={self.lcb_features + self.fmb_features} >= 1"
            )
        if self.fmp_rank_k is not None and self.fmp_rank_k < 1:
            raise ValueError(f"wukong: fmp_rank_k={self.fmp_rank_k} must be >= 1 or null")


class FactorizationMachineBlock(nn.Module):
    """FMB: (B, n, D) -> (B, n_F, D) = relu(MLP(LN(flatten(X X^T Y)))) reshaped."""

    def __init__(self, n_in: int, n_out: int, dim: int, rank: int | None, p: WukongParams) -> None:
        super().__init__()
        self.n_out, self.dim = n_out, dim
        # FuxiCTR's torch.randn, which its reset (Linear / Conv1d only) leaves as it is
        self.proj_Y = nn.Parameter(torch.randn(n_in, rank)) if rank is not None else None
        fm_dim = n_in * (rank if rank is not None else n_in)
        self.layer_norm = nn.LayerNorm(fm_dim)
        self.mlp = nn.Sequential(
            MLPBlock(
                fm_dim,
                list(p.fmb_mlp_units),
                p.fmb_mlp_activations,
                p.net_dropout,
                output_dim=n_out * dim,
            ),
            Activation("relu"),  # FuxiCTR's output_activation="relu"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj_Y is not None:
            fm = x @ (x.transpose(1, 2) @ self.proj_Y)  # (B, n, k) = X (X^T Y), O(n D k)
        else:
            fm = x @ x.transpose(1, 2)  # (B, n, n)
        out = self.mlp(self.layer_norm(fm.flatten(1)))  # (B, n_F D)
        return out.view(-1, self.n_out, self.dim)


class WukongLayer(nn.Module):
    """One Wukong layer: (B, n, D) -> (B, n_F + n_L, D)."""

    def __init__(self, n_in: int, dim: int, p: WukongParams) -> None:
        super().__init__()
        n_out = p.fmb_features + p.lcb_features
        self.fmb = FactorizationMachineBlock(n_in, p.fmb_features, dim, p.fmp_rank_k, p)
        self.lcb = nn.Linear(n_in, p.lcb_features, bias=False)  # over features, per dimension
        self.norm = nn.LayerNorm(dim) if p.layer_norm else None
        self.residual_proj = nn.Linear(n_in, n_out) if n_in != n_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lcb = self.lcb(x.transpose(1, 2)).transpose(1, 2)  # (B, n_L, D)
        out = torch.cat([self.fmb(x), lcb], dim=1)  # (B, n_F + n_L, D)
        if self.residual_proj is not None:
            out = out + self.residual_proj(x.transpose(1, 2)).transpose(1, 2)
        else:
            out = out + x
        return self.norm(out) if self.norm is not None else out


class Wukong(nn.Module):
    """One Wukong student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the top MLP's last
    hidden layer; the flattened last Wukong layer if the MLP has none)."""

    def __init__(self, p: WukongParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        d, n_out = inputs.embedding_dim, p.fmb_features + p.lcb_features
        widths = [inputs.num_fields] + [n_out] * (p.num_wukong_layers - 1)
        self.layers = nn.Sequential(*(WukongLayer(n, d, p) for n in widths))
        for layer in self.layers:  # FuxiCTR's reset: Xavier-normal Linear weights, zero biases
            for m in (layer.lcb, layer.residual_proj):
                if m is not None:
                    nn.init.xavier_normal_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        self.head = MLPLogit(
            n_out * d, list(p.mlp_hidden_units), p.mlp_hidden_activations, 0.0, p.mlp_batch_norm
        )
        self.output_dim = self.head.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layers(self.fields(emb, dense))  # (B, n_F + n_L, D)
        return self.head(x.flatten(1))
