"""FinalMLP (Mao et al., "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction",
AAAI 2023), as FuxiCTR's FinalMLP (model_zoo/FinalMLP/src/FinalMLP.py).

Feature selection (eq. 2): x_k = e * 2 sigmoid(MLP_k(c_k)), k = 1, 2, with c_k the context
fields' embeddings or, with no context, a learned vector (global gating). Two MLP streams
o_1 = MLP_1(x_1), o_2 = MLP_2(x_2); multi-head bilinear fusion (eq. 4):
    logit = w_1^T o_1 + w_2^T o_2 + b + sum_h o_1h^T W_h o_2h
with o_1, o_2 cut into `num_heads` heads. Contexts (`fs1_context`, `fs2_context`) are field
indices into the student's (F + Dd) fields and read the student's own embeddings; FuxiCTR
names features and gives the context its own embedding tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class FinalMLPParams:
    """FuxiCTR FinalMLP's hyperparameters (same names and defaults; contexts as field indices)."""

    mlp1_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    mlp1_hidden_activations: str = "relu"
    mlp1_dropout: float = 0.0
    mlp1_batch_norm: bool = False
    mlp2_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    mlp2_hidden_activations: str = "relu"
    mlp2_dropout: float = 0.0
    mlp2_batch_norm: bool = False
    use_fs: bool = True
    fs_hidden_units: list[int] = field(default_factory=lambda: [64])
    fs1_context: list[int] = field(default_factory=list)
    fs2_context: list[int] = field(default_factory=list)
    num_heads: int = 1

    def __post_init__(self) -> None:
        for name in ("mlp1_hidden_units", "mlp2_hidden_units"):
            units = getattr(self, name)
            if not units or units[-1] % self.num_heads:
                raise ValueError(
                    f"finalmlp: {name}={units} must end in a width divisible by num_heads "
                    f"{self.num_heads} (the fusion cuts both streams into heads)"
                )


class FeatureSelection(nn.Module):
    """One stream's feature gate: (B, F, D) -> (B, F D) = e * 2 sigmoid(MLP(context))."""

    def __init__(self, inputs: StudentInputs, hidden_units: list[int], context: list[int]) -> None:
        super().__init__()
        bad = [f for f in context if not 0 <= f < inputs.num_fields]
        if bad:
            raise ValueError(
                f"finalmlp: context fields {bad} do not exist; fields are 0..{inputs.num_fields - 1}"
                f" ({inputs.num_sparse} sparse, then {inputs.num_dense} numeric)"
            )
        d = inputs.embedding_dim
        self.context = list(context)
        if not context:
            self.ctx_bias = nn.Parameter(torch.zeros(1, d))
        self.gate = MLPBlock(
            d * max(1, len(context)), list(hidden_units), output_dim=inputs.flat_dim
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if self.context:
            ctx = e[:, self.context].flatten(1)  # (B, |context| D)
        else:
            ctx = self.ctx_bias.expand(e.shape[0], -1)  # (B, D)
        return e.flatten(1) * 2 * torch.sigmoid(self.gate(ctx))  # (B, F D)


class InteractionAggregation(nn.Module):
    """Multi-head bilinear fusion of the two streams: (B, X), (B, Y) -> logit (B,)."""

    def __init__(self, x_dim: int, y_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.w_x = nn.Linear(x_dim, 1)
        self.w_y = nn.Linear(y_dim, 1)
        xavier_init(self)
        # FuxiCTR's shape and Xavier-normal init of the stacked W_h: (H * X/H * Y/H, 1)
        self.w_xy = nn.Parameter(torch.empty(x_dim * y_dim // num_heads, 1))
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        hx, hy = x.shape[1] // h, y.shape[1] // h
        w = self.w_xy.view(h, hx, hy)  # W_h
        xy = torch.einsum("bhi,hij,bhj->b", x.view(-1, h, hx), w, y.view(-1, h, hy))
        return (self.w_x(x) + self.w_y(y)).squeeze(1) + xy  # (B,)


class FinalMLP(nn.Module):
    """One FinalMLP student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H1 + H2).

    hidden is [o_1, o_2], the two streams' outputs that the fusion reads.
    """

    def __init__(self, p: FinalMLPParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.mlp1 = MLPBlock(
            n,
            list(p.mlp1_hidden_units),
            p.mlp1_hidden_activations,
            p.mlp1_dropout,
            p.mlp1_batch_norm,
        )
        self.mlp2 = MLPBlock(
            n,
            list(p.mlp2_hidden_units),
            p.mlp2_hidden_activations,
            p.mlp2_dropout,
            p.mlp2_batch_norm,
        )
        if p.use_fs:
            self.fs1: nn.Module | None = FeatureSelection(inputs, p.fs_hidden_units, p.fs1_context)
            self.fs2: nn.Module | None = FeatureSelection(inputs, p.fs_hidden_units, p.fs2_context)
        else:
            self.fs1 = self.fs2 = None
        self.fusion = InteractionAggregation(
            p.mlp1_hidden_units[-1], p.mlp2_hidden_units[-1], p.num_heads
        )
        self.output_dim = p.mlp1_hidden_units[-1] + p.mlp2_hidden_units[-1]

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, F + Dd, D)
        if self.fs1 is not None and self.fs2 is not None:
            x1, x2 = self.fs1(e), self.fs2(e)  # (B, F D) each
        else:
            x1 = x2 = e.flatten(1)
        o1, o2 = self.mlp1(x1), self.mlp2(x2)  # (B, H1), (B, H2)
        return self.fusion(o1, o2), torch.cat([o1, o2], dim=1)
