"""DCN V2 (Wang et al., "DCN V2: Improved Deep & Cross Network", WWW 2021), as FuxiCTR's DCNv2.

Cross layer (eq. 1): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, with full W_l or, with
`use_low_rank_mixture`, a gated mixture of low-rank experts U_i tanh(C_i tanh(V_i^T x_l)) (eq. 3).
`model_structure`: crossnet_only, stacked (cross -> DNN), parallel (cross || DNN) or
stacked_parallel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs


@dataclass(kw_only=True, slots=True)
class DCNv2Params:
    """FuxiCTR DCNv2's hyperparameters (same names and defaults, except DNNs of [400, 400])."""

    model_structure: Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"] = (
        "parallel"
    )
    use_low_rank_mixture: bool = False
    low_rank: int = 32
    num_experts: int = 4
    stacked_dnn_hidden_units: list[int] = field(default_factory=lambda: [400, 400])
    parallel_dnn_hidden_units: list[int] = field(default_factory=lambda: [400, 400])
    dnn_activations: str = "relu"
    num_cross_layers: int = 3
    net_dropout: float = 0.0
    batch_norm: bool = False


class CrossNetV2(nn.Module):
    """Full-rank cross layers: (B, N) -> (B, N)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x + x0 * layer(x)  # (B, N)
        return x


class CrossNetMix(nn.Module):
    """Cross layers as a softmax-gated mixture of low-rank experts: (B, N) -> (B, N)."""

    def __init__(self, input_dim: int, num_layers: int, low_rank: int, num_experts: int) -> None:
        super().__init__()
        shape = (num_layers, num_experts)
        self.U = nn.Parameter(torch.empty(*shape, input_dim, low_rank))
        self.V = nn.Parameter(torch.empty(*shape, input_dim, low_rank))
        self.C = nn.Parameter(torch.empty(*shape, low_rank, low_rank))
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))
        self.gating = nn.Linear(input_dim, num_experts, bias=False)  # one gate per expert
        with torch.no_grad():
            for w in (self.U, self.V, self.C):  # Xavier-normal per expert matrix, as FuxiCTR
                fan_in, fan_out = w.shape[-2], w.shape[-1]
                w.normal_(0.0, (2.0 / (fan_in + fan_out)) ** 0.5)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for U, V, C, b in zip(self.U, self.V, self.C, self.bias):
            v = torch.tanh(torch.einsum("bn,enr->ber", x, V))  # (B, E, r)
            v = torch.tanh(torch.einsum("ber,eqr->beq", v, C))  # (B, E, r): C_e v
            experts = x0.unsqueeze(1) * (torch.einsum("ber,enr->ben", v, U) + b)  # (B, E, N)
            gate = torch.softmax(self.gating(x), dim=1)  # (B, E)
            x = x + torch.einsum("ben,be->bn", experts, gate)
        return x


class DCNv2(nn.Module):
    """One DCN V2 student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the fc's input)."""

    def __init__(self, p: DCNv2Params, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.structure = p.model_structure
        if p.use_low_rank_mixture:
            self.crossnet: nn.Module = CrossNetMix(n, p.num_cross_layers, p.low_rank, p.num_experts)
        else:
            self.crossnet = CrossNetV2(n, p.num_cross_layers)
        dnn = dict(activation=p.dnn_activations, dropout=p.net_dropout, batch_norm=p.batch_norm)
        final_dim = n
        if self.structure in ("stacked", "stacked_parallel"):
            self.stacked_dnn = MLPBlock(n, list(p.stacked_dnn_hidden_units), **dnn)
            final_dim = self.stacked_dnn.output_dim
        if self.structure in ("parallel", "stacked_parallel"):
            self.parallel_dnn = MLPBlock(n, list(p.parallel_dnn_hidden_units), **dnn)
            final_dim += self.parallel_dnn.output_dim
        self.fc = nn.Linear(final_dim, 1)
        self.output_dim = final_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.fields(emb, dense).flatten(1)  # (B, (F + Dd) * D)
        cross = self.crossnet(x0)
        if self.structure == "crossnet_only":
            h = cross
        elif self.structure == "stacked":
            h = self.stacked_dnn(cross)
        elif self.structure == "parallel":
            h = torch.cat([cross, self.parallel_dnn(x0)], dim=1)
        else:
            h = torch.cat([self.stacked_dnn(cross), self.parallel_dnn(x0)], dim=1)
        return self.fc(h).squeeze(1), h
