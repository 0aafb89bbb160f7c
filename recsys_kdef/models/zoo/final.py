"""FINAL (Zhu et al., "FINAL: Factorized Interaction Layer for CTR Prediction", SIGIR 2023), as
FuxiCTR's FinalNet (model_zoo/FinalNet/src/FinalNet.py).

Factorized interaction layer (FuxiCTR's FactorizedInteraction): [h2, h1] = W x + b, then
h = [h2, h1 * h2] (`residual_type="concat"`, W: N -> H) or h = h2 + h1 * h2 (`"sum"`, W: N -> 2H),
so the polynomial degree doubles with every layer; a FinalBlock stacks these as an MLP stacks
Linear (-> BatchNorm -> activation -> dropout). `block_type` "1B": logit = fc1(block1(x));
"2B": logit = (fc1(block1(x)) + fc2(block2(x))) / 2. With `use_feature_gating`, block 1 reads
[E, E * G(E)] (field gates G: Linear over the fields, initialised to the identity gate 1).
FuxiCTR's 2B training adds two auxiliary losses (each block against the detached mean); those
belong to the objective, not the student, and are not reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from recsys_kdef.models.zoo.base import Activation, FieldEmbeddings, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class FinalParams:
    """FuxiCTR FinalNet's hyperparameters (same names and defaults)."""

    block_type: Literal["1B", "2B"] = "2B"
    batch_norm: bool = True
    use_feature_gating: bool = False
    block1_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    block1_hidden_activations: str | None = None
    block1_dropout: float = 0.0
    block2_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    block2_hidden_activations: str | None = None
    block2_dropout: float = 0.0
    residual_type: Literal["concat", "sum"] = "concat"

    def __post_init__(self) -> None:
        blocks = ["block1_hidden_units"] + (
            ["block2_hidden_units"] if self.block_type == "2B" else []
        )
        for name in blocks:
            units = getattr(self, name)
            if not units:
                raise ValueError(f"final: {name} is empty; give at least one layer")
            if self.residual_type == "concat" and any(u % 2 for u in units):
                raise ValueError(
                    f"final: {name}={units} has an odd width; residual_type 'concat' splits each "
                    "layer's output in halves [h2, h1 * h2]: use even widths or residual_type 'sum'"
                )


class FactorizedInteraction(nn.Module):
    """One factorized interaction layer: (B, N) -> (B, H)."""

    def __init__(self, input_dim: int, output_dim: int, residual_type: str) -> None:
        super().__init__()
        self.residual_type = residual_type
        self.linear = nn.Linear(input_dim, output_dim * 2 if residual_type == "sum" else output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h2, h1 = torch.chunk(self.linear(x), 2, dim=-1)  # (B, H/2) each ("sum": (B, H) each)
        if self.residual_type == "concat":
            return torch.cat([h2, h1 * h2], dim=-1)  # (B, H)
        return h2 + h1 * h2  # (B, H)


class FinalBlock(nn.Module):
    """FuxiCTR's FinalBlock: per layer FactorizedInteraction -> [BatchNorm] -> [activation] ->
    [Dropout]: (B, N) -> (B, hidden_units[-1])."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: list[int],
        activation: str | None,
        dropout: float,
        batch_norm: bool,
        residual_type: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d_in, d_out in zip([input_dim, *hidden_units], hidden_units):
            layers.append(FactorizedInteraction(d_in, d_out, residual_type))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            if activation is not None:
                layers.append(Activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FeatureGating(nn.Module):
    """Field gates with the input kept beside them: (B, F, D) -> (B, 2F, D) = [E, E * G(E)]."""

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_fields, num_fields)
        nn.init.zeros_(self.linear.weight)  # FuxiCTR's init_weights: every gate starts at 1
        nn.init.ones_(self.linear.bias)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gates = self.linear(emb.transpose(1, 2)).transpose(1, 2)  # (B, F, D)
        return torch.cat([emb, emb * gates], dim=1)  # (B, 2F, D)


class Final(nn.Module):
    """One FINAL student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H).

    hidden is what the output layers read: block 1's last layer (B, H1) for "1B"; for "2B" the
    concatenation [block1, block2] (B, H1 + H2), whose two fc readouts the logit averages.
    """

    def __init__(self, p: FinalParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.two_blocks = p.block_type == "2B"
        shared = dict(batch_norm=p.batch_norm, residual_type=p.residual_type)
        units1, units2 = list(p.block1_hidden_units), list(p.block2_hidden_units)
        self.block1 = FinalBlock(
            2 * n if p.use_feature_gating else n,
            units1,
            p.block1_hidden_activations,
            p.block1_dropout,
            **shared,
        )
        self.fc1 = nn.Linear(units1[-1], 1)
        self.output_dim = units1[-1]
        if self.two_blocks:
            self.block2 = FinalBlock(
                n, units2, p.block2_hidden_activations, p.block2_dropout, **shared
            )
            self.fc2 = nn.Linear(units2[-1], 1)
            self.output_dim += units2[-1]
        xavier_init(self)  # FuxiCTR's reset: Xavier-normal Linear weights, zero biases ...
        if p.use_feature_gating:  # ... then the gate's own init_weights
            self.gating = FeatureGating(inputs.num_fields)
        else:
            self.gating = None

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, F + Dd, D)
        x1 = self.gating(e) if self.gating is not None else e
        h1 = self.block1(x1.flatten(1))  # (B, H1)
        if not self.two_blocks:
            return self.fc1(h1).squeeze(1), h1
        h2 = self.block2(e.flatten(1))  # (B, H2)
        logit = 0.5 * (self.fc1(h1) + self.fc2(h2)).squeeze(1)
        return logit, torch.cat([h1, h2], dim=1)  # (B,), (B, H1 + H2)
