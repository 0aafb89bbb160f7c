"""AutoInt+ (Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive
Neural Networks", CIKM 2019), as FuxiCTR's AutoInt (model_zoo/AutoInt/src/AutoInt.py).

Interacting layer (eqs. 5-8), per head h over the fields' vectors e_m:
    a_mk = softmax_k(<W_q e_m, W_k e_k> [/ sqrt(d_h) with use_scale])
    e'_m = ReLU(LN?([sum_k a_mk W_v e_k]_h concatenated + W_res e_m))   # residual if use_residual
logit = fc(flatten(e')) + DNN(flatten(e)) (the "+": `dnn_hidden_units`, none when empty).
FuxiCTR's `use_wide` (a logistic regression on one-dimensional sparse tables) is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init


@dataclass(kw_only=True, slots=True)
class AutoIntParams:
    """FuxiCTR AutoInt's hyperparameters (same names and defaults; no `use_wide`)."""

    dnn_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    dnn_activations: str = "relu"
    attention_layers: int = 2
    num_heads: int = 1
    attention_dim: int = 8
    net_dropout: float = 0.0
    batch_norm: bool = False
    layer_norm: bool = False
    use_scale: bool = False
    use_residual: bool = True

    def __post_init__(self) -> None:
        if self.attention_dim % self.num_heads:
            raise ValueError(
                f"autoint: attention_dim {self.attention_dim} is not divisible by num_heads "
                f"{self.num_heads}"
            )


class MultiHeadSelfAttention(nn.Module):
    """One interacting layer over the fields: (B, F, D_in) -> (B, F, A)."""

    def __init__(self, input_dim: int, p: AutoIntParams) -> None:
        super().__init__()
        a = p.attention_dim
        self.num_heads = p.num_heads
        self.scale = (a // p.num_heads) ** 0.5 if p.use_scale else 1.0
        self.use_residual = p.use_residual
        self.W_q = nn.Linear(input_dim, a, bias=False)
        self.W_k = nn.Linear(input_dim, a, bias=False)
        self.W_v = nn.Linear(input_dim, a, bias=False)
        self.W_res = (
            nn.Linear(input_dim, a, bias=False) if p.use_residual and input_dim != a else None
        )
        self.dropout = nn.Dropout(p.net_dropout) if p.net_dropout > 0 else nn.Identity()
        self.layer_norm = nn.LayerNorm(a) if p.layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, f, self.num_heads, -1).transpose(1, 2)  # (B, heads, F, A/heads)

        q, k, v = heads(self.W_q(x)), heads(self.W_k(x)), heads(self.W_v(x))
        attention = torch.softmax(q @ k.transpose(-1, -2) / self.scale, dim=-1)  # (B, h, F, F)
        out = (self.dropout(attention) @ v).transpose(1, 2).reshape(b, f, -1)  # (B, F, A)
        if self.use_residual:
            out = out + (self.W_res(x) if self.W_res is not None else x)
        return torch.relu(self.layer_norm(out))


class AutoInt(nn.Module):
    """One AutoInt+ student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H).

    hidden is [flatten(e'), DNN's last hidden layer] (B, F A + H_dnn): the logit is the sum of
    the two linear readouts fc and the DNN's output layer, one readout of the concatenation.
    """

    def __init__(self, p: AutoIntParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        dims = [inputs.embedding_dim] + [p.attention_dim] * p.attention_layers
        self.attention = nn.Sequential(*(MultiHeadSelfAttention(d, p) for d in dims[:-1]))
        self.fc = nn.Linear(inputs.num_fields * dims[-1], 1)
        self.output_dim = inputs.num_fields * dims[-1]
        if p.dnn_hidden_units:
            self.dnn: nn.Module | None = MLPBlock(
                inputs.flat_dim,
                list(p.dnn_hidden_units),
                p.dnn_activations,
                p.net_dropout,
                p.batch_norm,
            )
            self.dnn_out: nn.Module | None = nn.Linear(p.dnn_hidden_units[-1], 1)
            self.output_dim += p.dnn_hidden_units[-1]
        else:
            self.dnn = self.dnn_out = None
        xavier_init(self)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, F + Dd, D)
        att = self.attention(e).flatten(1)  # (B, F A)
        logit = self.fc(att).squeeze(1)
        if self.dnn is None or self.dnn_out is None:
            return logit, att
        h = self.dnn(e.flatten(1))  # (B, H_dnn)
        return logit + self.dnn_out(h).squeeze(1), torch.cat([att, h], dim=1)
