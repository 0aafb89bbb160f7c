"""MaskNet (Wang et al., "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking
Models by Instance-Guided Mask", DLP-KDD 2021), as FuxiCTR's MaskNet.

Instance-guided mask (eq. 1): V_mask = W_2 relu(W_1 V_emb + b_1) + b_2, from the flat field
embeddings V_emb (B, N D). MaskBlock (eq. 5): V_out = act(LN(W_i (V_mask o V_hidden))), W_i
without bias. The first block's V_hidden is V_emb with each field layer-normalised (LN_EMB,
eq. 4; `emb_layernorm`). SerialMaskNet: blocks of widths `dnn_hidden_units` in a row, each
masked by V_emb, then Linear(., 1); ParallelMaskNet: `parallel_num_blocks` blocks of width
`parallel_block_dim` side by side over V_hidden, concatenated, then an MLP of
`dnn_hidden_units` and Linear(., 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from recsys_kdef.models.zoo.base import Activation, FieldEmbeddings, StudentInputs, xavier_init
from recsys_kdef.models.zoo.head import MLPLogit


@dataclass(kw_only=True, slots=True)
class MaskNetParams:
    """FuxiCTR MaskNet's hyperparameters (same names and defaults)."""

    dnn_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    dnn_hidden_activations: str = "relu"
    model_type: Literal["SerialMaskNet", "ParallelMaskNet"] = "SerialMaskNet"
    parallel_num_blocks: int = 1
    parallel_block_dim: int = 64
    reduction_ratio: float = 1.0
    net_dropout: float = 0.0
    emb_layernorm: bool = True
    net_layernorm: bool = True

    def __post_init__(self) -> None:
        if self.model_type == "SerialMaskNet" and not self.dnn_hidden_units:
            raise ValueError("masknet: SerialMaskNet needs dnn_hidden_units (its mask blocks)")
        if self.parallel_num_blocks < 1 or self.reduction_ratio <= 0:
            raise ValueError(
                f"masknet: parallel_num_blocks={self.parallel_num_blocks} must be >= 1 and "
                f"reduction_ratio={self.reduction_ratio} > 0"
            )


class MaskBlock(nn.Module):
    """(B, N) mask input, (B, H_in) hidden -> (B, H_out) = act(LN(W (V_mask o V_hidden)))."""

    def __init__(self, mask_dim: int, hidden_dim: int, output_dim: int, p: MaskNetParams) -> None:
        super().__init__()
        aggregation = int(hidden_dim * p.reduction_ratio)
        self.mask_layer = nn.Sequential(
            nn.Linear(mask_dim, aggregation), nn.ReLU(), nn.Linear(aggregation, hidden_dim)
        )
        layers: list[nn.Module] = [nn.Linear(hidden_dim, output_dim, bias=False)]
        if p.net_layernorm:
            layers.append(nn.LayerNorm(output_dim))
        layers.append(Activation(p.dnn_hidden_activations))
        if p.net_dropout > 0:
            layers.append(nn.Dropout(p.net_dropout))
        self.hidden_layer = nn.Sequential(*layers)
        xavier_init(self)

    def forward(self, v_emb: torch.Tensor, v_hidden: torch.Tensor) -> torch.Tensor:
        return self.hidden_layer(self.mask_layer(v_emb) * v_hidden)


class FieldLayerNorm(nn.Module):
    """A LayerNorm of its own per field (FuxiCTR's LN_EMB): (B, N, D) -> (B, N, D)."""

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_fields, dim))
        self.bias = nn.Parameter(torch.zeros(num_fields, dim))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        normed = nn.functional.layer_norm(e, e.shape[-1:])  # per field, over D; eps 1e-5
        return normed * self.weight + self.bias


class MaskNet(nn.Module):
    """One MaskNet student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the last mask
    block's output (serial) or the MLP's last hidden layer (parallel))."""

    def __init__(self, p: MaskNetParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.emb_norm = (
            FieldLayerNorm(inputs.num_fields, inputs.embedding_dim) if p.emb_layernorm else None
        )
        self.serial = p.model_type == "SerialMaskNet"
        if self.serial:
            widths = [n, *p.dnn_hidden_units]
            self.blocks = nn.ModuleList(
                MaskBlock(n, h_in, h_out, p) for h_in, h_out in zip(widths, widths[1:])
            )
            self.fc = nn.Linear(widths[-1], 1)
            xavier_init(self.fc)
            self.output_dim = widths[-1]
        else:
            self.blocks = nn.ModuleList(
                MaskBlock(n, n, p.parallel_block_dim, p) for _ in range(p.parallel_num_blocks)
            )
            self.dnn = MLPLogit(
                p.parallel_block_dim * p.parallel_num_blocks,
                list(p.dnn_hidden_units),
                p.dnn_hidden_activations,
                p.net_dropout,
            )
            self.output_dim = self.dnn.output_dim

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, N, D)
        v_emb = e.flatten(1)  # (B, N D): what every mask reads
        v_hidden = self.emb_norm(e).flatten(1) if self.emb_norm is not None else v_emb
        if self.serial:
            for block in self.blocks:
                v_hidden = block(v_emb, v_hidden)  # (B, H_k)
            return self.fc(v_hidden).squeeze(1), v_hidden
        blocks = torch.cat([block(v_emb, v_hidden) for block in self.blocks], dim=1)
        return self.dnn(blocks)  # (B,), (B, H)
