"""xDeepFM (Lian et al., "xDeepFM: Combining Explicit and Implicit Feature Interactions for
Recommender Systems", KDD 2018), as FuxiCTR's xDeepFM.

CIN: X^k_{h,*} = sum_{i=1..N} sum_{j=1..H_{k-1}} W^{k,h}_{i,j} (X^0_{i,*} o X^{k-1}_{j,*}),
X^0 the field embeddings (B, N, D), N = F + Dd; each layer is sum-pooled over D, p^k (B, H_k),
and y = sigma(w_linear^T a + w_dnn^T x_dnn + w_cin^T [p^1, ..., p^K] + b).

Linear part: FuxiCTR's LogisticRegression keeps its own 1-dim embedding table per sparse field,
which would be a separate TorchRec table (an architecture cannot add tables); here it is a
linear layer over the flat field embeddings, as in Wide & Deep (see wide_deep.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recsys_kdef.models.zoo.base import FieldEmbeddings, MLPBlock, StudentInputs, xavier_init
from recsys_kdef.models.zoo.wide_deep import LinearAndDNN


@dataclass(kw_only=True, slots=True)
class XDeepFMParams:
    """FuxiCTR xDeepFM's hyperparameters (same names and defaults; no DNN if
    dnn_hidden_units is empty)."""

    dnn_hidden_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    dnn_activations: str = "relu"
    cin_hidden_units: list[int] = field(default_factory=lambda: [16, 16, 16])
    net_dropout: float = 0.0
    batch_norm: bool = False


class CIN(nn.Module):
    """Compressed Interaction Network, sum-pooled: (B, N, D) -> (B, sum H_k).

    Layer k is FuxiCTR's Conv1d(N * H_{k-1}, H_k, kernel_size=1) as a Linear over the channels,
    channel i * H_{k-1} + j holding X^0_i o X^{k-1}_j (H_0 = N).
    """

    def __init__(self, num_fields: int, cin_hidden_units: list[int]) -> None:
        super().__init__()
        widths = [num_fields, *cin_hidden_units]
        self.layers = nn.ModuleList(
            nn.Linear(num_fields * h_prev, h) for h_prev, h in zip(widths, widths[1:])
        )
        xavier_init(self)  # Xavier of a Linear equals Xavier of the kernel-1 Conv1d

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x0.shape
        x, pooled = x0, []
        for layer in self.layers:
            z = torch.einsum("bid,bjd->bijd", x0, x).reshape(batch, -1, dim)  # (B, N H_k-1, D)
            x = layer(z.transpose(1, 2)).transpose(1, 2)  # (B, H_k, D)
            pooled.append(x.sum(dim=2))  # (B, H_k)
        return torch.cat(pooled, dim=1)


class XDeepFM(nn.Module):
    """One xDeepFM student: (B, F, D), (B, Dd) -> logit (B,), hidden (B, H) (the DNN's last
    hidden layer; the CIN's pooled outputs if there is no DNN; the logit sums linear, CIN and
    DNN logits)."""

    def __init__(self, p: XDeepFMParams, inputs: StudentInputs) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(inputs)
        n = inputs.flat_dim
        self.cin = CIN(inputs.num_fields, list(p.cin_hidden_units))
        self.cin_fc = nn.Linear(sum(p.cin_hidden_units), 1)
        xavier_init(self.cin_fc)
        self.linear_dnn, self.linear = None, None
        if p.dnn_hidden_units:
            dnn = MLPBlock(
                n, list(p.dnn_hidden_units), p.dnn_activations, p.net_dropout, p.batch_norm
            )
            self.linear_dnn = LinearAndDNN(n, dnn, linear_bias=False)  # FuxiCTR: LR, no bias
            self.output_dim = self.linear_dnn.output_dim
        else:
            self.linear = nn.Linear(n, 1, bias=False)
            xavier_init(self.linear)
            self.output_dim = sum(p.cin_hidden_units)

    def forward(self, emb: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.fields(emb, dense)  # (B, N, D)
        pooled = self.cin(e)  # (B, sum H_k)
        logit = self.cin_fc(pooled).squeeze(1)
        if self.linear_dnn is not None:
            linear_dnn, h = self.linear_dnn(e.flatten(1))  # (B,), (B, H)
            return logit + linear_dnn, h
        return logit + self.linear(e.flatten(1)).squeeze(1), pooled
