"""EDCN (Chen et al., "Enhancing Explicit and Implicit Feature Interactions via Information
Sharing for Parallel Deep CTR Models", DLP-KDD 2021), as FuxiCTR's EDCN.

A cross tower and a deep tower of `num_cross_layers` layers each, over x_0 = the flat field
embeddings (B, N D), exchanging information after every layer:
    regulation (eq. 7): c_l = g1 o x, d_l = g2 o x, g = softmax(g_field / temperature) per field,
        repeated over D (optionally batch-normalised), from x_0 first, then from the bridge;
    cross: c_{l+1} = c_0 (w_l^T c_l) + b_l; deep: d_{l+1} = act(W_l d_l + b_l);
    bridge (eq. 4-6): f_l = c o d | c + d | relu(W [c, d]) | a_1(c) o c + a_2(d) o d;
    logit = w^T [c_L, d_L, f_L] + b.
FuxiCTR's cross layer has no residual "+ c_l" (the paper's DCN layer has one); we follow
FuxiCTR. Its attention pooling applies its first attention net to both towers (the second
one is built but unused); ours applies a_2 to the deep tower, as the paper writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from recsys_kdef.models.zoo.base import Activation, FieldEmbeddings, StudentInputs, xavier_init

BridgeType = Literal["hadamard_product", "pointwise_addition", "concatenation", "attention_pooling"]


@dataclass(kw_only=True, slots=True)
class EDCNParams:
    """FuxiCTR EDCN's hyperparameters (same names and defaults)."""

    num_cross_layers: int = 3
    hidden_activations: str = "relu"
    bridge_type: BridgeType = "hadamard_product"
    temperature: float = 1.0
    net_dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.num_cross_layers < 1 or self.temperature <= 0:
            raise ValueError(
                f"edcn: num_cross_layers={self.num_cross_layers} must be >= 1 and "
                f"temperature={self.temperature} > 0"
            )


class Regulation(nn.Module):
    """Field-wise gates of the two towers: (B, N D) -> (B, N D), (B, N D)."""

    def __init__(self, num_fields: int, dim: int, temperature: float, batch_norm: bool) -> None:
        super().__init__()
        self.dim, self.temperature = dim, temperature
        self.g1 = nn.Parameter(torch.ones(num_fields))
        self.g2 = nn.Parameter(torch.ones(num_fields))
        self.bn1 = nn.BatchNorm1d(num_fields * dim) if batch_norm else None
        self.bn2 = nn.BatchNorm1d(num_fields * dim) if batch_norm else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = []
        for g, bn in ((self.g1, self.bn1), (self.g2, self.bn2)):
            gate = (g / self.temperature).softmax(0).repeat_interleave(self.dim)  # (N D,)
            outs.append(bn(gate * x) if bn is not None else gate * x)
        return outs[0], outs[1]


class Bridge(nn.Module):
    """Combines the towers' layer outputs: (B, H), (B, H) -> (B, H)."""

    def __init__(self, dim: int, bridge_type: BridgeType) -> None:
        super().__init__()
        self.bridge_type = bridge_type
        if bridge_type == "concatenation":
            self.concat_pooling = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())
        elif bridge_type == "attention_pooling":

            def attention() -> nn.Module:
                return nn.Sequential(
                    nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.Softmax(-1)
                )

            self.attention1, self.attention2 = attention(), attention()
        xavier_init(self)

    def forward(self, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        if self.bridge_type == "hadamard_product":
            return c * d
        if self.bridge_type == "pointwise_addition":
            return c + d
        if self.bridge_type == "concatenation":
            return self.concat_pooling(torch.cat([c, d], dim=1))
        return self.attention1(c) * c + self.attention2(d) * d


class EDCN(nn.Module):
    """One EDCN student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, 3 N D) = [c_L, d_L, f_L]."""

    def __init__(self, p: EDCNParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n, layers = inputs.flat_dim, p.num_cross_layers
        self.cross_w = nn.ModuleList(nn.Linear(n, 1, bias=False) for _ in range(layers))
        self.cross_b = nn.Parameter(torch.zeros(layers, n))
        self.dense_layers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(n, n),
                Activation(p.hidden_activations),
                *([nn.Dropout(p.net_dropout)] if p.net_dropout > 0 else []),
            )
            for _ in range(layers)
        )
        self.bridges = nn.ModuleList(Bridge(n, p.bridge_type) for _ in range(layers))
        self.regulations = nn.ModuleList(
            Regulation(inputs.num_fields, inputs.embedding_dim, p.temperature, p.batch_norm)
            for _ in range(layers)
        )
        self.fc = nn.Linear(3 * n, 1)
        xavier_init(self)
        self.output_dim = 3 * n

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.fields(emb, dense).flatten(1)  # (B, N D)
        c, d = self.regulations[0](x0)
        c0 = c
        for i, (w, bridge) in enumerate(zip(self.cross_w, self.bridges)):
            c = c0 * w(c) + self.cross_b[i]  # (B, N D): FuxiCTR's CrossInteraction, no residual
            d = self.dense_layers[i](d)
            f = bridge(c, d)
            if i + 1 < len(self.bridges):
                c, d = self.regulations[i + 1](f)
        h = torch.cat([c, d, f], dim=1)  # (B, 3 N D)
        return self.fc(h).squeeze(1), h
